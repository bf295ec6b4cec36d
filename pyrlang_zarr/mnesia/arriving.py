"""A Mnesia read's reply parsed as it arrives, its records' data received in place.

``MnesiaClient.read_many(..., placement=...)`` gives its call a :class:`ReadSink`. When the
reply ``{atomic, [Found, ...]}`` begins (each ``Found`` being what ``mnesia:read/1`` returns,
``[]`` or ``[{Tab, Key, Data, ...}]``), the sink takes its packet and asks the placement for
a :class:`Landing` of its own: each record's ``Data`` is received straight into the buffer
the landing gives for it (the array being read, say), or into bytes of its own where it
gives none. Data received in place reads as that landing in the result; everything else is
as the general decoder gives it. Each reply lands in its own landing, so a late reply to an
attempt that timed out never writes where the reply finally used went. A reply of another
shape (an abort, say) is declined at its first bytes and read as usual; one that goes wrong
after that fails its call with :class:`~pyrlang_zarr.errors.DecodeError`.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from pyrlang_zarr.errors import DecodeError
from pyrlang_zarr.term import atoms, decode_element, encode_atom
from pyrlang_zarr.term.tags import BINARY_EXT, LIST_EXT, NIL_EXT, SMALL_TUPLE_EXT

__all__ = ["Landing", "Placement", "ReadReply", "ReadSink"]

#: Bytes kept for what lies between two records' data; it grows for a long key.
SCRATCH: Final = 64 * 1024
#: The most a record's other fields may take (its table, key and any after its data).
MAX_FIELDS: Final = 1 << 20


class Landing(Protocol):
    """Where one reply's records' data go, by their index in the read (called on the
    thread reading the reply)."""

    def place(self, index: int, nbytes: int) -> memoryview | None:
        """A writable buffer of exactly ``nbytes`` for the data of the record read at
        ``index``, or ``None``: give it bytes of its own."""
        ...


class Placement(Protocol):
    """Makes a :class:`Landing` for each reply that starts arriving."""

    def begin(self) -> Landing: ...


class ReadSink:
    """Given to the read's call (:meth:`~pyrlang_zarr.erldist.Node.rpc`'s ``sink``)."""

    def __init__(self, count: int, placement: Placement) -> None:
        self._count = count
        self._placement = placement
        self._head = (
            bytes((SMALL_TUPLE_EXT, 2))
            + encode_atom(atoms.ATOMIC)
            + bytes((LIST_EXT,))
            + count.to_bytes(4, "big")
        )

    def taker(self, tag: int, start: int, first: memoryview, size: int) -> ReadReply | None:
        head = self._head
        end = start + len(head)
        if len(first) < end or first[start:end] != head:
            return None  # not {atomic, [...]} of our count (or too little yet): as usual
        return ReadReply(tag, end, size, self._count, self._placement.begin())


_ITEM, _RECORD, _FIELDS, _ITEM_TAIL, _LIST_TAIL, _DONE = range(6)


class ReadReply:
    """Takes one reply packet: a small state machine fed bytes (no socket). Bytes between
    records' data go to a scratch buffer and are parsed there; a record's data goes to its
    place (or its own bytes) directly."""

    def __init__(self, tag: int, skip: int, size: int, count: int, landing: Landing) -> None:
        self.tag = tag
        self._skip = skip  # bytes before the first item (the reply's head): dropped
        self._count = count
        self._landing = landing
        self._state = _ITEM if count else _LIST_TAIL
        self._items: list[Any] = []
        self._buf = bytearray(min(SCRATCH, max(size, 1)))
        self._lo = self._hi = 0  # bytes received into _buf, not parsed yet
        self._records_left = 0  # of the item being parsed
        self._records: list[Any] = []  # its records so far
        self._fields: list[Any] = []  # the record being parsed
        self._arity = 0
        self._dest: memoryview | None = None  # receiving a record's data, if not None
        self._own: bytearray | None = None  # the data's own bytes, if not placed
        self._got = 0
        self._unreceived = size  # bytes of the packet still to come
        self._error: str | None = None

    # -- PacketTaker ----------------------------------------------------------------------
    def get_buffer(self) -> memoryview:
        if self._dest is not None:
            return self._dest[self._got :]
        if self._lo == self._hi:
            self._lo = self._hi = 0
        elif self._hi == len(self._buf):  # never resized in place: a view may still exist
            kept = self._hi - self._lo
            size = len(self._buf) if self._lo else 2 * len(self._buf)
            if size > MAX_FIELDS:
                self._fail(f"a record's fields take more than {MAX_FIELDS} bytes")
                self._lo = self._hi = 0
            else:
                grown = bytearray(size)
                grown[:kept] = self._buf[self._lo : self._hi]
                self._buf, self._lo, self._hi = grown, 0, kept
        return memoryview(self._buf)[self._hi :]

    def buffer_updated(self, nbytes: int) -> None:
        self._unreceived -= nbytes
        if self._dest is not None:
            self._got += nbytes
            if self._got == len(self._dest):
                self._data_in()
            return
        self._hi += nbytes
        self._parse()

    def result(self) -> Any:
        if self._error is not None:
            raise DecodeError(f"the read's reply is not what it should be: {self._error}")
        if self._state != _DONE or self._dest is not None:
            raise DecodeError("the read's reply ended before its term did")
        return (atoms.ATOMIC, self._items)

    # -- parsing --------------------------------------------------------------------------
    def _fail(self, why: str) -> None:
        if self._error is None:
            self._error = why
        self._dest = None

    def _parse(self) -> None:
        """Parse what has arrived, as far as it goes."""
        buf = self._buf
        while self._error is None:
            lo, hi = self._lo, self._hi
            if self._skip:
                n = min(self._skip, hi - lo)
                self._lo += n
                self._skip -= n
                if self._skip:
                    return
                continue
            if lo == hi:
                return
            state = self._state
            if state == _RECORD:
                if not self._record():
                    return
            elif state == _FIELDS:
                if not self._fields_after():
                    return
            elif state == _ITEM:
                if buf[lo] == NIL_EXT:  # not found
                    self._items.append([])
                    self._lo += 1
                    self._next_item()
                elif buf[lo] == LIST_EXT:
                    if hi - lo < 5:
                        return
                    self._records_left = int.from_bytes(buf[lo + 1 : lo + 5], "big")
                    self._records = []
                    self._lo += 5
                    self._state = _RECORD
                    if not self._records_left:
                        self._fail(f"item {len(self._items)} is an empty list written as one")
                else:
                    self._fail(f"item {len(self._items)} is not a list")
            elif state == _ITEM_TAIL:
                if buf[lo] != NIL_EXT:
                    self._fail(f"item {len(self._items)} is an improper list")
                    break
                self._lo += 1
                self._items.append(self._records)
                self._next_item()
            elif state == _LIST_TAIL:
                if buf[lo] != NIL_EXT:
                    self._fail(f"the list of {self._count} items does not end after them")
                    break
                self._lo += 1
                self._state = _DONE
            else:
                self._fail("bytes after the term")
        self._lo = self._hi = 0  # failed: the rest of the packet is dropped as it arrives

    def _next_item(self) -> None:
        self._state = _ITEM if len(self._items) < self._count else _LIST_TAIL

    def _record(self) -> bool:
        """A record's tag, table, key and data's length; then its data, as far as it is in.
        False: wait for more bytes."""
        lo, hi = self._lo, self._hi
        with memoryview(self._buf) as whole:
            view = whole[:hi]
            if hi - lo < 2:
                return False
            if view[lo] != SMALL_TUPLE_EXT or view[lo + 1] < 3:
                self._fail(f"item {len(self._items)} holds something else than a record")
                return False
            arity = view[lo + 1]
            try:
                table, pos = decode_element(view, lo + 2)
                key, pos = decode_element(view, pos)
            except DecodeError:
                return False  # cut short; anything worse shows when the packet ends
            if hi - pos < 5:
                return False
            if view[pos] != BINARY_EXT:
                self._fail(f"the data of item {len(self._items)} is not a binary")
                return False
            nbytes = int.from_bytes(view[pos + 1 : pos + 5], "big")
            pos += 5
            if nbytes > hi - pos + self._unreceived:  # memory follows what was sent
                self._fail(f"the data of item {len(self._items)} is longer than the packet")
                return False
            dest = None
            if not self._records:  # the item's first record is the one a read returns
                dest = self._landing.place(len(self._items), nbytes)
            if dest is None or len(dest) != nbytes:
                self._own = bytearray(nbytes)
                dest = memoryview(self._own)
            else:
                self._own = None
            have = min(nbytes, hi - pos)
            dest[:have] = view[pos : pos + have]
        self._lo = pos + have
        self._fields = [table, key]
        self._arity = arity
        self._state = _FIELDS
        self._got = have
        if have < nbytes:
            self._dest = dest
        else:
            self._data_in()
        return True

    def _data_in(self) -> None:
        """The record's data is whole."""
        own = self._own
        self._fields.append(self._landing if own is None else memoryview(own).toreadonly())
        self._dest = None
        self._own = None

    def _fields_after(self) -> bool:
        """The record's fields after its data; then the next record or the item's end.
        False: wait for more bytes."""
        fields = self._fields
        with memoryview(self._buf) as whole:
            view = whole[: self._hi]
            try:
                while len(fields) < self._arity:
                    value, self._lo = decode_element(view, self._lo)
                    fields.append(value)
            except DecodeError:
                return False
        self._records.append(tuple(fields))
        self._fields = []
        self._records_left -= 1
        self._state = _RECORD if self._records_left else _ITEM_TAIL
        return True
