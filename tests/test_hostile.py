"""Hostile peers against the client: each attack of the "good citizen" issue, played by a
scripted peer on loopback (``tests/hostile.py``) or by crafted bytes, must be refused with the
right error and bounded memory. Memory is measured with ``tracemalloc`` (every thread of this
process: the node's I/O thread too), never with wall-clock time. Each attack and its outcome
goes to :mod:`tests.attacks` for the table printed at the end of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from pyrlang_zarr import Node
from pyrlang_zarr.erldist import epmd, framing
from pyrlang_zarr.erldist import flags as F
from pyrlang_zarr.erldist.framing import PacketReader
from pyrlang_zarr.erldist.handshake import ClientHandshake, State, digest
from pyrlang_zarr.errors import (
    AuthenticationError,
    DecodeError,
    NodeUnreachable,
    ProtocolError,
    RpcError,
)
from pyrlang_zarr.mnesia import MnesiaClient, ensure_table
from pyrlang_zarr.term import Atom, decode_term, encode
from pyrlang_zarr.term.format import format_term
from pyrlang_zarr.testing.cluster import LocalCluster
from tests import attacks
from tests.hostile import CRASH, HOST, FakeEpmd, FakeNode, Raw, ReflectingPeer, port2_resp

COOKIE = "hostile-test-cookie"
MiB = 1 << 20
# Peers use short names on this host (as LocalCluster's nodes do); the scripted ones listen on
# 127.0.0.1, which the host name must resolve to.
SHORT_HOST = socket.gethostname().split(".")[0]


@contextlib.contextmanager
def peak_memory() -> Iterator[list[int]]:
    """``out[0]``: the most bytes allocated at once within the block, beyond its start."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    out = [0]
    try:
        yield out
    finally:
        out[0] = tracemalloc.get_traced_memory()[1] - base
        if not was_tracing:
            tracemalloc.stop()


@pytest.fixture
async def fake_epmd(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeEpmd]:
    """A FakeEpmd that every look-up of this process goes to (it forwards unknown names)."""
    async with FakeEpmd() as fake:
        real = epmd.lookup

        async def lookup(host: str, name: str, **kw: Any) -> epmd.NodeEntry:
            return await real(host, name, port=fake.port, timeout=kw.get("timeout", 5.0))

        monkeypatch.setattr(epmd, "lookup", lookup)
        yield fake


async def serve(fake_epmd: FakeEpmd, peer: FakeNode) -> str:
    """Start ``peer`` and register it; its full node name."""
    await peer.start()
    fake_epmd.names[peer.name.partition("@")[0]] = peer.port
    return peer.name


# -- 5. challenge reflection ------------------------------------------------------------------

PEER = "node1@host"


def challenge_packet(challenge: int, name: str = PEER) -> bytes:
    n = name.encode()
    return b"N" + struct.pack(">QIIH", F.OUR_FLAGS | F.PUBLISHED, challenge, 9, len(n)) + n


def test_reflected_challenge_is_refused_sans_io() -> None:
    a = ClientHandshake("pz@host", PEER, COOKIE, creation=5)
    b = ClientHandshake("pz@host", PEER, COOKIE, creation=5)
    a.start()
    b.start()
    a.packet_received(b"sok")
    b.packet_received(b"sok")
    reply_a = a.packet_received(challenge_packet(1234))
    assert reply_a is not None
    (challenge_a,) = struct.unpack(">I", reply_a[3:7])
    with pytest.raises(AuthenticationError, match="reflection"):
        b.packet_received(challenge_packet(challenge_a))  # A's challenge, back to us on B
    assert b.state is State.FAILED
    # once A is over, its challenge is no longer ours to defend
    a.packet_received(b"a" + digest(challenge_a, COOKIE))
    assert a.state is State.CONNECTED
    c = ClientHandshake("pz@host", PEER, COOKIE, creation=5)
    c.start()
    c.packet_received(b"sok")
    assert c.packet_received(challenge_packet(challenge_a)) is not None


async def test_reflecting_peer_without_the_cookie_is_refused(fake_epmd: FakeEpmd) -> None:
    forged = (Atom("forged"), b"by a peer that never knew the cookie")
    async with ReflectingPeer(f"refla@{SHORT_HOST}", f"reflb@{SHORT_HOST}", forged) as peer:
        fake_epmd.names.update(refla=peer.a.port, reflb=peer.b.port)
        async with Node(cookie=COOKIE, connect_timeout=5) as node:
            results = await asyncio.gather(
                node.rpc(peer.a.name, "erlang", "node", []),
                node.rpc(peer.b.name, "erlang", "node", []),
                return_exceptions=True,
            )
    assert peer.reflected, "the peer did not get to play its part"
    assert forged not in results, "the forged rpc result was accepted"
    assert not peer.logged_in
    assert all(isinstance(r, AuthenticationError) for r in results), results
    attacks.record(
        "challenge reflection across 2 names, no cookie",
        " / ".join(type(r).__name__ for r in results),
        "forged reply accepted: no",
    )


