"""Length-prefixed packet reader for a ``BufferedProtocol``, fed bytes, no socket.

Small packets are cut out of one reusable receive buffer. A packet too large for it gets a
buffer of its own, into which the transport receives directly: a multi-MB chunk crosses from
the kernel into the bytearray that the term decoder reads, once. That buffer is not sized from
the header alone (a peer may announce 2 GiB and send nothing more): it starts at
:data:`BIG_FIRST` bytes at most and doubles, in place where the allocator can, as the bytes
arrive, up to the announced length. Memory follows what the peer sent, not what it claimed.

A big packet's buffer is used again for the next big packet once nothing refers to it any
more (every view of the last one released), up to :data:`SPARE_LIMIT` bytes: a client
reading 8 MiB slices receives each into pages the kernel has already given us, instead of
faulting in and zeroing fresh ones every time.

A big packet may also be *taken* instead (:attr:`PacketReader.offer`): a
:class:`PacketTaker` then says where each of its bytes goes as they arrive (a reply's chunk
data straight into the array it is read for), and :meth:`PacketReader.taken_packet` returns
the taker once the packet's last byte is in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from pyrlang_zarr.errors import ProtocolError

DEFAULT_BUFFER = 256 * 1024
#: The largest packet a :class:`PacketReader` accepts unless told otherwise (read when the
#: reader is made: set ``pyrlang_zarr.erldist.framing.MAX_PACKET`` before connecting).
MAX_PACKET = 1 << 30
#: What a big packet's own buffer starts at (or the whole packet, if smaller).
BIG_FIRST = 1 << 20
#: The largest big-packet buffer kept for the next big packet.
SPARE_LIMIT = 64 << 20
# Read, never written: what a growing buffer is extended with (a temporary bytes object per
# growth would cost its allocation and page faults every time; these pages stay the zero page).
_ZEROS = memoryview(bytes(4 << 20))


class PacketTaker(Protocol):
    """Receives one big packet's bytes, in order, wherever it wants them."""

    def get_buffer(self) -> memoryview:
        """Where the packet's next bytes go (not empty; the reader cuts it at the packet's
        end)."""
        ...

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` were written at the start of the last buffer handed out."""
        ...


class PacketReader:
    """Cuts a byte stream into packets with a ``header_size``-byte big-endian length.

    ``header_size`` may change between packets (2 during the handshake, 4 after it). A packet
    returned as a memoryview into the shared buffer is valid until the next ``get_buffer``.
    """

    def __init__(
        self,
        header_size: int = 2,
        *,
        buffer_size: int = DEFAULT_BUFFER,
        max_packet: int | None = None,
    ) -> None:
        self.header_size = header_size
        self.max_packet = MAX_PACKET if max_packet is None else max_packet
        self._buf = bytearray(buffer_size)
        self._start = 0
        self._end = 0
        self._big: bytearray | None = None  # the big packet being received, as far as it is
        self._big_filled = 0
        self._big_size = 0  # its announced length
        # a big packet received whole, not yet taken (all of its buffer, or the start of it)
        self._ready: bytearray | memoryview | None = None
        #: whether the packet :meth:`next_packet` returned last has a buffer of its own
        #: (its binaries may stay views of it), rather than being a view of the shared one
        self.own_buffer = False
        self._spare: bytearray | None = None  # the last big packet's buffer
        #: asked when a big packet begins, with its first bytes (a view valid during the
        #: call) and its length: a :class:`PacketTaker` takes the packet, ``None`` leaves it
        self.offer: Callable[[memoryview, int], PacketTaker | None] | None = None
        self._taker: PacketTaker | None = None  # taking the packet being received
        self._taker_left = 0  # its bytes still to come
        self._taker_size = 0  # its length
        self._taken: PacketTaker | None = None  # took a whole packet, not yet returned

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Where the next received bytes go (``BufferedProtocol.get_buffer``)."""
        taker = self._taker
        if taker is not None:
            view = taker.get_buffer()
            return view[: self._taker_left] if len(view) > self._taker_left else view
        big = self._big
        if big is not None:
            if self._big_filled == len(big):
                big = self._grow(big)
            return memoryview(big)[self._big_filled : self._big_size]
        if self._start == self._end:
            self._start = self._end = 0
        elif self._end == len(self._buf):
            pending = self._end - self._start
            if self._start == 0:  # a header's worth of bytes at most fills it; grow
                grown = bytearray(2 * len(self._buf))
                grown[:pending] = self._buf
                self._buf = grown
            else:
                self._buf[:pending] = self._buf[self._start : self._end]
            self._start, self._end = 0, pending
        return memoryview(self._buf)[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` were written into the last buffer handed out."""
        taker = self._taker
        if taker is not None:
            self._taker_left -= nbytes  # first: the bytes are the packet's whatever it does
            if self._taker_left == 0:
                self._taken, self._taker = taker, None
            taker.buffer_updated(nbytes)
            return
        big = self._big
        if big is None:
            self._end += nbytes
            return
        self._big_filled += nbytes
        size = self._big_size
        if self._big_filled == size:  # whole: what follows goes to the shared buffer
            # a spare longer than this packet is not shrunk: the transport may still hold
            # the view it received into (asyncio's TLS reader does, during this call)
            self._ready = big if len(big) == size else memoryview(big)[:size]
            self._big = None
            self._spare = big if len(big) <= SPARE_LIMIT else None

    def _grow(self, big: bytearray) -> bytearray:
        """``big``, full, doubled (at most to the announced length)."""
        size = min(self._big_size, 2 * len(big))
        try:
            while len(big) < size:  # in place: realloc remaps large blocks, it does not copy
                big += _ZEROS[: size - len(big)]
        except BufferError:  # someone still holds a view of it: move to a new buffer
            grown = bytearray(size)
            grown[: len(big)] = big
            self._big = big = grown
        return big

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` in (for tests and for plain ``Protocol`` use)."""
        view = memoryview(data)
        while view:
            with self.get_buffer() as buf:  # released at once, so the buffer can grow in place
                n = min(len(buf), len(view))
                buf[:n] = view[:n]
            self.buffer_updated(n)
            view = view[n:]

    def taken_packet(self) -> PacketTaker | None:
        """The taker of the next packet, if that packet was taken and is whole (ask before
        :meth:`next_packet`: it comes first)."""
        taken, self._taken = self._taken, None
        return taken

    def next_packet(self) -> memoryview | bytearray | None:
        """The next complete packet, or ``None`` until more bytes arrive (or while one is
        being taken, or was taken and waits for :meth:`taken_packet`)."""
        if self._taken is not None:
            return None
        ready = self._ready
        if ready is not None:
            self._ready = None
            self.own_buffer = True
            return ready
        self.own_buffer = False
        if self._big is not None or self._taker is not None:
            return None
        hs = self.header_size
        start = self._start
        avail = self._end - start
        if avail < hs:
            return None
        length = int.from_bytes(self._buf[start : start + hs], "big")
        if length > self.max_packet:
            raise ProtocolError(f"peer announced a {length}-byte packet (limit {self.max_packet})")
        if avail - hs >= length:
            self._start = start + hs + length
            return memoryview(self._buf)[start + hs : start + hs + length]
        if hs + length <= len(self._buf) and length < len(self._buf) // 4:
            return None  # small: wait for the rest in the shared buffer
        have = avail - hs
        if self.offer is not None and self._take(start + hs, have, length):
            return None
        big = self._free_spare()
        if big is None:
            big = bytearray(min(length, max(BIG_FIRST, 2 * have)))
        elif len(big) < have:
            big += _ZEROS[: have - len(big)]
        big[:have] = self._buf[start + hs : self._end]
        self._start = self._end = 0
        self._big, self._big_filled, self._big_size = big, have, length
        return None

    def _take(self, first: int, have: int, length: int) -> bool:
        """Offer the big packet starting at ``self._buf[first]`` (``have`` bytes of its
        ``length`` in); if taken, hand its taker the bytes already here."""
        assert self.offer is not None
        with memoryview(self._buf) as buf:
            taker = self.offer(buf[first : first + have], length)
        if taker is None:
            return False
        self._taker, self._taker_left, self._taker_size = taker, length, length
        self._start = self._end = 0
        with memoryview(self._buf) as buf:
            self.feed(buf[first : first + have])
        return True

    def _free_spare(self) -> bytearray | None:
        """The last big packet's buffer, if no view of it is left (it could not be resized
        otherwise)."""
        spare, self._spare = self._spare, None
        if spare is None:
            return None
        try:
            spare += b"\0"
        except BufferError:
            return None
        del spare[-1]
        return spare

    def peek(self, n: int) -> bytes:
        """Up to ``n`` of the bytes received but not yet cut into packets (before a big
        packet's own buffer takes them)."""
        if self._big is not None or self._ready is not None or self._taker is not None:
            return b""
        return bytes(self._buf[self._start : min(self._end, self._start + n)])

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as packets (or as a taken packet's taker)."""
        pending = self._end - self._start
        if self._ready is not None:
            pending += len(self._ready)
        if self._taker is not None or self._taken is not None:
            pending += self._taker_size - self._taker_left
        return pending + (self._big_filled if self._big is not None else 0)
