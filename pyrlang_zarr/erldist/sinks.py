"""A call's reply received where its caller wants the bytes, as they arrive.

A caller that knows the shape of a big reply (a Mnesia read of array chunks, say) may give
its call a :class:`ReplySink`. When a packet that is the reply to that call begins, the sink
is offered its first bytes; the :class:`TakenReply` it returns receives the rest of the
packet wherever it says (chunk data straight into the array being read) and parses the
result itself. A sink declines what it does not recognise: that reply is read as usual.
"""

from __future__ import annotations

from typing import Any, Protocol

from pyrlang_zarr.erldist.framing import PacketTaker

__all__ = ["ReplySink", "TakenReply", "Unreadable"]


class TakenReply(PacketTaker, Protocol):
    """Receives one reply packet and parses its result."""

    tag: int  # the call's

    def result(self) -> Any:
        """The reply's result (its second element), once the packet is whole; raises
        :class:`DecodeError` if the bytes were not what the sink expected."""
        ...


class ReplySink(Protocol):
    """Offered the reply to the call it was given to (on the thread that reads it)."""

    def taker(self, tag: int, start: int, first: memoryview, size: int) -> TakenReply | None:
        """A taker for the reply packet of ``size`` bytes whose result term begins at byte
        ``start``, given its first bytes (a view valid during this call), or ``None``:
        read it as usual."""
        ...


class Unreadable:
    """The result of a taken reply that did not parse (or whose taker failed): its call
    fails with :class:`DecodeError` saying why."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error