# -- 7. handshake refusals keep their type -----------------------------------------------------


@pytest.mark.parametrize(
    "part,error",
    [
        ({"status": b"nok"}, NodeUnreachable),
        ({"status": b"not_allowed"}, NodeUnreachable),
        ({"claim": f"someone_else@{SHORT_HOST}"}, NodeUnreachable),
        ({"ack": "bad"}, AuthenticationError),
    ],
    ids=["nok", "not_allowed", "name_mismatch", "wrong_ack_digest"],
)
async def test_handshake_refusals_raise_their_own_error(
    fake_epmd: FakeEpmd, part: dict[str, Any], error: type[Exception]
) -> None:
    peer = FakeNode(f"refusing@{SHORT_HOST}", COOKIE, **part)
    try:
        name = await serve(fake_epmd, peer)
        async with Node(cookie=COOKIE, connect_timeout=5) as node:
            with pytest.raises(error) as info:
                await node.rpc(name, "erlang", "node", [])
    finally:
        await peer.close()
    assert not isinstance(info.value, ProtocolError)
    what = ", ".join(f"{k}={v.decode() if isinstance(v, bytes) else v}" for k, v in part.items())
    attacks.record(f"handshake: {what}", type(info.value).__name__)


# -- 8. EPMD replies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flood,expect",
    [
        (port2_resp("x", 4000), None),  # a good reply, then 64 MiB more: stop at the reply
        (b"w\x00" + struct.pack(">HBBHHH", 4000, 77, 0, 6, 6, 0xFFFF), ProtocolError),
        (b"", ProtocolError),  # zeros: not a reply at all
    ],
    ids=["reply_then_flood", "huge_name", "garbage_flood"],
)
async def test_flooding_epmd_is_read_no_further_than_a_reply(
    flood: bytes, expect: type[Exception] | None
) -> None:
    flood_kind = "a 64 KiB name announced" if expect is ProtocolError and flood else "zeros"
    async with FakeEpmd(flood=flood) as fake:
        with peak_memory() as peak:
            if expect is None:
                entry = await epmd.lookup(HOST, "x", port=fake.port, timeout=3)
                assert entry.port == 4000
            else:
                with pytest.raises(expect):
                    await epmd.lookup(HOST, "x", port=fake.port, timeout=3)
    assert peak[0] < 2 * MiB, f"{peak[0]} bytes allocated for an EPMD reply"
    attacks.record(
        f"EPMD flooding: {'a reply, then ' if expect is None else ''}{flood_kind}",
        "entry read" if expect is None else expect.__name__,
        f"peak {attacks.mib(peak[0])}; {attacks.mib(fake.sent)} pushed before we hung up",
    )


