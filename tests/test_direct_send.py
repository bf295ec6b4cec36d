"""Calls written from the caller's own thread: what that path must still guarantee.

Once a peer is connected over plain TCP, a call's packet leaves from the thread that makes
it, without waking the node's IO thread, and its reply is read there too (``readers.py``).
These tests hold the path to the promises of the hand-off it replaces: packets from many
threads never interleave (even when the socket is full), a call completes while the IO
thread is busy, a caller's loop may close mid-call, and a forked child never writes on its
parent's socket.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing as mp
import os
import threading
import uuid
from typing import Any

import pytest

from pyrlang_zarr import Atom, Node
from pyrlang_zarr.erldist.node_registry import shared_node
from pyrlang_zarr.testing.cluster import LocalCluster
from tests.erl import spawn_eval

pytestmark = pytest.mark.erlang


async def _eventually(check: Any, what: str, limit: float = 20.0) -> None:
    """Poll ``check()`` (a coroutine function) until it returns true; fail after ``limit``
    seconds with ``what`` (a bound for a hung run, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not await check():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.02)


async def test_calls_after_the_first_hand_nothing_to_the_io_thread(
    node: Node, cluster: LocalCluster
) -> None:
    peer = cluster.nodes[0]
    assert await node.rpc(peer, "erlang", "node", []) == Atom(peer)  # connects
    handed: list[Any] = []
    to_io = node._handoff.to_io

    def counting(*args: Any) -> None:
        handed.append(args[1])
        to_io(*args)

    node._handoff.to_io = counting  # type: ignore[method-assign,assignment]
    sums = await asyncio.gather(*(node.rpc(peer, "erlang", "+", [i, 1]) for i in range(300)))
    blob = os.urandom(3 << 20)
    md5 = await node.rpc(peer, "erlang", "md5", [blob])
    assert sums == [i + 1 for i in range(300)]
    assert md5 == hashlib.md5(blob).digest()
    assert handed == []  # no wake-up of the IO thread on the way out


async def test_a_call_leaves_and_completes_while_the_io_thread_is_busy(
    cluster: LocalCluster,
) -> None:
    """The caller's loop writes the call and reads its reply: a stuck IO thread delays
    neither (it used to deliver every reply)."""
    peer = cluster.nodes[0]
    key = Atom(f"pz_direct_{uuid.uuid4().hex[:8]}")
    async with Node(cookie=cluster.cookie) as node, Node(cookie=cluster.cookie) as watcher:
        await node.rpc(peer, "erlang", "node", [])
        # an Erlang process that reports to the watcher what it receives by name
        inbox = watcher.process()
        name = f"pz_direct_{uuid.uuid4().hex[:8]}"
        await spawn_eval(
            watcher,
            peer,
            "register(Name, self()), To ! ready, receive M -> To ! {got, M} end.",
            Name=Atom(name),
            To=inbox.pid,
        )
        assert await inbox.receive(timeout=10) == Atom("ready")
        release = threading.Event()
        io_loop = node.start_io_thread()
        io_loop.call_soon_threadsafe(release.wait, 60)  # the IO thread is stuck meanwhile
        try:
            call = asyncio.ensure_future(
                node.rpc(peer, "application", "set_env", [Atom("pz_test"), key, 42])
            )

            async def applied() -> bool:
                got = await watcher.rpc(peer, "application", "get_env", [Atom("pz_test"), key])
                return bool(got == (Atom("ok"), 42))

            await _eventually(applied, "the call did not reach the peer while the IO thread ran")
            await node.send((name, peer), b"sent-while-busy")
            assert await inbox.receive(timeout=10) == (Atom("got"), b"sent-while-busy")
            assert await asyncio.wait_for(call, 10) == Atom("ok")  # the IO thread still stuck
            assert await node.rpc(peer, "erlang", "+", [1, 2]) == 3
        finally:
            release.set()
        await watcher.rpc(peer, "application", "unset_env", [Atom("pz_test"), key])


