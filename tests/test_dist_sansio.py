"""The protocol parts that need no socket, driven with bytes."""

from __future__ import annotations

import asyncio
import hashlib
import re
import struct
import tracemalloc
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from pyrlang_zarr.erldist import control as C
from pyrlang_zarr.erldist import flags as F
from pyrlang_zarr.erldist import framing
from pyrlang_zarr.erldist.connection import DistConnection
from pyrlang_zarr.erldist.epmd import decode_port2_resp, encode_port_please2
from pyrlang_zarr.erldist.framing import PacketReader
from pyrlang_zarr.erldist.handshake import ClientHandshake, State, digest
from pyrlang_zarr.erldist.session import (
    TICK,
    TICK_EVENT,
    Connected,
    Malformed,
    Outgoing,
    Session,
)
from pyrlang_zarr.errors import AuthenticationError, NodeDown, NodeUnreachable, ProtocolError
from pyrlang_zarr.term import Atom, Pid, Reference, encode

# -- EPMD -------------------------------------------------------------------------------


def test_port_please2_request_bytes() -> None:
    assert encode_port_please2("node1") == b"\x00\x06znode1"


def test_port2_resp_decodes_a_registered_node() -> None:
    reply = b"w\x00" + struct.pack(">HBBHHH", 40000, 77, 0, 6, 5, 5) + b"node1" + b"\x00\x00"
    entry = decode_port2_resp(reply)
    assert entry is not None
    assert (entry.name, entry.port, entry.node_type, entry.highest_version) == (
        "node1",
        40000,
        77,
        6,
    )


def test_port2_resp_not_registered_is_none() -> None:
    assert decode_port2_resp(b"w\x01") is None


@pytest.mark.parametrize(
    "reply", [b"", b"x\x00", b"w\x00\x01", b"w\x00" + b"\x00" * 10 + b"\x00\x09ab"]
)
def test_port2_resp_garbage_is_a_protocol_error(reply: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_port2_resp(reply)


# -- handshake --------------------------------------------------------------------------
COOKIE = "secret"
PEER = "node1@host"


def challenge_packet(
    challenge: int, name: str = PEER, flags: int = F.MANDATORY_26 | F.PUBLISHED
) -> bytes:
    n = name.encode()
    return b"N" + struct.pack(">QIIH", flags, challenge, 1234, len(n)) + n


def test_digest_matches_erlang_definition() -> None:
    assert digest(42, "abc") == hashlib.md5(b"abc42").digest()


def test_send_name_is_the_new_form_without_published_flag() -> None:
    hs = ClientHandshake("pz@host", PEER, COOKIE, creation=77)
    data = hs.start()
    (length,) = struct.unpack(">H", data[:2])
    assert length == len(data) - 2
    assert data[2:3] == b"N"
    flags, creation, nlen = struct.unpack(">QIH", data[3:17])
    assert flags & F.PUBLISHED == 0
    assert flags & F.MANDATORY_26 == F.MANDATORY_26
    assert creation == 77 and data[17:] == b"pz@host" and nlen == 7


def run_ok_handshake(hs: ClientHandshake, challenge: int = 1000) -> bytes:
    hs.start()
    assert hs.packet_received(b"sok") is None
    reply = hs.packet_received(challenge_packet(challenge))
    assert reply is not None
    return reply[2:]


def test_full_handshake_checks_the_peer_digest() -> None:
    hs = ClientHandshake("pz@host", PEER, COOKIE, creation=5, challenge=999)
    reply = run_ok_handshake(hs, challenge=1000)
    assert reply[:1] == b"r"
    assert struct.unpack(">I", reply[1:5])[0] == 999
    assert reply[5:] == digest(1000, COOKIE)
    assert hs.packet_received(b"a" + digest(999, COOKIE)) is None
    assert hs.state is State.CONNECTED
    assert hs.peer is not None and hs.peer.name == PEER and hs.peer.creation == 1234


# Erlang cookies are latin-1 text (atoms): digits, punctuation, accents, anything printable.
cookies = st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF), min_size=1, max_size=40)
challenges = st.integers(0, 2**32 - 1)


def reference_digest(challenge: int, cookie: str) -> bytes:
    """OTP's ``dist_util:gen_digest/2``: ``erlang:md5([atom_to_list(Cookie) |
    integer_to_list(Challenge)])``, the cookie's characters as bytes, then the decimal."""
    return hashlib.md5(bytes(map(ord, cookie)) + b"%d" % challenge).digest()


