"""The hidden node against real OTP nodes: rpc, big binaries, concurrency, errors, failures."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import threading
from typing import Any

import pytest
import zarr.core.sync

from pyrlang_zarr import Atom, Node, Pid
from pyrlang_zarr.erldist import control as C
from pyrlang_zarr.erldist import node_registry
from pyrlang_zarr.erldist.handshake import digest
from pyrlang_zarr.erldist.node_registry import close_shared_nodes, shared_node
from pyrlang_zarr.errors import (
    AuthenticationError,
    NodeDown,
    NodeUnreachable,
    PyrlangZarrError,
    RpcError,
    RpcTimeout,
)
from pyrlang_zarr.testing.cluster import LocalCluster
from tests.erl import parse, spawn_eval
from tests.fakes import SentBack

pytestmark = pytest.mark.erlang


async def test_rpc_returns_the_peer_name(node: Node, cluster: LocalCluster) -> None:
    for peer in cluster.nodes:
        assert await node.rpc(peer, "erlang", "node", []) == Atom(peer)


async def test_we_are_a_hidden_node(node: Node, cluster: LocalCluster) -> None:
    peer = cluster.nodes[0]
    await node.connect(peer)
    assert Atom(node.name) in await node.rpc(peer, "erlang", "nodes", [Atom("hidden")])
    assert Atom(node.name) not in await node.rpc(peer, "erlang", "nodes", [])
    # the same seen from Erlang without our code in between
    seen = cluster.erl_eval(0, f"lists:member('{node.name}', nodes(hidden)).")
    assert seen.strip() == "true"


async def test_4mib_binary_md5(node: Node, cluster: LocalCluster) -> None:
    blob = os.urandom(4 * 1024 * 1024)
    assert await node.rpc(cluster.nodes[0], "erlang", "md5", [blob]) == hashlib.md5(blob).digest()


async def test_4mib_binary_download(node: Node, cluster: LocalCluster) -> None:
    data = await node.rpc(cluster.nodes[1], "crypto", "strong_rand_bytes", [4 * 1024 * 1024])
    assert isinstance(data, bytes) and len(data) == 4 * 1024 * 1024
    assert await node.rpc(cluster.nodes[1], "erlang", "md5", [data]) == hashlib.md5(data).digest()


async def test_1000_concurrent_calls_on_one_connection(node: Node, cluster: LocalCluster) -> None:
    peer = cluster.nodes[0]
    results = await asyncio.gather(*(node.rpc(peer, "erlang", "+", [i, 1000]) for i in range(1000)))
    assert results == [i + 1000 for i in range(1000)]
    assert node.connected_nodes == [peer]


async def test_undefined_function_is_an_rpc_error(node: Node, cluster: LocalCluster) -> None:
    with pytest.raises(RpcError, match="undef") as info:
        await node.rpc(cluster.nodes[0], "no_such_module", "f", [1])
    assert info.value.reason[0] == Atom("EXIT")


async def test_badarg_reason_is_decoded(node: Node, cluster: LocalCluster) -> None:
    with pytest.raises(RpcError, match="badarg"):
        await node.rpc(cluster.nodes[0], "erlang", "binary_to_atom", [123])


async def test_unknown_node_name_is_unreachable(cluster: LocalCluster) -> None:
    async with Node(cookie=cluster.cookie) as n:
        with pytest.raises(NodeUnreachable, match="no node named"):
            await n.rpc(f"nosuchnode@{cluster.host}", "erlang", "node", [])


async def test_host_without_epmd_is_unreachable(cluster: LocalCluster) -> None:
    async with Node(cookie=cluster.cookie, connect_timeout=3) as n:
        with pytest.raises(NodeUnreachable):
            await n.rpc("x@127.0.0.254", "erlang", "node", [])


async def test_wrong_cookie_is_an_authentication_error(cluster: LocalCluster) -> None:
    # connect_timeout=5: a hang would surface as a timeout error, not AuthenticationError
    async with Node(cookie="not-the-cookie", connect_timeout=5) as n:
        with pytest.raises(AuthenticationError, match="cookie"):
            await n.rpc(cluster.nodes[0], "erlang", "node", [])
        # and again: a failed attempt leaves nothing half-open behind
        with pytest.raises(AuthenticationError):
            await n.rpc(cluster.nodes[0], "erlang", "node", [])


async def test_digest_rule_agrees_with_erlang_for_many_cookies(
    node: Node, cluster: LocalCluster
) -> None:
    """Our handshake digest against Erlang's own arithmetic (as dist_util:gen_digest/2 does
    it, on an atom cookie), for cookies with digits, punctuation and latin-1 letters."""
    rng = random.Random(25)
    alphabet = [chr(c) for c in range(0x21, 0x100)]
    pairs = [
        ("".join(rng.choices(alphabet, k=rng.randint(1, 30))), rng.randrange(2**32))
        for _ in range(300)
    ]
    pairs += [("secret", 0), ("0", 10), ("42", 4242), ("Köln-1", 1)]
    exprs = await parse(
        node,
        cluster.nodes[0],
        "[erlang:md5([atom_to_list(list_to_atom(C)) | integer_to_list(N)]) || {C, N} <- Ps].",
    )
    bindings = [(Atom("Ps"), [(list(map(ord, c)), n) for c, n in pairs])]
    _, digests, _ = await node.rpc(cluster.nodes[0], "erl_eval", "exprs", [exprs, bindings])
    assert digests == [digest(n, c) for c, n in pairs]


async def test_handshake_with_a_cookie_that_is_not_hex() -> None:
    """The clusters the tests start use hex cookies; here one with letters, digits and
    punctuation, set on the Erlang side with -setcookie."""
    cookie = "Zq-42_cookie.9x"
    with LocalCluster(n=1, cookie=cookie) as c:
        async with Node(cookie=cookie, connect_timeout=10) as n:
            assert await n.rpc(c.nodes[0], "erlang", "get_cookie", []) == Atom(cookie)


async def test_rpc_timeout(node: Node, cluster: LocalCluster) -> None:
    with pytest.raises(RpcTimeout):
        await node.rpc(cluster.nodes[0], "timer", "sleep", [5000], timeout=0.3)
    # the connection is still good, the late reply is dropped
    assert await node.rpc(cluster.nodes[0], "erlang", "node", []) == Atom(cluster.nodes[0])


async def test_cancelled_call_leaves_the_node_usable(node: Node, cluster: LocalCluster) -> None:
    task = asyncio.ensure_future(node.rpc(cluster.nodes[0], "timer", "sleep", [2000]))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await node.rpc(cluster.nodes[0], "erlang", "+", [1, 2]) == 3


def test_calls_from_zarr_sync_and_another_threads_loop_at_once(cluster: LocalCluster) -> None:
    node = Node(cookie=cluster.cookie)
    peer = cluster.nodes[0]
    results: dict[str, object] = {}

    async def many(tag: str) -> list[int]:
        sums = await asyncio.gather(*(node.rpc(peer, "erlang", "+", [i, 1]) for i in range(200)))
        return [int(x) for x in sums]

    def in_thread() -> None:
        results["thread"] = asyncio.run(many("thread"))

    thread = threading.Thread(target=in_thread)
    thread.start()
    results["zarr"] = zarr.core.sync.sync(many("zarr"))
    thread.join()
    expected = [i + 1 for i in range(200)]
    assert results == {"thread": expected, "zarr": expected}
    zarr.core.sync.sync(node.close())


async def test_erlang_process_sends_to_our_mailbox(node: Node, cluster: LocalCluster) -> None:
    proc = node.process()
    await node.rpc(cluster.nodes[0], "erlang", "send", [proc.pid, (Atom("hello"), b"x")])
    assert await proc.receive(timeout=5) == (Atom("hello"), b"x")
    with pytest.raises(TimeoutError):
        await proc.receive(timeout=0.1)


async def test_registered_name_send_both_ways(node: Node, cluster: LocalCluster) -> None:
    peer = cluster.nodes[0]
    proc = node.process("pz_inbox")
    await node.rpc(peer, "erlang", "send", [(Atom("pz_inbox"), Atom(node.name)), 42])
    assert await proc.receive(timeout=5) == 42
    # REG_SEND the other way: to a process registered on the peer
    await spawn_eval(
        node, peer, "register(pz_echo, self()), receive {From, Msg} -> From ! {echo, Msg} end."
    )
    await asyncio.sleep(0.2)
    await proc.send(("pz_echo", peer), (proc.pid, b"ping"))
    assert await proc.receive(timeout=5) == (Atom("echo"), b"ping")
    await proc.close()


async def test_monitor_and_link_remote_process(node: Node, cluster: LocalCluster) -> None:
    peer = cluster.nodes[0]
    proc = node.process()
    target = await node.rpc(peer, "erlang", "spawn", [Atom("timer"), Atom("sleep"), [60000]])
    ref = await proc.monitor(target)
    await proc.link(target)
    await asyncio.sleep(0.1)  # signals are ordered per connection; rpc goes through rex
    await node.rpc(peer, "erlang", "exit", [target, Atom("boom")])
    got = {await proc.receive(timeout=5), await proc.receive(timeout=5)}
    assert got == {
        (Atom("DOWN"), ref, Atom("process"), target, Atom("boom")),
        (Atom("EXIT"), target, Atom("boom")),
    }


async def test_erlang_links_and_monitors_our_process(node: Node, cluster: LocalCluster) -> None:
    """Erlang processes linked to / monitoring our pid hear about it when it exits."""
    peer = cluster.nodes[0]
    proc = node.process()
    report = node.process()
    await spawn_eval(
        node,
        peer,
        "process_flag(trap_exit, true), link(Target), Report ! linked,"
        " receive {'EXIT', Target, Why} -> Report ! {exit, Why} end.",
        Target=proc.pid,
        Report=report.pid,
    )
    await spawn_eval(
        node,
        peer,
        "Ref = erlang:monitor(process, Target), Report ! monitoring,"
        " receive {'DOWN', Ref, process, Target, Why} -> Report ! {down, Why} end.",
        Target=proc.pid,
        Report=report.pid,
    )
    assert {await report.receive(timeout=5), await report.receive(timeout=5)} == {
        Atom("linked"),
        Atom("monitoring"),
    }
    await proc.close(Atom("done"))
    got = {await report.receive(timeout=5), await report.receive(timeout=5)}
    assert got == {(Atom("exit"), Atom("done")), (Atom("down"), Atom("done"))}
    await report.close()


async def test_monitoring_a_dead_pid_gives_noproc(node: Node, cluster: LocalCluster) -> None:
    peer = cluster.nodes[0]
    proc = node.process()
    target = await node.rpc(peer, "erlang", "spawn", [Atom("erlang"), Atom("node"), []])
    await asyncio.sleep(0.1)
    ref = await proc.monitor(target)
    assert await proc.receive(timeout=5) == (
        Atom("DOWN"),
        ref,
        Atom("process"),
        target,
        Atom("noproc"),
    )


async def test_peer_killed_during_a_call_fails_it_with_nodedown() -> None:
    with LocalCluster(n=1) as c:
        async with Node(cookie=c.cookie) as n:
            peer = c.nodes[0]
            assert await n.rpc(peer, "erlang", "node", []) == Atom(peer)
            call = asyncio.ensure_future(n.rpc(peer, "timer", "sleep", [30000], timeout=10))
            await asyncio.sleep(0.2)
            c.kill(0)
            # NodeDown rather than RpcTimeout: it came well before the 10 s timeout
            with pytest.raises(NodeDown, match="outcome unknown"):
                await call
            c.restart(0)
            # the same Node reconnects to the restarted peer
            assert await n.rpc(peer, "erlang", "node", []) == Atom(peer)


@pytest.mark.slow
async def test_silent_peer_is_detected_by_ticks_and_we_keep_the_peer_alive() -> None:
    with LocalCluster(n=1, ticktime=4) as c:
        async with Node(cookie=c.cookie, tick_time=4) as n:
            peer = c.nodes[0]
            await n.connect(peer)
            first = await n.rpc(peer, "erlang", "nodes", [Atom("hidden")])
            # idle for longer than the peer's tick time: our ticks keep the connection up
            await asyncio.sleep(6)
            assert await n.rpc(peer, "erlang", "nodes", [Atom("hidden")]) == first
            proc = c[0].process
            os.kill(proc.pid, 19)  # SIGSTOP: the socket stays open, ticks stop
            try:
                with pytest.raises(NodeDown, match="no ticks"):
                    await n.rpc(peer, "timer", "sleep", [1], timeout=20)
            finally:
                os.kill(proc.pid, 18)  # SIGCONT


async def test_failed_connection_leaves_no_unretrieved_errors(
    cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed connection attempt's error goes to its calls; nothing is left for asyncio to
    log from a finalizer ('exception was never retrieved')."""
    import gc

    async with Node(cookie=cluster.cookie) as n:
        for _ in range(3):
            with pytest.raises(NodeUnreachable):
                await n.rpc(f"nosuchnode@{cluster.host}", "erlang", "node", [])
    gc.collect()
    await asyncio.sleep(0.1)
    gc.collect()
    assert "never retrieved" not in caplog.text


