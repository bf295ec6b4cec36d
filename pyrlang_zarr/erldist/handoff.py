"""The hand-off between callers' event loops and the node's IO loop, batched both ways.

Callers run on any loop in any thread; sockets live on the node's IO loop. Waking another
thread's loop costs a syscall and a GIL round trip, so work handed to the IO loop in a burst
shares one wake-up (:meth:`Handoff.to_io`), and results going back are grouped per caller
loop and sent once per IO loop iteration (:meth:`Handoff.complete`): 1000 concurrent calls
cost a few wake-ups, not 2000.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyrlang_zarr.erldist.io_thread import IoThread
from pyrlang_zarr.erldist.mailbox import resolve
from pyrlang_zarr.erldist.sinks import ReplySink
from pyrlang_zarr.errors import NodeDown, RpcTimeout

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class Pending:
    """A send or call in flight: its future and the loop that future belongs to."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    peer: str = ""
    kind: str = "send"  # "send", or "M:F/A" of a remote call
    tag: int | None = None  # a remote call's tag, once sent (calls.py)
    copy: bool = True  # False: large binaries of the reply may stay memoryviews
    sink: ReplySink | None = None  # takes the reply as it arrives (``sinks.py``)

    @property
    def what(self) -> str:
        return self.kind if self.kind == "send" else f"{self.kind} on {self.peer}"


def _resolve_all(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    """On a caller's loop: complete the futures of a batch of results."""
    for fut, value, error in results:
        resolve(fut, value, error)


def expire(call: Pending, limit: float) -> None:
    """On the caller's loop, when a call's time is up."""
    resolve(
        call.future, None, RpcTimeout(f"no reply to {call.what} within {limit} s (outcome unknown)")
    )


class Handoff:
    """Batches work into the IO loop and results out of it.

    ``after_batch`` runs on the IO loop after each batch of handed-over work (the node
    flushes its corked connections there: the batch's packets leave now, not a turn later).
    """

    def __init__(self, after_batch: Callable[[], None], label: Callable[[], str | None]) -> None:
        self._after_batch = after_batch
        self._label = label  # the node's name, for the error once it is closed
        self._inbox: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._inbox_scheduled = False
        self._outbox: dict[
            asyncio.AbstractEventLoop,
            list[tuple[asyncio.Future[Any], Any, BaseException | None]],
        ] = {}

    # -- into the IO loop -----------------------------------------------------------------
    def to_io(self, io: IoThread, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the IO loop, from another thread; calls made in a burst share
        one wake-up of the IO thread."""
        self._inbox.append((fn, args))
        if not self._inbox_scheduled:
            self._inbox_scheduled = True
            try:
                io.loop.call_soon_threadsafe(self._drain_inbox)
            except RuntimeError:
                self._inbox_scheduled = False
                raise NodeDown(f"node {self._label()} is closed") from None

    def _drain_inbox(self) -> None:
        self._inbox_scheduled = False
        inbox = self._inbox
        while inbox:
            fn, args = inbox.popleft()
            try:
                fn(*args)
            except Exception:  # each handed-over function fails its own call
                log.exception("error handing a call to the node's loop")
        self._after_batch()

    # -- out of the IO loop ---------------------------------------------------------------
    def succeed(self, call: Pending, value: Any, *, receiving: bool = False) -> None:
        self.complete(call, value, None, receiving=receiving)

    def fail(self, call: Pending, error: BaseException, *, receiving: bool = False) -> None:
        self.complete(call, None, error, receiving=receiving)

    def complete(
        self, call: Pending, value: Any, error: BaseException | None, *, receiving: bool = False
    ) -> None:
        """On the IO loop. Results for other loops are sent once per loop iteration, all of
        a loop's together: one wake-up of that loop however many results are ready.
        ``receiving``: called while a received batch is handled, whose end flushes (no
        extra turn of the IO loop, which would hold the GIL as the caller wakes)."""
        io_loop = asyncio.get_running_loop()
        if call.loop is io_loop:
            resolve(call.future, value, error)
            return
        box = self._outbox.get(call.loop)
        if box is None:
            if not self._outbox and not receiving:
                io_loop.call_soon(self.flush)
            box = self._outbox[call.loop] = []
        box.append((call.future, value, error))

    def flush(self) -> None:
        """Send the results gathered so far to their loops (also after each received batch,
        so replies do not wait for the end of the loop iteration)."""
        outbox, self._outbox = self._outbox, {}
        for loop, results in outbox.items():
            try:
                loop.call_soon_threadsafe(_resolve_all, results)
            except RuntimeError:  # that caller's loop is closed: nobody waits any more
                pass