@settings(max_examples=300)
@given(cookie=cookies, ours=challenges, theirs=challenges)
@example(cookie="secret", ours=0, theirs=1)
@example(cookie="0", ours=1, theirs=10)
@example(cookie="a1b2c3d4", ours=2**32 - 1, theirs=7)
@example(cookie="Köln-42", ours=42, theirs=4242)
def test_handshake_digests_for_any_cookie(cookie: str, ours: int, theirs: int) -> None:
    """Both digests of a full handshake, for cookies of every kind, against OTP's rule.
    (A peer challenge equal to ours is a reflection, refused: see the hostile-peer tests.)"""
    assume(ours != theirs)
    hs = ClientHandshake("pz@host", PEER, cookie, creation=5, challenge=ours)
    reply = run_ok_handshake(hs, challenge=theirs)
    assert reply[1:5] == ours.to_bytes(4, "big")
    assert reply[5:] == reference_digest(theirs, cookie)  # what the peer checks
    assert hs.packet_received(b"a" + reference_digest(ours, cookie)) is None
    assert hs.state is State.CONNECTED


@settings(max_examples=100)
@given(cookie=cookies, other=cookies, ours=challenges)
def test_a_peer_with_another_cookie_is_refused(cookie: str, other: str, ours: int) -> None:
    assume(ours != 1000)  # the peer's challenge: ours again would be a reflection (refused)
    hs = ClientHandshake("pz@host", PEER, cookie, creation=5, challenge=ours)
    run_ok_handshake(hs)
    if other == cookie:
        return
    with pytest.raises(AuthenticationError):
        hs.packet_received(b"a" + reference_digest(ours, other))


def test_wrong_peer_digest_is_an_authentication_error() -> None:
    hs = ClientHandshake("pz@host", PEER, COOKIE, creation=5, challenge=999)
    run_ok_handshake(hs)
    with pytest.raises(AuthenticationError):
        hs.packet_received(b"a" + digest(999, "other"))
    assert hs.state is State.FAILED


def test_closed_after_our_digest_means_wrong_cookie() -> None:
    hs = ClientHandshake("pz@host", PEER, COOKIE, creation=5)
    run_ok_handshake(hs)
    assert isinstance(hs.connection_lost(), AuthenticationError)
    assert COOKIE not in str(hs.connection_lost()) and COOKIE not in repr(hs)


def test_alive_status_answers_true() -> None:
    hs = ClientHandshake("pz@host", PEER, COOKIE, creation=5)
    hs.start()
    assert hs.packet_received(b"salive") == b"\x00\x05strue"
    assert hs.state is State.AWAIT_CHALLENGE


@pytest.mark.parametrize(
    "status,error",
    [
        (b"snot_allowed", NodeUnreachable),
        (b"snok", NodeUnreachable),
        (b"sweird", ProtocolError),
        (b"x", ProtocolError),
    ],
)
def test_refusing_statuses(status: bytes, error: type[Exception]) -> None:
    hs = ClientHandshake("pz@host", PEER, COOKIE, creation=5)
    hs.start()
    with pytest.raises(error):
        hs.packet_received(status)


def test_challenge_from_another_name_is_refused() -> None:
    hs = ClientHandshake("pz@host", PEER, COOKIE, creation=5)
    hs.start()
    hs.packet_received(b"sok")
    with pytest.raises(NodeUnreachable, match="calls itself"):
        hs.packet_received(challenge_packet(1, name="other@host"))


def test_challenge_without_mandatory_flags_is_refused() -> None:
    hs = ClientHandshake("pz@host", PEER, COOKIE, creation=5)
    hs.start()
    hs.packet_received(b"sok")
    with pytest.raises(ProtocolError, match="MAP_TAG"):
        hs.packet_received(challenge_packet(1, flags=F.MANDATORY_25 & ~F.MAP_TAG))


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=40), max_size=4))
def test_handshake_fuzz_gives_only_clean_errors(packets: list[bytes]) -> None:
    hs = ClientHandshake("pz@host", PEER, COOKIE, creation=5)
    hs.start()
    for p in packets:
        try:
            hs.packet_received(p)
        except (ProtocolError, AuthenticationError, NodeUnreachable):
            return
    assert isinstance(hs.connection_lost(), AuthenticationError | NodeUnreachable)


