"""What the node keeps per caller's event loop: how many of its calls are in flight.

A packet a caller's loop sends is corked until the end of that loop's iteration, so that the
calls one iteration makes share one write (``connection.py``); the cork costs a callback on
the loop per iteration. A call made while no other call from its loop is in flight has
nothing to share a write with: it is written at once and no callback is scheduled (one
handle and one turn of the loop fewer per sequential call). A loop's state is touched only
from that loop's thread.
"""

from __future__ import annotations

import asyncio


class CallerLoop:
    """One caller loop's calls: ``inflight`` counts those sent and not yet completed."""

    __slots__ = ("inflight", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.inflight = 0


class CallerLoops:
    """A :class:`CallerLoop` per event loop; closed loops are forgotten as new ones come."""

    def __init__(self) -> None:
        self._by_loop: dict[asyncio.AbstractEventLoop, CallerLoop] = {}

    def of(self, loop: asyncio.AbstractEventLoop) -> CallerLoop:
        state = self._by_loop.get(loop)
        if state is None:
            for closed in [other for other in self._by_loop if other.is_closed()]:
                del self._by_loop[closed]
            state = self._by_loop[loop] = CallerLoop(loop)
        return state