@pytest.mark.slow
async def test_idle_connection_survives_a_peer_with_a_short_ticktime() -> None:
    """The peer's net_ticktime is not ours to know: our ticks keep its view of us alive."""
    with LocalCluster(n=1, ticktime=4) as c:
        async with Node(cookie=c.cookie) as n:  # our own tick_time stays the default 60 s
            peer = c.nodes[0]
            await n.connect(peer)
            conn = n._peers.connection(peer)
            await asyncio.sleep(7)  # idle longer than the peer's tick time
            assert await n.rpc(peer, "erlang", "node", []) == Atom(peer)
            assert n._peers.connection(peer) is conn  # the same connection, never dropped


async def test_large_reply_binaries_as_views_on_request(node: Node, cluster: LocalCluster) -> None:
    peer = cluster.nodes[1]
    blob = os.urandom(2 * 1024 * 1024)
    view = await node.rpc(peer, "erlang", "hd", [[(Atom("ok"), blob)]], copy_binaries=False)
    assert isinstance(view[1], memoryview) and view[1].readonly and view[1] == blob
    copied = await node.rpc(peer, "erlang", "hd", [[(Atom("ok"), blob)]])
    assert type(copied[1]) is bytes and copied[1] == blob
    small = await node.rpc(peer, "erlang", "hd", [[b"abc"]], copy_binaries=False)
    assert type(small) is bytes and small == b"abc"  # small replies: bytes either way


