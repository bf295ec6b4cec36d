"""The protocol parts that need no socket, driven with bytes."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pyrlang_zarr.erldist import flags as F
from pyrlang_zarr.erldist.epmd import decode_port2_resp, encode_port_please2
from pyrlang_zarr.erldist.framing import PacketReader
from pyrlang_zarr.erldist.handshake import ClientHandshake, State, digest
from pyrlang_zarr.errors import AuthenticationError, NodeUnreachable, ProtocolError

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
@example(cookie="secret", ours=0, theirs=0)
@example(cookie="0", ours=1, theirs=10)
@example(cookie="a1b2c3d4", ours=2**32 - 1, theirs=7)
@example(cookie="Köln-42", ours=42, theirs=4242)
def test_handshake_digests_for_any_cookie(cookie: str, ours: int, theirs: int) -> None:
    """Both digests of a full handshake, for cookies of every kind, against OTP's rule."""
    hs = ClientHandshake("pz@host", PEER, cookie, creation=5, challenge=ours)
    reply = run_ok_handshake(hs, challenge=theirs)
    assert reply[1:5] == ours.to_bytes(4, "big")
    assert reply[5:] == reference_digest(theirs, cookie)  # what the peer checks
    assert hs.packet_received(b"a" + reference_digest(ours, cookie)) is None
    assert hs.state is State.CONNECTED


@settings(max_examples=100)
@given(cookie=cookies, other=cookies, ours=challenges)
def test_a_peer_with_another_cookie_is_refused(cookie: str, other: str, ours: int) -> None:
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
    assert reader.next_packet() == body


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