@settings(max_examples=200)
@given(st.integers(0, 30))
def test_handshake_truncated_valid_packets(cut: int) -> None:
    hs = ClientHandshake("pz@host", PEER, COOKIE, creation=5, challenge=7)
    hs.start()
    hs.packet_received(b"sok")
    full = challenge_packet(3)
    try:
        hs.packet_received(full[:cut])
    except ProtocolError:
        return
    assert cut >= len(full)


# -- framing ----------------------------------------------------------------------------


def frames(payloads: list[bytes], hs: int = 4) -> bytes:
    return b"".join(len(p).to_bytes(hs, "big") + p for p in payloads)


@settings(max_examples=200)
@given(
    st.lists(st.binary(max_size=3000), max_size=20),
    st.lists(st.integers(1, 5000), min_size=1, max_size=50),
)
@example([b"x" * 1500, b"y"], [100, 5000])  # one feed crosses the end of a big packet
@example([b"x" * 600, b"y" * 600], [1300])
def test_packet_reader_reassembles_any_split(payloads: list[bytes], cuts: list[int]) -> None:
    stream = frames(payloads)
    reader = PacketReader(4, buffer_size=4096)  # small buffer: exercises the big-packet path
    got: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(stream):
        n = cuts[i % len(cuts)]
        i += 1
        reader.feed(stream[pos : pos + n])
        pos += n
        while (p := reader.next_packet()) is not None:
            got.append(bytes(p))
    assert got == payloads
    assert reader.buffered == 0


def test_big_packet_is_received_into_its_own_buffer() -> None:
    reader = PacketReader(4, buffer_size=1024)
    body = bytes(range(256)) * 100
    reader.feed(frames([body])[:600])
    assert reader.next_packet() is None
    rest = frames([body])[600:]
    view = reader.get_buffer()
    assert len(view) == len(body) - (600 - 4)  # sized from the header: no reassembly copies
    view[: len(rest)] = rest
    reader.buffer_updated(len(rest))
    packet = reader.next_packet()
    assert packet is not None and bytes(packet) == body


def _receive_big(reader: PacketReader, body: bytes) -> memoryview | bytearray | None:
    stream = memoryview(frames([body]))
    return _receive_frame(reader, stream)


def _receive_frame(reader: PacketReader, stream: memoryview) -> memoryview | bytearray | None:
    reader.feed(stream[:600])  # the header first: the packet gets its own buffer
    assert reader.next_packet() is None
    reader.feed(stream[600:])
    return reader.next_packet()


def _allocated_while(fn: Any) -> tuple[Any, int]:
    """``fn()`` and the peak bytes Python allocated meanwhile (tracemalloc running)."""
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    result = fn()
    return result, tracemalloc.get_traced_memory()[1] - before