async def test_deeply_nested_large_reply_fails_only_its_call(
    node: Node, cluster: LocalCluster
) -> None:
    peer = cluster.nodes[0]
    deep: Any = os.urandom(1 << 20)
    for _ in range(3000):
        deep = [deep]
    other = asyncio.ensure_future(node.rpc(peer, "timer", "sleep", [300]))
    try:
        result = await node.rpc(peer, "erlang", "hd", [[deep]])
    except PyrlangZarrError:
        pass  # too deep to copy into bytes: a clean error for this call
    else:
        depth = 0
        while isinstance(result, list):
            result, depth = result[0], depth + 1
        assert depth == 3000 and len(result) == 1 << 20
    assert await other == Atom("ok")  # the connection, and calls on it, are unharmed
    assert await node.rpc(peer, "erlang", "node", []) == Atom(peer)


# -- without a cluster: signals as typed events, the thread, the shared nodes ---------------
async def test_signals_reach_our_processes_as_a_trapping_process_sees_them() -> None:
    async with Node("pz-signals@host", cookie="x") as n:
        proc = n.process("pz_named")
        them = Pid(Atom("a@host"), 1, 0, 7)
        nobody = Pid(Atom("pz-signals@host"), 99999, 0, n.creation)
        back = SentBack()
        ref = n.make_ref()
        signals = n._processes
        signals.on_signal(back, C.Link(them, proc.pid))
        signals.on_signal(back, C.Link(them, nobody))
        signals.on_signal(back, C.MonitorP(them, Atom("pz_named"), ref))
        signals.on_signal(back, C.MonitorP(them, Atom("pz_nobody"), ref))
        signals.on_signal(back, C.UnlinkId(3, them, proc.pid))
        assert proc.links == set() and proc.monitored_by == {ref: them}
        assert back.sent == [
            (C.EXIT, nobody, them, Atom("noproc")),
            (C.MONITOR_P_EXIT, Atom("pz_nobody"), them, ref, Atom("noproc")),
            (C.UNLINK_ID_ACK, 3, proc.pid, them),
        ]
        signals.on_signal(back, C.Exit2(them, proc.pid, Atom("kill")))
        assert await proc.receive(timeout=1) == (Atom("EXIT"), them, Atom("kill"))
        down = n.make_ref()
        proc.monitoring[down] = them
        signals.on_signal(back, C.MonitorPExit(them, proc.pid, down, Atom("gone")))
        signals.on_signal(back, C.MonitorPExit(them, proc.pid, down, Atom("twice")))
        assert await proc.receive(timeout=1) == (
            Atom("DOWN"),
            down,
            Atom("process"),
            them,
            Atom("gone"),
        )
        with pytest.raises(TimeoutError):
            await proc.receive(timeout=0.05)
        await proc.close()
        assert n.process("pz_named").pid != proc.pid  # a closed process frees its name


