"""A process mailbox that any thread may put into and any event loop may receive from."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any


def resolve(
    fut: asyncio.Future[Any], value: Any = None, error: BaseException | None = None
) -> None:
    """Complete ``fut`` unless it was cancelled meanwhile. Runs on ``fut``'s loop."""
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(value)


class Mailbox:
    """FIFO of messages; receivers wait on futures of their own loops."""

    def __init__(self) -> None:
        self._messages: deque[Any] = deque()
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = deque()
        self._lock = threading.Lock()

    def put(self, message: Any, *, front: bool = False) -> None:
        """Deliver ``message`` to the first waiting receiver, else queue it."""
        with self._lock:
            while self._waiters:
                loop, fut = self._waiters.popleft()
                if fut.done():
                    continue
                try:
                    loop.call_soon_threadsafe(self._hand_over, fut, message)
                except RuntimeError:  # that receiver's loop is closed
                    continue
                return
            if front:
                self._messages.appendleft(message)
            else:
                self._messages.append(message)

    def _hand_over(self, fut: asyncio.Future[Any], message: Any) -> None:
        if fut.done():  # the receiver gave up meanwhile: the message stays in the box
            self.put(message, front=True)
        else:
            fut.set_result(message)

    async def get(self, timeout: float | None = None) -> Any:
        """The oldest message; ``TimeoutError`` if none arrives within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._messages:
                return self._messages.popleft()
            fut: asyncio.Future[Any] = loop.create_future()
            self._waiters.append((loop, fut))
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except BaseException:
            with self._lock:
                try:
                    self._waiters.remove((loop, fut))
                    handed = False
                except ValueError:
                    handed = fut.done() and not fut.cancelled() and fut.exception() is None
            if handed:  # a message reached us as we gave up: keep it for the next receiver
                self.put(fut.result(), front=True)
            raise
