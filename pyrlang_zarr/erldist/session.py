"""One peer's distribution session as a sans-IO state machine: bytes in, events out.

The transport feeds it received bytes (into :meth:`Session.get_buffer`, or copied with
:meth:`Session.receive_data`) along with the clock, and drains :meth:`Session.next_event`:
handshake replies to write, :class:`Connected`, ticks, and one typed control event per
pass-through ``'p'`` packet. It also frames outgoing packets and decides, from a clock value
it is given, when to tick and when the peer has been silent too long. It owns no socket,
timer or event loop, so every rule here is tested with plain bytes (as h11 does for HTTP).

Most packets are replies to our remote calls, and those all begin with the same bytes: the
control message sending to our calls' pid, then ``{Ref, `` up to the reference's three
words (:class:`ReplyRoute`). A packet that begins with them is a :class:`~.control.Reply`
read straight from its bytes: the tag from the words, then only the result is decoded. Any
other packet, or one whose result does not decode, takes the general path.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

from pyrlang_zarr.erldist import control as C
from pyrlang_zarr.erldist.framing import PacketReader, PacketTaker
from pyrlang_zarr.erldist.handshake import ClientHandshake, Peer, State
from pyrlang_zarr.erldist.sinks import ReplySink, TakenReply, Unreadable
from pyrlang_zarr.erldist.tls import TLS_RECORD_STARTS, plain_refused
from pyrlang_zarr.errors import (
    AuthenticationError,
    DecodeError,
    NodeDown,
    NodeUnreachable,
    ProtocolError,
)
from pyrlang_zarr.term import Pid, decode, decode_element
from pyrlang_zarr.term.tags import LARGE_TUPLE_EXT, SMALL_TUPLE_EXT, VERSION

PASS_THROUGH = 112
TICK = b"\x00\x00\x00\x00"
#: the longest silence we allow ourselves: we cannot know the peer's net_ticktime.
TICK_INTERVAL = 1.0
_HEADER = struct.Struct(">IB")
#: bytes enough for any reference (the tag of a reply), read on its own from a message that
#: cannot be decoded whole
_LEAD_LIMIT = 2048


class SessionEvent:
    """Base of the events about the session itself (not control messages)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Outgoing(SessionEvent):
    """Bytes the handshake wants written to the peer."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Connected(SessionEvent):
    """The handshake is done; control messages follow."""

    peer: Peer


@dataclass(frozen=True, slots=True)
class Tick(SessionEvent):
    """An empty packet: the peer is alive (the session already noted when)."""


@dataclass(frozen=True, slots=True)
class Malformed(SessionEvent):
    """A well-framed control message that :func:`~.control.parse_control` refused; the
    connection survives it."""

    error: C.MalformedControl


class ReplyRoute:
    """The first bytes of every reply to our calls (``b'p'``, the control message, then the
    message up to the reference's words), set once our calls' pid exists, and who takes the
    :class:`~.control.Reply` events (the transport hands them over directly); shared by the
    node's sessions."""

    __slots__ = ("deliver", "deliver_on", "prefix", "sink_for")

    def __init__(self) -> None:
        self.prefix: bytes | None = None
        self.deliver: Callable[[C.Reply], None] | None = None  # read on the IO loop
        # read on a caller's loop (given): completes the call there, or hands it to its own
        self.deliver_on: Callable[[C.Reply, Any], None] | None = None
        # the sink of the call tagged so, if it has one (``sinks.py``)
        self.sink_for: Callable[[int], ReplySink | None] | None = None

    @property
    def result_at(self) -> int:
        """Where a reply's result begins: after the prefix and the reference's words."""
        return len(self.prefix or b"") + 12

    def tag_of(self, packet: memoryview | bytearray) -> int | None:
        """The tag of the call ``packet`` replies to, if it is a reply to one of ours (read
        from its first bytes; nothing decoded)."""
        prefix = self.prefix
        if prefix is None:
            return None
        n = len(prefix)
        if len(packet) < n + 12 or packet[:n] != prefix:  # type: ignore[comparison-overlap]
            return None
        return int.from_bytes(packet[n : n + 12], "big")


class _Guarded:
    """A sink's taker, kept from breaking the connection: if it raises, the rest of its
    packet is dropped as it arrives and only its call fails (the framing stays in step)."""

    __slots__ = ("_drain", "_error", "_taker", "tag")

    def __init__(self, taker: TakenReply) -> None:
        self.tag = taker.tag
        self._taker = taker
        self._error: Exception | None = None
        self._drain: bytearray | None = None

    def get_buffer(self) -> memoryview:
        if self._error is None:
            try:
                view = self._taker.get_buffer()
                if len(view):
                    return view
                raise ValueError("the reply's taker gave no room for its bytes")
            except Exception as exc:
                self._error = exc
        if self._drain is None:
            self._drain = bytearray(64 * 1024)
        return memoryview(self._drain)

    def buffer_updated(self, nbytes: int) -> None:
        if self._error is None:
            try:
                self._taker.buffer_updated(nbytes)
            except Exception as exc:
                self._error = exc

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._taker.result()


TICK_EVENT = Tick()
Event: TypeAlias = C.ControlMessage | Outgoing | Connected | Tick | Malformed


class Session:
    """Client side of one connection, from the first handshake byte to the last packet.

    ``views_for(pid)`` says whether a large message sent to ``pid`` may keep its binaries as
    memoryviews of the received packet (a big packet has a buffer of its own, used again
    only once no view of it is left).
    """

    def __init__(
        self,
        handshake: ClientHandshake,
        *,
        tick_time: float,
        views_for: Callable[[Pid], bool] | None = None,
        replies: ReplyRoute | None = None,
        now: float = 0.0,
    ) -> None:
        self.handshake = handshake
        self.peer_name = handshake.peer_name
        self.tick_time = tick_time
        self.views_for = views_for
        self.replies = replies
        self.last_recv = now  # the clock value when bytes last arrived
        self._reader = PacketReader(handshake.length_bytes)
        self._reader.offer = self._offer
        self._connected = False
        self._sent_since_tick = False
        self._error: Exception | None = None
        self._first_bytes_seen = False

    def __repr__(self) -> str:
        return f"<Session {self.handshake!r}>"

    @property
    def connected(self) -> bool:
        return self._connected

    # -- receiving ------------------------------------------------------------------------
    def initiate(self) -> bytes:
        """The first bytes to send (the handshake's ``send_name``)."""
        return self.handshake.start()

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Where the transport should receive the next bytes (``BufferedProtocol``)."""
        return self._reader.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int, now: float) -> None:
        """``nbytes`` arrived, at clock value ``now``, in the last buffer handed out."""
        self._reader.buffer_updated(nbytes)
        self.last_recv = now

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Copy ``data`` in (tests, and plain ``Protocol`` transports)."""
        self._reader.feed(data)
        self.last_recv = now

    def next_event(self) -> Event | None:
        """The next event from the bytes received so far, ``None`` until more arrive.

        Raises :class:`ProtocolError` (and the handshake's :class:`AuthenticationError` or
        :class:`NodeUnreachable`) when the connection cannot go on; so does every later
        call."""
        if self._error is not None:
            raise self._error
        try:
            if not self._first_bytes_seen:
                self._check_first_bytes()
            reader = self._reader
            while True:
                taken = reader.taken_packet()  # only a sink's taker takes one
                if taken is not None:
                    return self._taken(cast(TakenReply, taken))
                packet = reader.next_packet()
                if packet is None:
                    break
                if self._connected:
                    return self._packet(packet)
                event = self._handshake_packet(packet)
                if event is not None:
                    return event
            return None
        except (ProtocolError, AuthenticationError, NodeUnreachable) as exc:  # TlsError too
            self._error = exc
            raise
        except Exception as exc:  # DecodeError, or worse: the peer's bytes, not our bug
            self._error = ProtocolError(f"{self.peer_name} sent a packet we cannot read: {exc}")
            raise self._error from exc

    def connection_lost(self) -> Exception:
        """What a closed socket means before the handshake finished."""
        if not self._first_bytes_seen and self._reader.peek(2)[:1] in (b"\x15", b"\x16"):
            return plain_refused(self.peer_name)  # a TLS record cut short
        return self.handshake.connection_lost()

    def _check_first_bytes(self) -> None:
        """A TLS node answers a plain handshake with a TLS record (an alert): say that it
        wants TLS, rather than wait for a 5 kB status packet that never comes."""
        head = self._reader.peek(2)
        if len(head) < 2:
            return
        self._first_bytes_seen = True
        if head in TLS_RECORD_STARTS:
            raise plain_refused(self.peer_name)

    def _handshake_packet(self, packet: memoryview | bytearray) -> Event | None:
        hs = self.handshake
        reply = hs.packet_received(packet)
        if hs.state is State.CONNECTED and hs.peer is not None:
            self._connected = True
            self._reader.header_size = 4
            self.peer_name = hs.peer.name
            return Connected(hs.peer)
        return None if reply is None else Outgoing(reply)

    def _offer(self, first: memoryview, size: int) -> PacketTaker | None:
        """A big packet begins: if it is the reply to a call with a sink, the sink may take
        it."""
        replies = self.replies
        if not self._connected or replies is None or replies.sink_for is None:
            return None
        tag = replies.tag_of(first)
        if tag is None:
            return None
        sink = replies.sink_for(tag)
        if sink is None:
            return None
        try:
            taker = sink.taker(tag, replies.result_at, first, size)
        except Exception:  # the sink's own failure: the reply is read as usual
            return None
        return None if taker is None else _Guarded(taker)

    def _taken(self, taker: TakenReply) -> C.Reply:
        try:
            result = taker.result()
        except Exception as exc:  # its call fails, the connection goes on
            result = Unreadable(exc)
        return C.Reply(taker.tag, result, False)

    def _packet(self, packet: memoryview | bytearray) -> Event:
        if len(packet) == 0:
            return TICK_EVENT
        replies = self.replies
        if replies is not None and (tag := replies.tag_of(packet)) is not None:
            views = self._reader.own_buffer  # a big packet's own buffer
            try:
                result, _ = decode_element(packet, replies.result_at, copy_binaries=not views)
            except DecodeError:
                pass  # the general path says which call it was, and why
            else:
                return C.Reply(tag, result, views)
        if packet[0] != PASS_THROUGH:
            raise ProtocolError(f"{self.peer_name} sent a packet of unknown type {packet[0]}")
        control, offset = decode(packet, 1)
        message: Any = C.NO_MESSAGE
        views = False
        if offset < len(packet):
            if self._reader.own_buffer and self.views_for is not None:
                to = C.send_target(control)
                views = type(to) is Pid and self.views_for(to)
            try:
                message, offset = decode(packet, offset, copy_binaries=not views)
            except DecodeError as exc:  # the frame is intact: only this message is lost
                return self._undecodable(control, packet, offset, exc)
        try:
            return C.parse_control(control, message, views)
        except C.MalformedControl as exc:
            if type(control) is not tuple or not control or type(control[0]) is not int:
                error = f"{self.peer_name} sent a bad control message {control!r}"
                raise ProtocolError(error) from None
            return Malformed(exc)

    def _undecodable(
        self, control: Any, packet: memoryview | bytearray, start: int, error: DecodeError
    ) -> C.Undecodable:
        if type(control) is not tuple or not control or type(control[0]) is not int:
            raise ProtocolError(f"{self.peer_name} sent a bad control message {control!r}")
        return C.Undecodable(
            control[0], C.destination(control), _leading_element(packet, start), error
        )

    # -- sending --------------------------------------------------------------------------
    def header(self, size: int) -> bytes:
        """The 5-byte header of an outgoing pass-through packet of ``size - 1`` term bytes
        (``size`` counts the type byte); the packet counts as traffic for the tick policy."""
        self._sent_since_tick = True
        return _HEADER.pack(size, PASS_THROUGH)

    # -- ticks ----------------------------------------------------------------------------
    @property
    def tick_interval(self) -> float:
        """How often :meth:`tick` should be called. A peer with a short ``net_ticktime``
        drops a connection silent that long, and the handshake does not tell us the peer's:
        a tick is 4 bytes, so one goes out every second of silence whatever ours is."""
        return min(self.tick_time / 4, TICK_INTERVAL)

    def tick(self, now: float) -> bytes:
        """Every :attr:`tick_interval`: the bytes to write (a tick if we sent nothing since
        the last call, else nothing). Raises :class:`NodeDown` once the peer has been silent
        for longer than ``tick_time``."""
        silent = now - self.last_recv
        if silent > self.tick_time:
            raise NodeDown(f"{self.peer_name} sent nothing for {silent:.0f} s (no ticks)")
        sent, self._sent_since_tick = self._sent_since_tick, False
        return b"" if sent else TICK


def _leading_element(packet: memoryview | bytearray, start: int) -> Any:
    """The first element of the tuple whose version byte is at ``packet[start]``, decoded on
    its own (a reply's tag, when the reply as a whole cannot be decoded); ``None`` if the
    term is not a tuple or that element cannot be read alone."""
    end = len(packet)
    if start + 3 > end or packet[start] != VERSION:
        return None
    tag = packet[start + 1]
    if tag == SMALL_TUPLE_EXT:
        arity, first = packet[start + 2], start + 3
    elif tag == LARGE_TUPLE_EXT and start + 6 <= end:
        arity, first = int.from_bytes(packet[start + 2 : start + 6], "big"), start + 6
    else:
        return None
    if arity == 0 or first >= end:
        return None
    try:
        value, _ = decode(bytes((VERSION,)) + bytes(packet[first : first + _LEAD_LIMIT]))
    except DecodeError:
        return None
    return value