async def test_epmd_port_comes_from_erl_epmd_port(monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeEpmd({"somenode": 4321}) as fake:
        monkeypatch.setenv("ERL_EPMD_PORT", str(fake.port))
        entry = await epmd.lookup(HOST, "somenode", timeout=3)
    assert entry.port == 4321


# -- 9. packets announced, not sent -----------------------------------------------------------


def test_announced_packet_is_not_allocated_before_its_bytes_come() -> None:
    announced = 256 * MiB
    reader = PacketReader(4)
    with peak_memory() as peak:
        reader.feed(announced.to_bytes(4, "big") + b"p" + bytes(1000))
        assert reader.next_packet() is None
        for _ in range(10):  # a peer trickling bytes
            reader.feed(bytes(100))
            assert reader.next_packet() is None
    assert peak[0] < 4 * MiB, f"{peak[0]} bytes for 2 kB received"
    attacks.record(
        "packet header announcing 256 MiB, 2 kB sent (sans-IO)",
        "waits",
        f"peak {attacks.mib(peak[0])}",
    )


def test_largest_packet_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert PacketReader(4).max_packet == framing.MAX_PACKET == 1 << 30
    monkeypatch.setattr(framing, "MAX_PACKET", 1000)
    reader = PacketReader(4)  # what a new connection makes
    reader.feed((4096).to_bytes(4, "big"))
    with pytest.raises(ProtocolError, match="limit 1000"):
        reader.next_packet()


def test_big_packet_grows_with_its_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(framing, "BIG_FIRST", 4096)
    body = bytes(range(256)) * 1000  # 256,000 bytes
    stream = len(body).to_bytes(4, "big") + body + b"\x00\x00\x00\x02ok"
    reader = PacketReader(4, buffer_size=1024)
    got: list[bytes] = []
    sizes: list[int] = []
    pos = 0
    while pos < len(stream):
        buf = reader.get_buffer()
        sizes.append(len(buf))
        n = min(len(buf), 3000, len(stream) - pos)  # the kernel hands over at most 3,000
        buf[:n] = stream[pos : pos + n]
        del buf
        reader.buffer_updated(n)
        pos += n
        while (p := reader.next_packet()) is not None:
            got.append(bytes(p))
    assert got == [body, b"ok"]
    assert max(sizes) <= len(body) // 2, "the whole announced size was handed out at once"


async def test_node_announcing_a_huge_packet_costs_what_it_sends(fake_epmd: FakeEpmd) -> None:
    # after the handshake: a pass-through packet announced as 512 MiB, of which 1 kB comes
    header = (512 * MiB).to_bytes(4, "big") + b"p" + bytes(1024)
    peer = FakeNode(f"announcer@{SHORT_HOST}", COOKIE, after_handshake=header)
    try:
        name = await serve(fake_epmd, peer)
        async with Node(cookie=COOKIE, connect_timeout=5) as node:
            with peak_memory() as peak:
                await node.connect(name)
                await asyncio.sleep(0.5)  # the node receives what there is
    finally:
        await peer.close()
    assert peak[0] < 16 * MiB, f"{peak[0]} bytes allocated for 1 kB received"
    attacks.record(
        "node announcing a 512 MiB packet, 1 kB sent", "waits", f"peak {attacks.mib(peak[0])}"
    )


# -- 10. decoding: inflation, work -------------------------------------------------------------


def compressed(size: int, chunks: Iterator[bytes]) -> bytes:
    z = zlib.compressobj(9)
    body = b"".join(z.compress(c) for c in chunks) + z.flush()
    return b"\x83\x50" + struct.pack(">I", size) + body


def test_compressed_binary_bomb_is_refused_before_inflating() -> None:
    n = 256 * MiB  # ~256 kB compressed
    head = b"\x6d" + struct.pack(">I", n)
    data = compressed(5 + n, itertools.chain([head], (bytes(MiB) for _ in range(256))))
    with peak_memory() as peak, pytest.raises(DecodeError, match="limit"):
        decode_term(data)
    assert peak[0] < MiB
    attacks.record(
        f"compressed term: {len(data) >> 10} kB inflating to 256 MiB",
        "DecodeError",
        f"peak {attacks.mib(peak[0])}",
    )


def test_compressed_list_of_nils_is_refused_by_its_value_count() -> None:
    n = 4_000_000  # 4 MB inflated, ~4 kB compressed; 4M fresh [] would take ~270 MB
    data = compressed(n + 6, iter([b"\x6c" + struct.pack(">I", n), b"\x6a" * n, b"\x6a"]))
    with peak_memory() as peak, pytest.raises(DecodeError, match="values"):
        decode_term(data)
    assert peak[0] < n + 8 * MiB  # the inflated bytes, and no list of them
    attacks.record(
        f"compressed term: {len(data) >> 10} kB of [] list (4M elements)",
        "DecodeError",
        f"peak {attacks.mib(peak[0])}",
    )


def test_compressed_terms_of_ordinary_sizes_still_decode() -> None:
    term = [(Atom("k"), i, b"v" * 10) for i in range(100_000)]
    plain = encode(term)
    data = compressed(len(plain) - 1, iter([plain[1:]]))
    assert decode_term(data) == term


def colliding_map(n: int) -> bytes:
    """A map of ``n`` integer keys that all share one Python hash (``k * (2**61 - 1) + 1``)."""
    modulus = (1 << 61) - 1
    pairs = b"".join(
        b"\x6e\x10\x00" + (1 + i * modulus).to_bytes(16, "little") + b"\x61\x01" for i in range(n)
    )
    return b"\x83\x74" + struct.pack(">I", n) + pairs


def test_map_with_colliding_hashes_is_refused() -> None:
    with pytest.raises(DecodeError, match="hash"):
        decode_term(colliding_map(6_000))  # 18M same-hash comparisons to build
    small = decode_term(colliding_map(300))  # 44,850: allowed
    assert len(small) == 300
    plain = encode({i * 7919: i for i in range(15_000)})
    assert len(decode_term(plain)) == 15_000
    attacks.record("map of 6,000 int keys sharing one hash", "DecodeError", "18M comparisons")


def test_list_tails_that_are_lists_decode_flat() -> None:
    depth = 100_000  # [0 | [1 | [2 | ...]]], deeper than any nesting limit
    data = b"\x83" + b"".join(b"\x6c\x00\x00\x00\x01\x61" + bytes([i & 0xFF]) for i in range(depth))
    value = decode_term(data + b"\x6a")
    assert value == [i & 0xFF for i in range(depth)]
    attacks.record("list of 100,000 nested tails", "decoded flat (linear)")


# -- 12. {badrpc, Reason} with huge integers ---------------------------------------------------


def test_format_term_never_raises() -> None:
    huge = 10**5000
    text = format_term((Atom("EXIT"), {huge: [huge, -huge]}), 200)
    assert text.startswith("{'EXIT',#{16#") and len(text) <= 200
    assert format_term(12345) == "12345"
    assert format_term(list(range(10**6)), 50).endswith("...")


async def test_badrpc_with_a_huge_integer_is_an_rpc_error(fake_epmd: FakeEpmd) -> None:
    huge = 10**5000
    peer = FakeNode(f"bigint@{SHORT_HOST}", COOKIE, on_call=lambda m, f, a: (Atom("badrpc"), huge))
    try:
        name = await serve(fake_epmd, peer)
        async with Node(cookie=COOKIE, connect_timeout=5) as node:
            with pytest.raises(RpcError) as info:
                await node.rpc(name, "erlang", "node", [])
    finally:
        await peer.close()
    assert info.value.reason == huge
    attacks.record("{badrpc, 5001-digit integer}", "RpcError")


async def test_a_read_reply_claiming_gigabytes_fails_that_read_alone(fake_epmd: FakeEpmd) -> None:
    """A read taken as it arrives (chunks landing in place), whose record claims 4 GiB of
    data in a 300 kB packet: that call fails with DecodeError at once, nothing that size is
    allocated, and the connection reads on in step (the next call is answered)."""
    from pyrlang_zarr.mnesia.arriving import ReadSink
    from tests.test_arriving import Placement

    record = b"l\x00\x00\x00\x01h\x03" + encode(Atom("t"))[1:] + encode(b"k")[1:]
    raw = Raw(b"h\x02w\x06atomicl\x00\x00\x00\x01" + record + b"m\xff\xff\xff\xff" + bytes(300_000))

    def answer(module: str, function: str, args: list[Any]) -> Any:
        return raw if function == "sync_transaction" else Atom("still_here")

    peer = FakeNode(f"claimer@{SHORT_HOST}", COOKIE, on_call=answer)
    tracemalloc.start()
    try:
        name = await serve(fake_epmd, peer)
        async with Node(cookie=COOKIE, connect_timeout=5) as node:
            sink = ReadSink(1, Placement({0}))
            with pytest.raises(DecodeError, match="longer than the packet"):
                await node.rpc(name, "mnesia", "sync_transaction", [], sink=sink, timeout=10)
            assert await node.rpc(name, "erlang", "node", [], timeout=10) == Atom("still_here")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        await peer.close()
    assert peak < 64 << 20
    attacks.record("read reply claiming a 4 GiB chunk", "DecodeError; that call only")


# -- 6 and 7 with Mnesia: a rogue node among real replicas ------------------------------------

TAB = "pz_hostile"


@pytest.fixture(scope="module")
def one_node() -> Iterator[LocalCluster]:
    with LocalCluster(n=1, cookie=COOKIE) as c:
        yield c


@pytest.mark.erlang
async def test_expression_trees_match_erl_parse_on_a_node(one_node: LocalCluster) -> None:
    from pyrlang_zarr.mnesia import client
    from pyrlang_zarr.mnesia.expr import parse_exprs

    texts = [v for k, v in vars(client).items() if k.isupper() and isinstance(v, str)]
    texts = [t for t in texts if t.rstrip().endswith(".")]
    assert len(texts) >= 5
    texts += [
        "F(\n X) =:= [1,\n 2 | T] ++ [\n A || {A,\n B} <-\n L, A\n > B],\n x.",
        "A\n =\n {B, C} =\n X, 1 + 2 * 3 - 4 / 2 == 6, m\n:\nf(\n) -- [].",
        "case X of\n [\n ] -> fun\n (A) -> A; (B)\n -> B end end, (fun () -> ok end)().",
        'X = <<>>, <<"ab", 1, Y>>, "", "a b\nc", {x, <<\n"z">>}.',
        "case X of Y when Y > 1, is_tuple(Y); Y =:= 0 -> ok; _ -> no end,\n"
        " A andalso B orelse C =:= [] orelse D, fun\n erlang:md5/1,\n"
        " fun ({a, I}) when is_tuple(I) -> I;\n (_) -> x end.",
    ]
    async with Node(cookie=COOKIE) as node:
        for text in texts:
            scan = [list(text.encode())]
            ok, tokens, _ = await node.rpc(one_node.nodes[0], "erl_scan", "string", scan)
            ok, theirs = await node.rpc(one_node.nodes[0], "erl_parse", "parse_exprs", [tokens])
            assert ok == Atom("ok")
            assert encode(parse_exprs(text)) == encode(theirs), text


def test_unsupported_erlang_is_refused_not_guessed() -> None:
    from pyrlang_zarr.mnesia.expr import parse

    unsupported = ["X = 'q'.", "1.5.", '"\\n".', "-X.", "A xor B.", "<<X:8>>.", "x"]
    for text in [*unsupported, "fun M:f/1.", "fun f/1."]:
        with pytest.raises(ValueError, match=r"unsupported|expected"):
            parse(text)


@pytest.fixture
async def mnesia_node(one_node: LocalCluster) -> AsyncIterator[Node]:
    async with Node(cookie=COOKIE, connect_timeout=5) as node:
        await ensure_table(node, one_node.nodes, TAB)
        yield node


@pytest.mark.erlang
async def test_rogue_parse_tree_never_runs_on_a_healthy_node(
    one_node: LocalCluster, mnesia_node: Node, fake_epmd: FakeEpmd
) -> None:
    # application:set_env(kernel, pyrlang_zarr_pwned, true), as erl_parse gives it
    a = Atom
    payload = (
        a("call"),
        1,
        (a("remote"), 1, (a("atom"), 1, a("application")), (a("atom"), 1, a("set_env"))),
        [
            (a("atom"), 1, a("kernel")),
            (a("atom"), 1, a("pyrlang_zarr_pwned")),
            (a("atom"), 1, True),
        ],
    )
    real = one_node.nodes[0]

    def rogue(module: str, function: str, args: list[Any]) -> Any:
        if (module, function) == ("erl_scan", "string"):
            return (Atom("ok"), [], 1)
        if (module, function) == ("erl_parse", "parse_exprs"):
            return (Atom("ok"), [payload])
        if module == "erl_eval":
            return CRASH  # "crash": the client fails over to a healthy replica
        return None

    peer = FakeNode(f"rogue@{SHORT_HOST}", COOKIE, on_call=rogue)
    try:
        name = await serve(fake_epmd, peer)
        mc = MnesiaClient(mnesia_node, TAB, name, replicas=[real], timeout=10)
        written: bool | Exception
        try:
            written = await mc.insert_if_absent(("hostile", 1), b"data")
        except Exception as exc:  # checked below, after what reached the healthy node
            written = exc
        finally:
            pwned = await mnesia_node.rpc(
                real, "application", "get_env", [Atom("kernel"), Atom("pyrlang_zarr_pwned")]
            )
            await mnesia_node.rpc(
                real, "application", "unset_env", [Atom("kernel"), Atom("pyrlang_zarr_pwned")]
            )
            await mnesia_node.rpc(real, "mnesia", "dirty_delete", [Atom(TAB), ("hostile", 1)])
    finally:
        await peer.close()
    asked = {(m, f) for m, f, _ in peer.calls}
    assert pwned == Atom("undefined"), "the rogue's expression ran on the healthy node"
    assert ("erl_parse", "parse_exprs") not in asked and ("erl_scan", "string") not in asked
    assert written is True
    attacks.record(
        "rogue replica supplies a parse tree, then crashes",
        "failover; tree built locally",
        "rogue code run on healthy node: no",
    )


@pytest.mark.erlang
async def test_refusing_replica_fails_over(
    one_node: LocalCluster, mnesia_node: Node, fake_epmd: FakeEpmd
) -> None:
    peer = FakeNode(f"nokreplica@{SHORT_HOST}", COOKIE, status=b"nok")
    try:
        name = await serve(fake_epmd, peer)
        mc = MnesiaClient(mnesia_node, TAB, name, replicas=[one_node.nodes[0]], timeout=10)
        await mc.write(("hostile", 2), b"x")
        assert await mc.read(("hostile", 2)) == b"x"
        assert mc.coordinator == one_node.nodes[0]
        await mc.delete(("hostile", 2))
    finally:
        await peer.close()
    attacks.record("replica answering status nok", "NodeUnreachable: failed over")
