"""Replies read on the loop waiting for them (``erldist/readers.py``), and what that must not
cost: another loop's calls, unsolicited messages once the reading loop is gone, descriptors.

The first test drives :class:`Readers` over a socket pair (no Erlang); the rest run against
a real node.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pyrlang_zarr import Atom, Node
from pyrlang_zarr.erldist import control as C
from pyrlang_zarr.erldist.readers import Readers
from pyrlang_zarr.testing.cluster import LocalCluster


class LoopThread:
    """An event loop running in a thread of its own (a caller's loop)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` on the loop's thread; its result."""

        async def call() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def _open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    yield a, b
    a.close()
    b.close()


async def test_the_owner_reads_others_let_go_and_closing_frees_the_descriptor(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    io_loop = asyncio.get_running_loop()  # this test's loop plays the IO loop
    reads: list[tuple[str, bytes]] = []
    got = threading.Event()

    def read_once(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        data = sock.recv(1024)
        reads.append((threading.current_thread().name, data))
        got.set()

    caller = LoopThread()
    try:
        readers = Readers(ours, io_loop, read_once, lambda loop: False)
        dup = readers._sock  # the registrations' own descriptor of the socket
        assert dup.fileno() not in (-1, ours.fileno())
        # the IO loop owns the socket until a caller claims it
        peer.sendall(b"one")
        while not reads:
            await asyncio.sleep(0.01)
        assert reads.pop() == (threading.current_thread().name, b"one")
        got.clear()
        caller.run(readers.claim, caller.loop)
        assert readers.owner is caller.loop
        # the caller's thread is busy: the IO loop wakes, sees it no longer owns the socket
        # and lets go without reading; the caller reads once it is free
        release = threading.Event()
        caller.loop.call_soon_threadsafe(release.wait, 10)
        peer.sendall(b"two")
        for _ in range(500):
            if io_loop not in readers._registered:
                break
            await asyncio.sleep(0.01)
        assert io_loop not in readers._registered
        assert reads == []
        release.set()
        assert await asyncio.to_thread(got.wait, 10)
        assert reads == [(caller.thread.name, b"two")]
        # closing shuts the socket down: the caller's loop lets go, the descriptor closes
        readers.close()
        for _ in range(500):
            if dup.fileno() == -1:
                break
            await asyncio.sleep(0.01)
        assert dup.fileno() == -1
        assert readers._registered == set()
    finally:
        caller.close()


def test_a_forked_child_running_an_inherited_loop_leaves_the_socket_to_its_parent(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """The child shares the parent's epoll instance: it neither reads nor unregisters (that
    would deafen the parent's loop), and the parent's loop still reads."""
    ours, peer = pair
    io = LoopThread()
    loop = asyncio.new_event_loop()  # a caller's loop, run now and then (synchronous code)
    reads: list[tuple[int, bytes]] = []

    def read_once(_: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        reads.append((os.getpid(), sock.recv(100)))

    try:
        readers = io.run(Readers, ours, io.loop, read_once, lambda other: other is loop)

        async def claim() -> None:
            readers.claim(loop)

        loop.run_until_complete(claim())
        pid = os.fork()
        if pid == 0:  # the child runs the loop it inherited while the peer sends
            code = 1
            try:
                peer.send(b"x")
                loop.run_until_complete(asyncio.sleep(0.3))
                code = 0 if not reads else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0  # the child read nothing

        async def until_read() -> None:
            for _ in range(500):
                if reads:
                    return
                await asyncio.sleep(0.01)

        loop.run_until_complete(until_read())
        assert reads == [(os.getpid(), b"x")]
    finally:
        loop.close()
        io.close()


def test_closing_lets_go_of_an_idle_loop_and_frees_the_descriptor(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A loop registered but not running (synchronous code between two calls) is let go of
    at close: the descriptor does not wait for a loop that may never run again."""
    ours, _ = pair
    io = LoopThread()
    idle = asyncio.new_event_loop()
    try:
        readers = io.run(Readers, ours, io.loop, lambda *_: None, lambda _: False)

        async def claim() -> None:
            readers.claim(idle)

        idle.run_until_complete(claim())
        io.run(readers.close)
        for _ in range(500):  # the IO loop lets go on its next turn
            if readers._sock.fileno() == -1:
                break
            time.sleep(0.01)
        assert readers._sock.fileno() == -1
        assert idle not in readers._registered
    finally:
        idle.close()
        io.close()


@pytest.mark.erlang
async def test_a_message_sent_before_a_reply_is_there_when_the_call_returns(
    cluster: LocalCluster,
) -> None:
    """``rpc(erlang, send, [OurPid, I])``: the peer sends ``I`` to our process, then replies.
    The connection keeps that order: once the call returns, ``I`` is in the mailbox (a reply
    completed where it is read must not overtake a message handed to the IO loop)."""
    peer = cluster.nodes[0]
    async with Node(cookie=cluster.cookie) as node:
        inbox = node.process()
        await node.rpc(peer, "erlang", "node", [])
        for i in range(300):
            assert await node.rpc(peer, "erlang", "send", [inbox.pid, i]) == i
            assert await inbox.receive(timeout=0) == i


@pytest.mark.erlang
async def test_replies_complete_on_the_callers_thread(cluster: LocalCluster) -> None:
    """Sequential calls: every reply is read and completed on the calling loop's thread,
    none by the IO thread (each used to cost a wake-up of both threads)."""
    peer = cluster.nodes[0]
    async with Node(cookie=cluster.cookie) as node:
        await node.rpc(peer, "erlang", "node", [])
        route = node._calls._replies
        assert route is not None and route.deliver is not None and route.deliver_on is not None
        deliver, deliver_on = route.deliver, route.deliver_on
        threads: list[int] = []

        def on_io(event: C.Reply) -> None:
            threads.append(-1)
            deliver(event)

        def on_loop(event: C.Reply, loop: Any) -> None:
            threads.append(threading.get_ident())
            deliver_on(event, loop)

        route.deliver, route.deliver_on = on_io, on_loop
        for i in range(100):
            assert await node.rpc(peer, "erlang", "+", [i, 1]) == i + 1
        assert threads == [threading.get_ident()] * 100


@pytest.mark.erlang
async def test_a_blocked_reading_loop_does_not_hold_another_loops_reply(
    cluster: LocalCluster,
) -> None:
    """Loop B waits on a slow call; loop A then calls (and so owns the socket) and blocks
    its thread. B's reply arrives meanwhile: B reads it itself, before A unblocks (and
    before the IO loop would take the socket back from a silent owner: over a second)."""
    peer = cluster.nodes[0]
    async with Node(cookie=cluster.cookie) as node:
        await node.rpc(peer, "erlang", "node", [])
        b = LoopThread()
        try:
            slow = asyncio.run_coroutine_threadsafe(node.rpc(peer, "timer", "sleep", [200]), b.loop)
            await asyncio.sleep(0.05)  # B's call is out
            assert await node.rpc(peer, "erlang", "node", []) == Atom(peer)  # A owns it now
            conn = node._peers.connection(peer)
            assert conn is not None and conn._readers is not None
            assert conn._readers.owner is asyncio.get_running_loop()
            time.sleep(0.8)  # A's thread blocked: it reads nothing meanwhile
            assert slow.done(), "B's reply waited for the blocked loop"
            assert slow.result() == Atom("ok")
        finally:
            b.close()


@pytest.mark.erlang
async def test_messages_arrive_after_the_reading_loop_closed(cluster: LocalCluster) -> None:
    """A loop makes a call (so reads the socket) and is closed; a message sent to one of our
    processes later still arrives: the IO loop takes the socket back."""
    peer = cluster.nodes[0]
    async with Node(cookie=cluster.cookie) as node:
        inbox = node.process()

        async def ask_for_a_late_message() -> Any:
            return await node.rpc(
                peer, "timer", "send_after", [300, inbox.pid, (Atom("late"), b"hello")]
            )

        await asyncio.to_thread(asyncio.run, ask_for_a_late_message())  # its loop is closed
        assert await inbox.receive(timeout=20) == (Atom("late"), b"hello")
        assert await node.rpc(peer, "erlang", "+", [1, 1]) == 2


@pytest.mark.erlang
async def test_no_descriptor_left_once_the_node_and_its_callers_are_closed(
    cluster: LocalCluster,
) -> None:
    peer = cluster.nodes[0]
    before = _open_fds()
    node = Node(cookie=cluster.cookie)

    async def call() -> Any:
        return await node.rpc(peer, "erlang", "node", [])

    for _ in range(3):  # three loops in turn read the connection, each closed after
        assert await asyncio.to_thread(asyncio.run, call()) == Atom(peer)
    assert await node.rpc(peer, "erlang", "node", []) == Atom(peer)
    await node.close()
    for _ in range(1000):
        if _open_fds() <= before:
            break
        await asyncio.sleep(0.01)
    assert _open_fds() <= before


@pytest.mark.erlang
async def test_what_came_before_a_connections_end_is_handled_before_its_loss(
    cluster: LocalCluster,
) -> None:
    """A caller's loop reads a message, a reply and then the end of the connection while the
    IO loop is busy; a call made meanwhile (through the IO loop) must not declare the peer
    down first: the reply completes its call, the message precedes the DOWN."""
    peer, other = cluster.nodes[0], cluster.nodes[1]
    async with Node(cookie=cluster.cookie) as node:
        inbox = node.process()
        await node.rpc(peer, "erlang", "node", [])
        await inbox.monitor(await node.rpc(peer, "erlang", "whereis", [Atom("rex")]))
        started = threading.Event()

        def busy() -> None:
            started.set()
            time.sleep(1.0)

        node.start_io_thread().call_soon_threadsafe(busy)
        await asyncio.to_thread(started.wait, 10)  # the IO loop is busy for a second
        # a call to a peer not yet connected: handed to the IO loop, whose turn is pending
        connecting = asyncio.ensure_future(node.rpc(other, "erlang", "node", []))
        await asyncio.sleep(0.01)
        sent = asyncio.ensure_future(node.rpc(peer, "erlang", "send", [inbox.pid, Atom("m")]))
        await asyncio.sleep(0.2)
        dropped = asyncio.ensure_future(
            node.rpc(peer, "erlang", "disconnect_node", [Atom(node.name)])
        )
        await asyncio.sleep(0.3)  # this loop read the message, the reply and the end
        after = asyncio.ensure_future(node.rpc(peer, "erlang", "node", []))  # through the IO loop
        results = await asyncio.gather(sent, dropped, after, connecting, return_exceptions=True)
        assert results[0] == Atom("m")  # its reply had arrived: not "outcome unknown"
        assert await inbox.receive(timeout=10) == Atom("m")
        down = await inbox.receive(timeout=10)
        assert type(down) is tuple and down[0] == Atom("DOWN")
