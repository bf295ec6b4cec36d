"""What the node keeps per caller's event loop: its calls in flight and their deadlines.

Two things each call would otherwise pay for in handles on the caller's loop:

- *Corking*: a packet a caller's loop sends is corked until the end of that loop's
  iteration, so that the calls one iteration makes share one write (``connection.py``); the
  cork costs a callback per iteration. A call made while no other call from its loop is in
  flight has nothing to share a write with: it is written at once and no callback is
  scheduled (one handle and one turn of the loop fewer per sequential call).
- *Deadlines*: a timer per call (``call_later``, then ``cancel``) costs two handles, and
  the cancelled ones stay in the loop's heap until they come due. Here a call's deadline is
  a dict entry, removed when the call completes; one timer per loop is set at the earliest
  deadline it knows of, expires what is due when it fires and sets itself again.

A loop's state is touched only from that loop's thread.
"""

from __future__ import annotations

import asyncio
import math
import time

from pyrlang_zarr.erldist.handoff import Pending, expire

# asyncio runs a timer whose time is before now plus the clock's resolution
_RESOLUTION = time.get_clock_info("monotonic").resolution


class CallerLoop:
    """One caller loop's calls: ``inflight`` counts those sent and not yet completed."""

    __slots__ = ("_at", "_due", "_timer", "inflight", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.inflight = 0
        self._due: dict[Pending, tuple[float, float]] = {}  # call: (deadline, its limit)
        self._timer: asyncio.TimerHandle | None = None
        self._at = math.inf  # when the timer fires

    def add_deadline(self, call: Pending, limit: float) -> None:
        """``call`` fails with :class:`RpcTimeout` in ``limit`` seconds unless discarded."""
        at = self.loop.time() + limit
        self._due[call] = (at, limit)
        if at < self._at:
            if self._timer is not None:
                self._timer.cancel()
            self._at = at
            self._timer = self.loop.call_at(at, self._fire)

    def discard_deadline(self, call: Pending) -> None:
        self._due.pop(call, None)

    def _fire(self) -> None:
        self._timer, self._at = None, math.inf
        due = self._due
        if not due:
            return
        now = self.loop.time() + _RESOLUTION
        for call in [call for call, (at, _) in due.items() if at < now]:
            _, limit = due.pop(call)
            expire(call, limit)
        if due:
            self._at = min(at for at, _ in due.values())
            self._timer = self.loop.call_at(self._at, self._fire)


class CallerLoops:
    """A :class:`CallerLoop` per event loop; closed loops are forgotten as new ones come."""

    def __init__(self) -> None:
        self._by_loop: dict[asyncio.AbstractEventLoop, CallerLoop] = {}

    def waiting(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether ``loop`` has calls in flight (from any thread)."""
        state = self._by_loop.get(loop)
        return state is not None and state.inflight > 0

    def of(self, loop: asyncio.AbstractEventLoop) -> CallerLoop:
        state = self._by_loop.get(loop)
        if state is None:
            # list() copies in one step: other threads may add their loops meanwhile
            for other in list(self._by_loop):
                if other.is_closed():
                    self._by_loop.pop(other, None)
            state = self._by_loop[loop] = CallerLoop(loop)
        return state
