"""An event loop on its own thread, where a node's connections are made and looked after.

Callers run on any loop and any thread (zarr's sync API runs coroutines on a loop of its own
in another thread; pytest-asyncio and applications run theirs). Transports and futures
belong to one loop, so the node connects, handshakes, ticks and handles what the peers send
its processes here; callers hand work over thread-safely. Calls themselves are written and
their replies read on the caller's loop (``connection.py``, ``readers.py``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class IoThread:
    """A daemon thread running ``loop`` until :meth:`stop`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.running = False  # True from before the loop runs to the moment it stops
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._started.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        self.running = True
        try:
            self.loop.run_forever()
        finally:
            self.running = False
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            if tasks:
                self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            # the resolver's worker thread (getaddrinfo) ends with us, not some time later
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    @property
    def alive(self) -> bool:
        """Whether the loop runs (a plain attribute: read on every call)."""
        return self.running

    def in_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on this thread's loop and await it from the caller's loop."""
        if self.in_thread():
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def stop(self, timeout: float = 5.0) -> None:
        if self.loop.is_closed():
            return
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:  # closed meanwhile
            return
        if not self.in_thread():
            self._thread.join(timeout)