def test_threads_sending_large_and_small_at_once_never_interleave(
    cluster: LocalCluster,
) -> None:
    """Four threads, each with its own loop, write 4 MiB arguments and bursts of small calls
    on one connection: the socket fills, the rest goes through the transport, and every
    packet arrives whole (a broken stream would drop the connection or corrupt a digest)."""
    peer = cluster.nodes[0]
    node = Node(cookie=cluster.cookie)
    errors: list[BaseException] = []
    blobs = [os.urandom(4 << 20) for _ in range(4)]

    async def work(t: int) -> None:
        for round_ in range(4):
            big = node.rpc(peer, "erlang", "md5", [blobs[(t + round_) % 4]])
            small = [node.rpc(peer, "erlang", "+", [t, i]) for i in range(100)]
            md5, *sums = await asyncio.gather(big, *small)
            assert md5 == hashlib.md5(blobs[(t + round_) % 4]).digest()
            assert sums == [t + i for i in range(100)]

    def in_thread(t: int) -> None:
        try:
            asyncio.run(work(t))
        except BaseException as exc:  # reported below
            errors.append(exc)

    asyncio.run(node.rpc(peer, "erlang", "node", []))
    attempts = node._peers.attempts
    threads = [threading.Thread(target=in_thread, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert node._peers.attempts == attempts  # the one connection carried it all
    asyncio.run(node.close())


def test_a_callers_loop_closed_mid_call_leaves_the_node_working(cluster: LocalCluster) -> None:
    peer = cluster.nodes[0]
    node = Node(cookie=cluster.cookie)
    asyncio.run(node.rpc(peer, "erlang", "node", []))
    loop = asyncio.new_event_loop()
    # a burst: the first call leaves at once, the rest wait for the loop's next turn,
    # which never comes; the first one's reply finds its loop closed
    tasks = [loop.create_task(node.rpc(peer, "timer", "sleep", [200])) for _ in range(5)]
    loop.call_soon(loop.stop)
    loop.run_forever()
    for task in tasks:
        task.cancel()
    loop.close()

    async def after() -> list[int]:
        await asyncio.sleep(0.4)  # the late reply arrives meanwhile, for a closed loop
        return list(
            await asyncio.gather(*(node.rpc(peer, "erlang", "+", [i, 1]) for i in range(50)))
        )

    assert asyncio.run(after()) == [i + 1 for i in range(50)]
    conn = node._peers.connection(peer)
    assert conn is not None and loop not in conn._corks  # nothing kept for the closed loop
    assert node._io is not None and node._io.alive
    asyncio.run(node.close())


def _child_calls(cookie: str, peer: str, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    async def calls() -> list[int]:
        node = shared_node(cookie)
        return list(
            await asyncio.gather(*(node.rpc(peer, "erlang", "+", [i, 1]) for i in range(200)))
        )

    queue.put((asyncio.run(calls()), shared_node(cookie).name))


async def test_forked_child_never_writes_on_the_parents_socket(cluster: LocalCluster) -> None:
    parent = shared_node(cluster.cookie)
    peer = cluster.nodes[0]
    assert await parent.rpc(peer, "erlang", "node", []) == Atom(peer)
    conn = parent._peers.connection(peer)
    assert conn is not None and conn.direct
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_calls, args=(cluster.cookie, peer, queue))
    child.start()
    # the parent keeps calling on its socket while the child calls on its own
    parent_sums = await asyncio.gather(
        *(parent.rpc(peer, "erlang", "+", [i, 2]) for i in range(200))
    )
    result, child_name = await asyncio.to_thread(queue.get, True, 60)
    await asyncio.to_thread(child.join, 30)
    assert child.exitcode == 0
    assert result == [i + 1 for i in range(200)]
    assert parent_sums == [i + 2 for i in range(200)]
    assert parent._peers.connection(peer) is conn and not conn.closed
    # the server saw the child as a node of its own, and still has the parent
    hidden = await parent.rpc(peer, "erlang", "nodes", [Atom("hidden")])
    assert Atom(parent.name) in hidden
    assert child_name != parent.name


async def test_replies_cost_the_io_loop_nothing(node: Node, cluster: LocalCluster) -> None:
    """Replies for a caller's loop are read and completed on that loop: the IO loop handles
    no batch for them (it used to flush one per received batch, and before that schedule an
    extra turn per reply)."""
    peer = cluster.nodes[0]
    node.start_io_thread()
    flushes: list[int] = []
    flush = node._handoff.flush

    def counting() -> None:
        flushes.append(1)
        flush()

    node._handoff.flush = counting  # type: ignore[method-assign]
    await node.rpc(peer, "erlang", "node", [])  # connects, with the counting flush in place
    flushes.clear()
    for i in range(100):
        assert await node.rpc(peer, "erlang", "+", [i, 1]) == i + 1
    assert len(flushes) <= 3  # a tick from the peer, handed to the IO loop, may add one