async def test_start_io_thread_returns_the_nodes_running_loop() -> None:
    n = Node(cookie="x")
    loop = n.start_io_thread()
    assert loop.is_running() and loop is not asyncio.get_running_loop()
    assert n.start_io_thread() is loop  # started once
    await n.close()
    assert n.closed
    with pytest.raises(RuntimeError, match="closed"):
        n.start_io_thread()


async def test_close_shared_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_registry, "_nodes", {})
    first = shared_node("cookie-a")
    assert shared_node("cookie-a") is first and shared_node("cookie-b") is not first
    first.start_io_thread()
    await close_shared_nodes()
    assert first.closed and node_registry._nodes == {}
    again = shared_node("cookie-a")
    assert again is not first and not again.closed
    await again.close()
    assert shared_node("cookie-a") is not again  # a node closed directly is replaced too
    await close_shared_nodes()


def test_threads_making_their_first_call_at_once_share_one_io_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Several threads using a fresh node at the same moment start one IO thread between
    them (two would each connect to the same peer, which refuses the second with nok).
    The thread's start is slowed so that every caller arrives while it is starting."""
    from pyrlang_zarr.erldist import node as node_module
    from pyrlang_zarr.erldist.io_thread import IoThread

    started: list[Any] = []

    class SlowStart(IoThread):
        def __init__(self, name: str) -> None:
            started.append(self)
            threading.Event().wait(0.2)
            super().__init__(name)

    monkeypatch.setattr(node_module, "IoThread", SlowStart)
    node = Node(cookie="pz-one-thread")
    loops: list[asyncio.AbstractEventLoop] = []
    threads = [
        threading.Thread(target=lambda: loops.append(node.start_io_thread())) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(started) == 1 and len(loops) == 4 and len(set(loops)) == 1
    finally:
        asyncio.run(node.close())