def test_a_big_packets_buffer_serves_the_next_once_no_view_is_left() -> None:
    """The next big packet reuses the last one's memory (no fresh, zeroed pages per 8 MiB
    reply) only when nothing refers to it: a view kept by a caller keeps its bytes."""
    tracemalloc.start()
    try:
        reader = PacketReader(4, buffer_size=1024)
        size = 1 << 20
        packet = _receive_big(reader, b"a" * size)
        assert reader.own_buffer and packet is not None and bytes(packet) == b"a" * size
        del packet  # released: its memory may serve again
        small = b"b" * (size // 2)
        stream = memoryview(frames([small]))
        packet, allocated = _allocated_while(lambda: _receive_frame(reader, stream))
        assert reader.own_buffer and packet == small  # exactly this packet's bytes
        assert allocated < size // 4  # nothing new (growth by a byte may over-allocate)
        assert packet is not None
        kept = memoryview(packet)[:10]  # a caller keeps a view (a chunk's bytes, zero-copy)
        del packet
        stream = memoryview(frames([b"c" * size]))
        packet, allocated = _allocated_while(lambda: _receive_frame(reader, stream))
        assert reader.own_buffer and packet == b"c" * size
        assert allocated >= size  # a buffer of its own
        assert kept == b"b" * 10  # untouched
    finally:
        tracemalloc.stop()


def test_a_big_packets_buffer_past_the_spare_limit_is_not_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A buffer bigger than ``SPARE_LIMIT`` is let go with its packet (a client that once
    read a huge reply does not hold that much memory for ever); one within it serves the
    next big packet."""
    monkeypatch.setattr(framing, "SPARE_LIMIT", 1 << 20)
    tracemalloc.start()
    try:
        reader = PacketReader(4, buffer_size=1024)
        packet = _receive_big(reader, b"a" * (2 << 20))
        del packet
        stream = memoryview(frames([b"b" * (1 << 20)]))
        packet, allocated = _allocated_while(lambda: _receive_frame(reader, stream))
        assert packet == b"b" * (1 << 20) and allocated >= 1 << 20  # a buffer of its own
        del packet
        stream = memoryview(frames([b"c" * (1 << 19)]))
        packet, allocated = _allocated_while(lambda: _receive_frame(reader, stream))
        assert packet == b"c" * (1 << 19) and allocated < 1 << 18  # the 1 MiB one served
    finally:
        tracemalloc.stop()


def test_a_spare_buffer_is_not_resized_while_the_transport_holds_its_view() -> None:
    """asyncio's TLS reader keeps the view it received into while it reports the bytes: a
    packet shorter than the spare buffer it landed in is a view of it, not a resize (which
    raised ``BufferError`` and dropped the connection)."""
    reader = PacketReader(4, buffer_size=1024)
    assert _receive_big(reader, b"a" * 8000) is not None  # leaves a spare of 8000 bytes
    stream = frames([b"b" * 5000])
    reader.feed(stream[:600])
    assert reader.next_packet() is None
    rest = stream[600:]
    view = reader.get_buffer()  # as the TLS transport does: held across buffer_updated
    view[: len(rest)] = rest
    reader.buffer_updated(len(rest))
    packet = reader.next_packet()
    assert reader.own_buffer and packet is not None and bytes(packet) == b"b" * 5000
    view.release()


def test_header_size_switch_mid_stream() -> None:
    reader = PacketReader(2)
    reader.feed(b"\x00\x02ok" + b"\x00\x00\x00\x03abc" + b"\x00\x00\x00\x00")
    assert bytes(reader.next_packet() or b"") == b"ok"
    reader.header_size = 4
    assert bytes(reader.next_packet() or b"") == b"abc"
    tick = reader.next_packet()
    assert tick is not None and bytes(tick) == b""  # a tick


def test_oversized_packet_is_refused() -> None:
    reader = PacketReader(4, max_packet=1000)
    reader.feed(b"\x00\x00\x10\x00")
    with pytest.raises(ProtocolError, match="4096-byte"):
        reader.next_packet()


# -- control messages -------------------------------------------------------------------
A = Pid(Atom("a@host"), 1, 0, 7)
B = Pid(Atom("pz@host"), 2, 0, 9)
REF = Reference(Atom("a@host"), 7, (1, 2, 3))
WHY = (Atom("shutdown"), b"why")
TOKEN = (Atom("trace"), 1)


@pytest.mark.parametrize(
    "term,message,event",
    [
        ((C.SEND, Atom(""), B), WHY, C.Send(B, WHY)),
        ((C.SEND_TT, Atom(""), B, TOKEN), WHY, C.Send(B, WHY)),
        ((C.SEND_SENDER, A, B), WHY, C.Send(B, WHY, sender=A)),
        ((C.SEND_SENDER_TT, A, B, TOKEN), WHY, C.Send(B, WHY, sender=A)),
        ((C.REG_SEND, A, Atom(""), Atom("inbox")), 42, C.RegSend(A, Atom("inbox"), 42)),
        ((C.REG_SEND_TT, A, Atom(""), Atom("inbox"), TOKEN), 42, C.RegSend(A, Atom("inbox"), 42)),
        ((C.LINK, A, B), C.NO_MESSAGE, C.Link(A, B)),
        ((C.UNLINK, A, B), C.NO_MESSAGE, C.Unlink(A, B)),
        ((C.UNLINK_ID, 5, A, B), C.NO_MESSAGE, C.UnlinkId(5, A, B)),
        ((C.UNLINK_ID_ACK, 5, A, B), C.NO_MESSAGE, C.UnlinkIdAck(5, A, B)),
        ((C.EXIT, A, B, WHY), C.NO_MESSAGE, C.Exit(A, B, WHY)),
        ((C.EXIT_TT, A, B, TOKEN, WHY), C.NO_MESSAGE, C.Exit(A, B, WHY)),
        ((C.PAYLOAD_EXIT, A, B), WHY, C.Exit(A, B, WHY)),
        ((C.PAYLOAD_EXIT_TT, A, B, TOKEN), WHY, C.Exit(A, B, WHY)),
        ((C.EXIT2, A, B, WHY), C.NO_MESSAGE, C.Exit2(A, B, WHY)),
        ((C.EXIT2_TT, A, B, TOKEN, WHY), C.NO_MESSAGE, C.Exit2(A, B, WHY)),
        ((C.PAYLOAD_EXIT2, A, B), WHY, C.Exit2(A, B, WHY)),
        ((C.PAYLOAD_EXIT2_TT, A, B, TOKEN), WHY, C.Exit2(A, B, WHY)),
        ((C.MONITOR_P, A, B, REF), C.NO_MESSAGE, C.MonitorP(A, B, REF)),
        ((C.MONITOR_P, A, Atom("inbox"), REF), C.NO_MESSAGE, C.MonitorP(A, Atom("inbox"), REF)),
        ((C.DEMONITOR_P, A, B, REF), C.NO_MESSAGE, C.DemonitorP(A, B, REF)),
        ((C.MONITOR_P_EXIT, A, B, REF, WHY), C.NO_MESSAGE, C.MonitorPExit(A, B, REF, WHY)),
        (
            (C.MONITOR_P_EXIT, Atom("x"), B, REF, WHY),
            C.NO_MESSAGE,
            C.MonitorPExit(Atom("x"), B, REF, WHY),
        ),
        ((C.PAYLOAD_MONITOR_P_EXIT, A, B, REF), WHY, C.MonitorPExit(A, B, REF, WHY)),
        ((C.NODE_LINK,), C.NO_MESSAGE, C.Unhandled(C.NODE_LINK, (C.NODE_LINK,))),
        ((C.GROUP_LEADER, A, B), C.NO_MESSAGE, C.Unhandled(C.GROUP_LEADER, (C.GROUP_LEADER, A, B))),
        ((99, 1, 2), C.NO_MESSAGE, C.Unhandled(99, (99, 1, 2))),
    ],
)
def test_parse_control(term: tuple[Any, ...], message: Any, event: C.ControlMessage) -> None:
    assert C.parse_control(term, message) == event


def test_parse_control_events_are_frozen_and_typed() -> None:
    event = C.parse_control((C.SEND, Atom(""), B), 1, True)
    assert type(event) is C.Send and event.views and event.sender is None
    with pytest.raises(AttributeError):
        event.to = A  # type: ignore[misc]
    unlink: Any = C.Unlink(A, B)
    assert C.Link(A, B) != unlink  # events of different ops never compare equal


@pytest.mark.parametrize(
    "term,message,complaint",
    [
        ((C.LINK, A), C.NO_MESSAGE, "needs 3 elements, got 2"),
        ((C.LINK, A, B, B), C.NO_MESSAGE, "needs 3 elements, got 4"),
        ((C.LINK, A, Atom("b")), C.NO_MESSAGE, "element 3 must be a pid, got Atom"),
        ((C.SEND, Atom(""), B), C.NO_MESSAGE, "needs a message part"),
        ((C.SEND, Atom(""), [B]), 1, "element 3 must be a pid, got list"),
        ((C.SEND, Atom("")), 1, "needs 3 elements, got 2"),
        ((C.SEND_TT, Atom(""), B), 1, "needs 4 elements, got 3"),
        ((C.SEND_SENDER, b"a", B), 1, "element 2 must be a pid"),
        ((C.REG_SEND, A, Atom(""), b"inbox"), 1, "element 4 must be a registered name"),
        ((C.REG_SEND_TT, A, Atom(""), Atom("inbox")), 1, "needs 5 elements, got 4"),
        ((C.EXIT, A, B), C.NO_MESSAGE, "needs 4 elements, got 3"),
        ((C.EXIT_TT, A, B, WHY), C.NO_MESSAGE, "needs 5 elements, got 4"),
        ((C.PAYLOAD_EXIT, A, B), C.NO_MESSAGE, "needs a message part"),
        ((C.PAYLOAD_EXIT2_TT, A, B), WHY, "needs 4 elements, got 3"),
        ((C.EXIT2, {}, B, WHY), C.NO_MESSAGE, "element 2 must be a pid, got dict"),
        ((C.MONITOR_P, A, B, b"ref"), C.NO_MESSAGE, "element 4 must be a reference, got bytes"),
        ((C.MONITOR_P, A, 17, REF), C.NO_MESSAGE, "element 3 must be a pid or a name"),
        ((C.DEMONITOR_P, A, B), C.NO_MESSAGE, "needs 4 elements, got 3"),
        ((C.MONITOR_P_EXIT, A, B, REF), C.NO_MESSAGE, "needs 5 elements, got 4"),
        ((C.PAYLOAD_MONITOR_P_EXIT, A, B, REF), C.NO_MESSAGE, "needs a message part"),
        ((C.UNLINK_ID, Atom("id"), A, B), C.NO_MESSAGE, "element 2 must be an integer id"),
        ((C.UNLINK, A, B, 1), C.NO_MESSAGE, "needs 3 elements, got 4"),
        ((), C.NO_MESSAGE, "must be a tuple"),
        ([C.LINK, A, B], C.NO_MESSAGE, "must be a tuple"),
        ((True, A, B), C.NO_MESSAGE, "must be a tuple"),  # an atom, not op 1
        ((Atom("link"), A, B), C.NO_MESSAGE, "must be a tuple"),
    ],
)
def test_malformed_control_is_a_clear_protocol_error(
    term: Any, message: Any, complaint: str
) -> None:
    with pytest.raises(C.MalformedControl, match=re.escape(complaint)) as info:
        C.parse_control(term, message)
    assert isinstance(info.value, ProtocolError) and info.value.term == term


_ELEMENTS = st.sampled_from([A, B, REF, Atom("x"), Atom(""), 0, 7, b"", [], (), WHY, {}])


@settings(max_examples=500)
@given(
    st.sampled_from([*sorted(C._PARSERS), C.NODE_LINK, 99]),
    st.lists(_ELEMENTS, max_size=6),
    st.one_of(st.just(C.NO_MESSAGE), _ELEMENTS),
)
def test_parse_control_fuzz_gives_events_or_malformed(
    op: int, rest: list[Any], message: Any
) -> None:
    try:
        event = C.parse_control((op, *rest), message)
    except C.MalformedControl:
        return
    if not isinstance(event, C.Unhandled):
        assert op in C._PARSERS and len(rest) in (2, 3, 4)


# -- the session ------------------------------------------------------------------------
OUR = "pz@host"


def framed(payload: bytes, hs: int = 4) -> bytes:
    return len(payload).to_bytes(hs, "big") + payload


def pass_through(control: Any, *message: Any) -> bytes:
    return framed(b"p" + encode(control) + b"".join(encode(m) for m in message))


def new_session(views_for: Any = None, tick_time: float = 60.0) -> Session:
    hs = ClientHandshake(OUR, PEER, COOKIE, creation=5, challenge=999)
    return Session(hs, tick_time=tick_time, views_for=views_for)


def events(session: Session) -> list[Any]:
    got = []
    while (event := session.next_event()) is not None:
        got.append(event)
    return got


def connect(session: Session, now: float = 0.0) -> None:
    """Drive ``session`` through a good handshake, bytes only."""
    assert session.initiate()[2:3] == b"N"
    session.receive_data(framed(b"sok", 2) + framed(challenge_packet(1000), 2), now)
    [reply] = events(session)
    assert isinstance(reply, Outgoing) and reply.data[2:3] == b"r"
    assert reply.data[7:] == digest(1000, COOKIE)
    session.receive_data(framed(b"a" + digest(999, COOKIE), 2), now)
    [done] = events(session)
    assert isinstance(done, Connected) and done.peer.name == PEER and session.connected


def test_session_handshake_then_messages_bytes_in_events_out() -> None:
    session = new_session()
    assert not session.connected and session.next_event() is None
    connect(session)
    session.receive_data(
        pass_through((C.SEND, Atom(""), B), WHY)
        + TICK
        + pass_through((C.LINK, A, B))
        + pass_through((C.REG_SEND, A, Atom(""), Atom("inbox")), [1, 2]),
        now=5.0,
    )
    assert events(session) == [
        C.Send(B, WHY),
        TICK_EVENT,
        C.Link(A, B),
        C.RegSend(A, Atom("inbox"), [1, 2]),
    ]
    assert session.last_recv == 5.0


@settings(max_examples=100)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=30))
def test_session_events_do_not_depend_on_how_bytes_are_split(cuts: list[int]) -> None:
    stream = (
        pass_through((C.SEND, Atom(""), B), WHY)
        + TICK
        + pass_through((C.EXIT, A, B, WHY))
        + pass_through((C.PAYLOAD_MONITOR_P_EXIT, A, B, REF), WHY)
    )
    session = new_session()
    connect(session)
    got: list[Any] = []
    pos = i = 0
    while pos < len(stream):
        n = cuts[i % len(cuts)]
        session.receive_data(stream[pos : pos + n], now=float(i))
        got += events(session)
        pos, i = pos + n, i + 1
    assert got == [C.Send(B, WHY), TICK_EVENT, C.Exit(A, B, WHY), C.MonitorPExit(A, B, REF, WHY)]


def test_malformed_control_is_an_event_and_the_session_goes_on() -> None:
    session = new_session()
    connect(session)
    session.receive_data(
        pass_through((C.LINK, A))
        + pass_through((C.EXIT, A, B, WHY, 1))
        + pass_through((C.LINK, A, B)),
        now=1.0,
    )
    first, second, third = events(session)
    assert isinstance(first, Malformed) and "needs 3 elements" in str(first.error)
    assert isinstance(second, Malformed) and second.error.term == (C.EXIT, A, B, WHY, 1)
    assert third == C.Link(A, B)


@pytest.mark.parametrize(
    "packet,complaint",
    [
        (framed(b"q" + encode((C.LINK, A, B))), "unknown type 113"),
        (framed(b"p" + encode([C.LINK, A, B])), "bad control message"),
        (framed(b"p" + encode(())), "bad control message"),
        (framed(b"p" + encode((Atom("link"), A, B))), "bad control message"),
        (framed(b"p\x83\xff\x00"), "cannot read"),
        # a message part that cannot be decoded, after a control message that is no tuple
        (framed(b"p" + encode([C.SEND, Atom(""), B]) + b"\x83\xff"), "bad control message"),
    ],
)
def test_broken_packets_end_the_session(packet: bytes, complaint: str) -> None:
    session = new_session()
    connect(session)
    session.receive_data(packet, now=1.0)
    with pytest.raises(ProtocolError, match=complaint):
        session.next_event()
    session.receive_data(pass_through((C.LINK, A, B)), now=2.0)
    with pytest.raises(ProtocolError, match=complaint):  # and stays ended
        session.next_event()


def _map_of_equal_keys() -> bytes:
    """``#{1 => a, 1.0 => b}``: legal Erlang (1 and 1.0 are different keys there), a dict of
    one key in Python, so it cannot be decoded as given."""
    return (
        b"t\x00\x00\x00\x02"
        + b"a\x01"
        + encode(Atom("a"))[1:]
        + b"F"
        + struct.pack(">d", 1.0)
        + encode(Atom("b"))[1:]
    )


def test_undecodable_message_part_is_an_event_and_the_session_goes_on() -> None:
    """Item 11: the frame is intact, so only that message is lost; a reply's reference is
    still read, so its call can fail alone."""
    session = new_session()
    connect(session)
    reply = b"\x83h\x02" + encode(REF)[1:] + _map_of_equal_keys()  # {Ref, #{1 => a, 1.0 => b}}
    truncated = b"\x83\x6d\x00\x00\x00\x09ab"  # a binary claiming 9 bytes, 2 there
    map_key = b"\x83h\x02a\x07t\x00\x00\x00\x01t\x00\x00\x00\x00a\x01"  # {7, #{#{} => 1}}
    session.receive_data(
        framed(b"p" + encode((C.SEND, Atom(""), B)) + reply)
        + framed(b"p" + encode((C.SEND, Atom(""), B)) + truncated)
        + framed(b"p" + encode((C.REG_SEND, A, Atom(""), Atom("inbox"))) + map_key)
        + pass_through((C.LINK, A, B)),
        now=1.0,
    )
    first, second, third, fourth = events(session)
    assert isinstance(first, C.Undecodable)
    assert (first.op, first.to, first.tag) == (C.SEND, B, REF)
    assert "keys that Python treats as equal" in str(first.error)
    assert isinstance(second, C.Undecodable) and (second.to, second.tag) == (B, None)
    assert isinstance(third, C.Undecodable)
    assert (third.op, third.to, third.tag) == (C.REG_SEND, Atom("inbox"), 7)
    assert "map used as a map key" in str(third.error)
    assert fourth == C.Link(A, B)


@settings(max_examples=300)
@given(st.binary(max_size=120), st.booleans())
def test_session_fuzz_gives_events_or_protocol_errors(body: bytes, with_control: bool) -> None:
    session = new_session()
    connect(session)
    prefix = encode((C.SEND, Atom(""), B)) if with_control else b""
    session.receive_data(framed(b"p" + prefix + body), 0.0)
    try:
        events(session)
    except ProtocolError:
        pass


def test_handshake_errors_come_out_of_the_session_unwrapped() -> None:
    session = new_session()
    session.initiate()
    session.receive_data(framed(b"sok", 2) + framed(challenge_packet(1000), 2), 0.0)
    events(session)
    session.receive_data(framed(b"a" + digest(999, "other"), 2), 0.0)
    with pytest.raises(AuthenticationError):
        session.next_event()
    refused = new_session()
    refused.receive_data(framed(b"snot_allowed", 2), 0.0)
    with pytest.raises(NodeUnreachable, match="not_allowed"):
        refused.next_event()
    assert isinstance(new_session().connection_lost(), NodeUnreachable)


def test_large_message_to_the_views_pid_keeps_memoryviews() -> None:
    blob = bytes(range(256)) * 1024  # 256 KiB: a big packet, received into its own buffer
    for to, expect_views in ((B, True), (A, False)):
        session = new_session(views_for=lambda pid: pid == B)
        connect(session)
        stream = pass_through((C.SEND, Atom(""), to), (REF, blob))
        session.receive_data(stream[:1000], 1.0)
        assert session.next_event() is None
        session.receive_data(stream[1000:], 1.0)
        [event] = events(session)
        assert isinstance(event, C.Send) and event.views is expect_views
        binary = event.message[1]
        assert type(binary) is (memoryview if expect_views else bytes) and binary == blob


def test_tick_policy_is_decided_from_the_clock_it_is_given() -> None:
    session = new_session(tick_time=8.0)
    assert session.tick_interval == 1.0  # at least one tick a second whatever ours is
    assert new_session(tick_time=2.0).tick_interval == 0.5
    connect(session, now=100.0)
    assert session.tick(101.0) == TICK  # we sent nothing: a tick keeps the peer's view
    header = session.header(11)
    assert header == b"\x00\x00\x00\x0bp"
    assert session.tick(102.0) == b""  # we sent a packet: no tick needed
    assert session.tick(103.0) == TICK
    session.receive_data(TICK, now=107.0)
    assert events(session) == [TICK_EVENT]
    assert session.tick(115.0) == TICK  # 8 s of silence is still within tick_time
    with pytest.raises(NodeDown, match="sent nothing for 9 s"):
        session.tick(116.0)


# -- the asyncio shell, on a fake transport ------------------------------------------------
class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.aborted


def feed(conn: DistConnection, data: bytes) -> None:
    while data:
        buf = conn.get_buffer(-1)
        n = min(len(buf), len(data))
        buf[:n] = data[:n]
        conn.buffer_updated(n)
        data = data[n:]


async def test_connection_ignores_malformed_control_and_keeps_going() -> None:
    received: list[Any] = []
    lost: list[Exception] = []
    session = new_session()
    conn = DistConnection(session, lambda c, e: received.append(e), lambda c, e: lost.append(e))
    transport = FakeTransport()
    conn.connection_made(transport)
    feed(conn, framed(b"sok", 2) + framed(challenge_packet(1000), 2))
    feed(conn, framed(b"a" + digest(999, COOKIE), 2))
    assert (await conn.ready).name == PEER
    feed(conn, pass_through((C.LINK, A)) + pass_through((C.MONITOR_P, A, B, b"r")) + TICK)
    feed(conn, pass_through((C.SEND, Atom(""), B), WHY))
    assert received == [C.Send(B, WHY)] and not transport.aborted
    conn.send_parts([encode(Atom("x"))])
    conn.flush()
    assert transport.written[-1] == framed(b"p" + encode(Atom("x")))
    feed(conn, framed(b"z"))  # unknown packet type: this one ends the connection
    assert transport.aborted
    conn.connection_lost(None)
    assert len(lost) == 1 and isinstance(lost[0], ProtocolError)
