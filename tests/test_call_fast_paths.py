"""The per-call fast paths: a call's bytes assembled from cached parts, a reply read from its
first bytes. Each must give exactly what the general encoder and decoder give; the last
test checks them against a real node, the Erlang side echoing what it received."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from pyrlang_zarr import Node, NodeDown, RpcTimeout
from pyrlang_zarr.erldist import control as C
from pyrlang_zarr.erldist.calls import Calls, encode_request, tag_of
from pyrlang_zarr.erldist.handoff import Handoff
from pyrlang_zarr.erldist.identity import Identity
from pyrlang_zarr.erldist.session import TICK, ReplyRoute
from pyrlang_zarr.term import (
    Atom,
    ImproperList,
    Pid,
    Reference,
    atoms,
    decode,
    encode,
)
from pyrlang_zarr.term.encode import ZERO_COPY_THRESHOLD
from pyrlang_zarr.testing.cluster import LocalCluster
from tests.test_dist_sansio import connect, events, framed, new_session

ARGS: list[tuple[str, str, list[Any]]] = [
    ("erlang", "node", []),
    ("lists", "reverse", [[1, 2, 3]]),
    ("m\u00e9", "f" * 200, [Atom("x"), "str", b"bin", 1.5, -(1 << 70), {"k": (1, [2])}]),
    ("mnesia", "write", [b"\x00" * (ZERO_COPY_THRESHOLD + 5), ImproperList((1,), 2)]),
    ("erlang", "apply", [(), [], [[]], "", b""]),
]


class _Settings:
    liveness_timeout = 10.0


def new_calls(route: ReplyRoute | None = None) -> tuple[Identity, Calls]:
    identity = Identity("pz-test@host")
    handoff = Handoff(lambda: None, lambda: identity.name)
    calls = Calls(identity, handoff, cast(Any, None), _Settings(), route)
    calls._make_pid()
    return identity, calls


def words(tag: int) -> tuple[int, int, int]:
    return (tag >> 64, tag >> 32 & 0xFFFFFFFF, tag & 0xFFFFFFFF)


@pytest.mark.parametrize(("module", "function", "args"), ARGS)
def test_a_call_is_the_general_encoding_of_its_terms(
    module: str, function: str, args: list[Any]
) -> None:
    """Header, ``$gen_call`` and request from cached bytes == the encoder's bytes of the
    terms; the tag is the integer of a reference of ours that no other call gets."""
    identity, calls = new_calls()
    pid = calls.pid
    assert pid is not None
    tags = set()
    for _ in range(3):
        tag, head = calls._tagged_head()
        tags.add(tag)
        ref = Reference(identity.name or "", identity.creation, words(tag))
        assert identity.owns(ref) and tag_of(ref.ids) == tag
        got = b"".join([head, *encode_request(module, function, args)])
        request = (atoms.CALL, Atom(module), Atom(function), list(args), Atom("user"))
        want = encode((C.REG_SEND, pid, atoms.EMPTY, Atom("rex"))) + encode(
            (atoms.GEN_CALL, (pid, ref), request)
        )
        assert got == want
        control, at = decode(got)
        assert control == (C.REG_SEND, pid, atoms.EMPTY, Atom("rex"))
        assert decode(got, at)[0][1] == (pid, ref)
    assert len(tags) == 3


def test_bad_rpc_arguments_fail_before_anything_is_encoded() -> None:
    with pytest.raises(TypeError, match="module and function must be str"):
        encode_request(cast(Any, b"erlang"), "node", [])
    with pytest.raises(TypeError, match="args must be a list or tuple"):
        encode_request("erlang", "node", cast(Any, "abc"))


def reply_session() -> tuple[Identity, Calls, Any]:
    route = ReplyRoute()
    identity, calls = new_calls(route)
    session = new_session()
    session.replies = route
    connect(session)
    return identity, calls, session


def test_a_reply_is_read_from_its_bytes_as_the_general_path_reads_it() -> None:
    """A reply to our pid: a Reply with the call's tag and the same result the general
    decoder gives; anything else (another pid, another node's ref) takes the general path."""
    identity, calls, session = reply_session()
    pid = calls.pid
    assert pid is not None
    tag, _ = calls._tagged_head()
    ref = Reference(identity.name or "", identity.creation, words(tag))
    other_pid = Pid("pz-test@host", pid.id + 1, 0, pid.creation)
    foreign_ref = Reference("x@host", identity.creation, words(tag))
    result = {"a": [1, (2, b"x" * 100)], Atom("k"): -5}
    to_us = b"p" + encode((C.SEND, Atom(""), pid))
    session.receive_data(
        framed(to_us + encode((ref, result)))
        + framed(b"p" + encode((C.SEND, Atom(""), other_pid)) + encode((ref, result)))
        + framed(to_us + encode((foreign_ref, result)))
        + framed(to_us + encode((ref, Atom("ok"), 3))),
        now=1.0,
    )
    mine, to_other, foreign, triple = events(session)
    general = decode(encode(result))[0]  # str travels as a binary
    assert isinstance(mine, C.Reply)
    assert (mine.tag, mine.result, mine.views) == (tag, general, False)
    assert to_other == C.Send(other_pid, (ref, general))
    assert foreign == C.Send(pid, (foreign_ref, general))
    assert triple == C.Send(pid, (ref, Atom("ok"), 3))


def test_an_undecodable_reply_still_fails_its_call_alone() -> None:
    """The fast path gives up on a result it cannot decode: the general path reads the tag,
    so that call (and only it) gets the error."""
    identity, calls, session = reply_session()
    pid = calls.pid
    assert pid is not None
    tag, _ = calls._tagged_head()
    ref = Reference(identity.name or "", identity.creation, words(tag))
    bad_map = b"t\x00\x00\x00\x02a\x01w\x01aF?\xf0\x00\x00\x00\x00\x00\x00w\x01b"
    session.receive_data(
        framed(b"p" + encode((C.SEND, Atom(""), pid)) + b"\x83h\x02" + encode(ref)[1:] + bad_map),
        now=1.0,
    )
    [event] = events(session)
    assert isinstance(event, C.Undecodable) and event.tag == ref


@pytest.mark.erlang
async def test_calls_and_replies_on_the_fast_paths_against_erlang(
    cluster: LocalCluster,
) -> None:
    """Concurrent calls with varied arguments, echoed by the Erlang side: every reply reaches
    its own call, and the replies came through the fast path (counted)."""
    async with Node(cookie=cluster.cookie) as node:
        peer = cluster.nodes[0]
        await node.rpc(peer, "erlang", "node", [])  # connected, our pid made
        fast = 0
        route = node._calls._replies
        assert route is not None and route.deliver is not None and route.deliver_on is not None
        deliver, deliver_on = route.deliver, route.deliver_on

        def counting(event: C.Reply) -> None:  # read on the IO loop
            nonlocal fast
            fast += 1
            deliver(event)

        def counting_on(event: C.Reply, loop: Any) -> None:  # read on a caller's loop
            nonlocal fast
            fast += 1
            deliver_on(event, loop)

        route.deliver, route.deliver_on = counting, counting_on
        terms = [(i, b"s" * i, [Atom("a")] * (i % 3), b"\x01" * (i * 1000)) for i in range(60)]
        got = await asyncio.gather(*(node.rpc(peer, "lists", "reverse", [[t]]) for t in terms))
        assert got == [[t] for t in terms]
        big = b"\x07" * (3 << 20)
        view = await node.rpc(peer, "erlang", "iolist_to_binary", [[big]], copy_binaries=False)
        assert type(view) is memoryview and view == big
        copied = await node.rpc(peer, "erlang", "iolist_to_binary", [[big]])
        assert type(copied) is bytes and copied == big
        assert fast == len(terms) + 2


@pytest.mark.erlang
async def test_a_lone_call_leaves_uncorked_and_a_burst_still_shares_writes(
    cluster: LocalCluster,
) -> None:
    """Sequential calls (none other of the loop in flight) schedule no uncorking callback;
    calls made together in one iteration still leave in a few writes, every reply right."""
    async with Node(cookie=cluster.cookie) as node:
        peer = cluster.nodes[0]
        await node.rpc(peer, "erlang", "node", [])
        conn = node._peers.connection(peer)
        assert conn is not None and conn.direct
        uncorks: list[int] = []
        writes: list[int] = []
        uncork, write = conn._uncork, conn._write

        def counting_uncork(loop: Any) -> None:
            uncorks.append(1)
            uncork(loop)

        def counting_write(buffers: Any) -> None:
            if buffers != [TICK]:  # the IO loop's tick, if the machine stalls for a second
                writes.append(len(buffers))
            write(buffers)

        conn._uncork = counting_uncork  # type: ignore[method-assign]
        conn._write = counting_write  # type: ignore[method-assign]
        for i in range(50):
            assert await node.rpc(peer, "erlang", "+", [i, 1]) == i + 1
        assert (len(uncorks), len(writes)) == (0, 50)
        writes.clear()
        sums = await asyncio.gather(*(node.rpc(peer, "erlang", "+", [i, 2]) for i in range(300)))
        assert sums == [i + 2 for i in range(300)]
        assert 1 <= len(writes) <= 10  # the first call at once, the rest corked together
        assert uncorks


@pytest.mark.erlang
async def test_one_timer_per_loop_keeps_every_calls_deadline(cluster: LocalCluster) -> None:
    """A short deadline set after a long one still fires (the loop's one timer is moved
    earlier), the long call goes on, and completed calls leave nothing behind (a deadline
    entry would keep its call's result alive)."""
    async with Node(cookie=cluster.cookie) as node:
        peer = cluster.nodes[0]
        for i in range(20):
            assert await node.rpc(peer, "erlang", "+", [i, 1], timeout=5 + i) == i + 1
        state = node._callers.of(asyncio.get_running_loop())
        assert state._due == {} and state.inflight == 0
        long = asyncio.ensure_future(node.rpc(peer, "timer", "sleep", [20_000], timeout=30))
        await asyncio.sleep(0)
        with pytest.raises(RpcTimeout, match="timer:sleep/1"):
            await node.rpc(peer, "timer", "sleep", [20_000], timeout=0.3)
        assert not long.done()
        with pytest.raises(RpcTimeout):  # the timer set itself again for what is left
            await node.rpc(peer, "timer", "sleep", [20_000], timeout=0.2)
        assert await node.rpc(peer, "erlang", "node", [], timeout=10) == Atom(peer)
        long.cancel()
        with pytest.raises(asyncio.CancelledError):
            await long
        assert state._due == {} and state.inflight == 0


@pytest.mark.erlang
async def test_a_lost_connection_fails_its_own_calls_only(cluster: LocalCluster) -> None:
    """The table of calls is one dict scanned by peer when a connection is lost: that
    peer's calls fail with NodeDown, another peer's calls complete, nothing is left."""
    a, b = cluster.nodes[0], cluster.nodes[1]
    async with Node(cookie=cluster.cookie) as node:
        for peer in (a, b):
            await node.rpc(peer, "erlang", "node", [])
        lost = [asyncio.ensure_future(node.rpc(a, "timer", "sleep", [20_000])) for _ in range(5)]
        kept = [asyncio.ensure_future(node.rpc(b, "timer", "sleep", [300])) for _ in range(5)]
        await asyncio.sleep(0.05)
        conn = node._peers.connection(a)
        assert conn is not None
        node.start_io_thread().call_soon_threadsafe(conn.abort, NodeDown("cut by the test"))
        for call in lost:
            with pytest.raises(NodeDown, match="outcome unknown"):
                await call
        assert await asyncio.gather(*kept) == [Atom("ok")] * 5
        assert node._calls._pending == {}
        assert await node.rpc(a, "erlang", "node", []) == Atom(a)  # connected again


def test_caller_loops_forget_closed_loops_while_other_threads_add_theirs() -> None:
    """The per-loop table is shared by every caller thread: forgetting closed loops must
    not trip over a loop another thread adds meanwhile (played here by ``is_closed``
    adding one, which is where the GIL may switch threads)."""
    from pyrlang_zarr.erldist.callers import CallerLoops

    loops = CallerLoops()
    added: list[asyncio.SelectorEventLoop] = []

    class Busy(asyncio.SelectorEventLoop):
        def is_closed(self) -> bool:
            if not added:  # "another thread" registers its loop right now
                added.append(asyncio.SelectorEventLoop())
                loops.of(added[0])
            return True

    busy, mine = Busy(), asyncio.SelectorEventLoop()
    try:
        loops.of(busy)
        assert loops.of(mine).loop is mine
        assert added and loops.of(added[0]).loop is added[0]
    finally:
        for loop in (busy, mine, *added):
            asyncio.SelectorEventLoop.close(loop)
