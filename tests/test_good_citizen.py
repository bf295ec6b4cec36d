"""The hidden node as a good citizen of an Erlang cluster and of its Python process.

Long node names (IP and dotted hosts), what a real node's ``net_kernel`` and ``rex`` answer
(``net_adm:ping`` -> ``pong``, refused ``rpc`` calls), Erlang's environment conventions
(``ERL_EPMD_PORT``, EPMD-less nodes on a fixed port), replies Python cannot represent,
arguments checked before anything is sent, one deadline per connection attempt, unlink with
``UNLINK_ID``, and nodes dropped without ``close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyrlang_zarr import Atom, Node, Pid
from pyrlang_zarr.erldist import control as C
from pyrlang_zarr.erldist import peers as peers_module
from pyrlang_zarr.erldist.identity import Identity
from pyrlang_zarr.errors import DecodeError, HandshakeTimeout, NodeUnreachable
from pyrlang_zarr.mnesia.client import MnesiaClient
from pyrlang_zarr.testing.cluster import LocalCluster, _find_epmd, _find_erl
from tests.erl import spawn_eval
from tests.fakes import SentBack

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def private_epmd(port: int) -> Iterator[None]:
    """An EPMD of our own on ``port`` (in the foreground, stopped by its pid)."""
    epmd = subprocess.Popen(
        [_find_epmd(_find_erl()), "-port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if epmd.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"epmd -port {port} did not start") from None
                time.sleep(0.02)
        yield
    finally:
        epmd.kill()
        epmd.wait()


# -- 1. long node names ---------------------------------------------------------------------
def test_a_name_decided_long_stays_long_in_pids_and_refs() -> None:
    """The cause of the failures against ``-name`` nodes: pids and references asked for a
    short name even after the first (long-named) peer had decided a long one."""
    identity = Identity(None)
    name = identity.ensure_name(True, "127.0.0.1")
    assert "." in name.partition("@")[2]
    assert identity.make_pid().node == Atom(name)
    assert identity.make_ref().node == Atom(name)
    short = Identity(None)
    short.make_pid()  # a process made before any connection: the short form
    with pytest.raises(NodeUnreachable, match=r"a short name, but the peer's host '127\.0\.0\.1'"):
        short.ensure_name(True, "127.0.0.1")


@pytest.mark.erlang
async def test_long_names_against_a_node_named_by_ip() -> None:
    with LocalCluster(n=1, long_host="127.0.0.1") as c:
        peer = c.nodes[0]
        assert peer.endswith("@127.0.0.1")
        async with Node(cookie=c.cookie) as n:
            assert await n.rpc(peer, "erlang", "node", []) == Atom(peer)
            assert n.name is not None and "." in n.name.partition("@")[2]
            proc = n.process()
            await n.rpc(peer, "erlang", "send", [proc.pid, Atom("hello")])
            assert await proc.receive(timeout=10) == Atom("hello")
            seen = c.erl_eval(0, f"lists:member('{n.name}', nodes(hidden)).")
            assert seen.strip() == "true"


def _private_hosts_missing() -> str | None:
    """What a private ``/etc/hosts`` (a mount namespace) needs and this machine lacks."""
    if not sys.platform.startswith("linux"):
        return f"mount namespaces need Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return "a private /etc/hosts (unshare --mount, mount --bind) needs root"
    for tool in ("unshare", "mount", "erl"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not on PATH"
    return None


@pytest.mark.erlang
def test_long_names_with_a_dotted_host_name(tmp_path: Path) -> None:
    """No dotted name resolves to this machine by default (``localhost.localdomain`` does
    not, here), and the machine's ``/etc/hosts`` is not ours to edit: the scenario runs in a
    mount namespace whose ``/etc/hosts`` adds ``pz-long.test``."""
    missing = _private_hosts_missing()
    if missing is not None:
        pytest.skip(f"dotted host name on loopback: {missing}")
    host = "pz-long.test"
    hosts = tmp_path / "hosts"
    hosts.write_text(Path("/etc/hosts").read_text() + f"\n127.0.0.1\t{host}\n")
    script = 'mount --bind "$1" /etc/hosts && exec "$2" -m tests.scenarios.dotted_host "$3"'
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, "sh", str(hosts), sys.executable, host],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    assert result["peer"].endswith("@" + host) and result["answered"] == result["peer"]
    assert result["message"] == "hello" and result["seen_hidden"] == "true"
    assert "." in result["ours"].partition("@")[2]  # our name is long too


# -- 2. what the cluster sends a hidden node ------------------------------------------------
@pytest.mark.erlang
async def test_ping_from_the_cluster_is_pong_and_calls_in_flight_survive(
    node: Node, cluster: LocalCluster
) -> None:
    peer = cluster.nodes[0]
    await node.connect(peer)
    conn = node._peers.connection(peer)
    in_flight = asyncio.ensure_future(node.rpc(peer, "timer", "sleep", [1500]))
    await asyncio.sleep(0.1)
    pinged = await asyncio.to_thread(cluster.erl_eval, 0, f"net_adm:ping('{node.name}').")
    assert pinged.strip() == "pong"
    assert await in_flight == Atom("ok")  # not NodeDown: the cluster did not disconnect us
    assert node._peers.connection(peer) is conn


@pytest.mark.erlang
async def test_calls_into_us_are_refused_promptly_and_the_link_stays(
    node: Node, cluster: LocalCluster
) -> None:
    """``rpc:call`` (erpc: no DFLAG_SPAWN, refused by the caller's node), ``gen_server``
    calls to our ``rex`` and ``net_kernel``, ``rpc:sbcast`` to our process and a monitor on
    our ``net_kernel``: each answered or refused within its 5 s, none dropping the link."""
    peer = cluster.nodes[0]
    inbox = node.process("pz_citizen_box")
    await node.connect(peer)
    conn = node._peers.connection(peer)
    in_flight = asyncio.ensure_future(node.rpc(peer, "timer", "sleep", [2000]))
    me = f"'{node.name}'"
    expr = f"""
        R = erlang:monitor(process, {{net_kernel, {me}}}),
        Down = receive {{'DOWN', R, _, _, Why}} -> {{down, Why}} after 300 -> no_down end,
        erlang:demonitor(R, [flush]),
        {{catch rpc:call({me}, erlang, node, [], 5000),
          catch gen_server:call({{rex, {me}}}, {{call, erlang, node, [], user}}, 5000),
          catch gen_server:call({{net_kernel, {me}}}, longnames, 5000),
          catch gen_server:call({{net_kernel, {me}}}, {{connect, normal, x@y}}, 5000),
          rpc:sbcast([{me}], pz_citizen_box, hello),
          rpc:sbcast([{me}], pz_nobody, hello),
          Down,
          lists:member({me}, nodes(hidden))}}.
    """
    answers = await asyncio.to_thread(cluster.erl_eval, 0, expr)
    assert answers.replace(" ", "") == (
        "{{badrpc,notsup},{badrpc,notsup},false,{error,notsup},"
        f"{{[{me}],[]}},{{[],[{me}]}},no_down,true}}"
    )
    assert await inbox.receive(timeout=5) == Atom("hello")
    assert await in_flight == Atom("ok")
    assert node._peers.connection(peer) is conn
    with pytest.raises(ValueError, match="answers to itself"):
        node.process("rex")


# -- 3. ERL_EPMD_PORT, and nodes without EPMD -----------------------------------------------
@pytest.mark.erlang
async def test_erl_epmd_port_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    with private_epmd(port), LocalCluster(n=1, env={"ERL_EPMD_PORT": str(port)}) as c:
        peer = c.nodes[0]
        assert c[0].short_name not in c.registered_names()  # not in the machine's EPMD
        monkeypatch.setenv("ERL_EPMD_PORT", str(port))
        async with Node(cookie=c.cookie) as n:
            assert n.epmd_port == port
            assert await n.rpc(peer, "erlang", "node", []) == Atom(peer)
        async with Node(cookie=c.cookie, epmd_port=4369, connect_timeout=5) as n:
            with pytest.raises(NodeUnreachable, match="no node named"):
                await n.rpc(peer, "erlang", "node", [])  # the argument wins over the variable


@pytest.mark.erlang
async def test_node_without_epmd_on_a_fixed_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """As Kubernetes deployments run OTP: ``-start_epmd false -erl_epmd_port Port``; no
    EPMD anywhere (``ERL_EPMD_PORT`` points at a closed port for both sides)."""
    port, closed = free_port(), free_port()
    no_epmd = {"ERL_EPMD_PORT": str(closed)}
    with LocalCluster(n=1, dist_port=port, env=no_epmd) as c:
        peer = c.nodes[0]
        assert c[0].short_name not in c.registered_names()
        monkeypatch.setenv("ERL_EPMD_PORT", str(closed))
        async with Node(cookie=c.cookie, connect_timeout=5) as n:
            with pytest.raises(NodeUnreachable, match="EPMD"):
                await n.rpc(peer, "erlang", "node", [])  # the usual way finds no EPMD
        async with Node(cookie=c.cookie, dist_port=port) as n:
            assert await n.rpc(peer, "erlang", "node", []) == Atom(peer)
        monkeypatch.setenv("ERL_DIST_PORT", str(port))  # as EPMD-less deployments set it
        async with Node(cookie=c.cookie) as n:
            assert n.dist_port == port
            assert await n.rpc(peer, "erlang", "node", []) == Atom(peer)
            # and the cluster's side reaches us over that connection
            pinged = c.erl_eval(0, f"net_adm:ping('{n.name}').")
            assert pinged.strip() == "pong"


def test_ports_are_checked_when_the_node_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="epmd_port"):
        Node(cookie="x", epmd_port=0)
    with pytest.raises(TypeError, match="dist_port"):
        Node(cookie="x", dist_port=4370.5)  # type: ignore[arg-type]
    monkeypatch.setenv("ERL_EPMD_PORT", "not-a-port")
    with pytest.raises(ValueError, match=r"\$ERL_EPMD_PORT"):
        Node(cookie="x")


# -- 11. replies Python cannot represent ----------------------------------------------------
@pytest.mark.erlang
async def test_unrepresentable_reply_fails_only_its_call(
    node: Node, cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    peer = cluster.nodes[1]
    await node.connect(peer)
    conn = node._peers.connection(peer)
    in_flight = asyncio.ensure_future(node.rpc(peer, "timer", "sleep", [1000]))
    await asyncio.sleep(0.1)
    unrepresentable = {
        "#{1 => a, 1.0 => b}": [(1, Atom("a")), (1.0, Atom("b"))],
        "#{1 => a, true => b}": [(1, Atom("a")), (True, Atom("b"))],
        "#{#{} => a}": [({}, Atom("a"))],
    }
    for what, pairs in unrepresentable.items():
        with pytest.raises(DecodeError, match=r"maps:from_list/1 .*only this call failed") as info:
            await node.rpc(peer, "maps", "from_list", [pairs])
        assert "MAP_EXT" in str(info.value), what
    # a message to one of our processes that cannot be decoded is dropped, the next arrives
    proc = node.process()
    await spawn_eval(
        node,
        peer,
        "To ! maps:from_list([{1, a}, {1.0, b}]), To ! after_it.",
        To=proc.pid,
    )
    assert await proc.receive(timeout=5) == Atom("after_it")
    assert "cannot be decoded" in caplog.text
    assert await in_flight == Atom("ok")
    assert node._peers.connection(peer) is conn
    assert await node.rpc(peer, "erlang", "node", []) == Atom(peer)


# -- 13. arguments checked before anything is sent ------------------------------------------
@pytest.mark.parametrize(
    "timeout,error",
    [
        ("5", TypeError),
        (True, TypeError),
        (0, ValueError),
        (-1, ValueError),
        (float("nan"), ValueError),
    ],
)
async def test_bad_rpc_timeout_is_refused_before_anything_is_sent(
    timeout: Any, error: type[Exception]
) -> None:
    async with Node(cookie="x") as n:
        with pytest.raises(error, match="timeout"):
            await n.rpc("nobody@127.0.0.1", "mnesia", "dirty_write", [1], timeout=timeout)
        await n._runtime().run(asyncio.sleep(0))  # after whatever was handed to the IO loop
        assert list(n._peers) == [] and n.name is None  # no connection was even started


@pytest.mark.parametrize("timeout", ["5", 0, -2.5, float("nan"), True])
def test_bad_timeouts_are_refused_by_node_and_mnesia_client(timeout: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="timeout"):
        Node(cookie="x", rpc_timeout=timeout)
    with pytest.raises((TypeError, ValueError), match="timeout"):
        MnesiaClient(Node(cookie="x"), "tab", "a@b", timeout=timeout)
    n = Node(cookie="x")
    with pytest.raises((TypeError, ValueError), match="liveness_timeout"):
        n.liveness_timeout = timeout  # settings changed live are checked too
    assert MnesiaClient(n, "tab", "a@b", timeout=None).timeout is None


# -- 14. a frozen node costs one connect_timeout --------------------------------------------
@pytest.mark.erlang
async def test_a_frozen_node_costs_one_connection_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGSTOP: EPMD still answers and the kernel still accepts, the handshake never ends.
    A client that discovers replicas and then calls made two attempts, each waiting out
    ``connect_timeout`` (20 s for 10 s); the attempt that timed out is now held."""
    attempts: list[tuple[str, int]] = []
    real = peers_module._tcp_connect

    async def counted(host: str, port: int) -> socket.socket:
        attempts.append((host, port))
        return await real(host, port)

    monkeypatch.setattr(peers_module, "_tcp_connect", counted)
    with LocalCluster(n=1) as c:
        peer = c.nodes[0]
        os.kill(c[0].os_pid, signal.SIGSTOP)
        try:
            async with Node(cookie=c.cookie, connect_timeout=1.0) as n:
                client = MnesiaClient(n, "pz_frozen", peer, timeout=30)
                with pytest.raises(HandshakeTimeout, match="did not finish the handshake"):
                    await client.read(b"key")
                assert len(attempts) == 1  # discovery and the read share the one attempt
                with pytest.raises(HandshakeTimeout, match="not tried again"):
                    await n.rpc(peer, "erlang", "node", [])
                assert len(attempts) == 1
        finally:
            os.kill(c[0].os_pid, signal.SIGCONT)


async def test_one_deadline_covers_the_epmd_stage_and_a_timed_out_attempt_is_held() -> None:
    """A scripted EPMD on loopback that accepts and never answers: the attempt times out in
    the look-up stage, says so, and is not repeated within ``connect_timeout``."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with Node(cookie="x", epmd_port=port, connect_timeout=0.5) as n:
            with pytest.raises(NodeUnreachable, match="timed out looking up the node in EPMD"):
                await n.rpc("silent@127.0.0.1", "erlang", "node", [])
            with pytest.raises(NodeUnreachable, match="not tried again"):
                await n.rpc("silent@127.0.0.1", "erlang", "node", [])
            assert len(accepted) == 1 and n._peers.attempts == 1
            # a connect_timeout later the peer is tried again
            n._peers._held["silent@127.0.0.1"] = (0.0, NodeUnreachable("old"), 0.0)
            with pytest.raises(NodeUnreachable, match="timed out looking up"):
                await n.rpc("silent@127.0.0.1", "erlang", "node", [])
            assert len(accepted) == 2
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_silent_peer_times_out_in_the_handshake_stage() -> None:
    """A scripted peer on loopback (reached without EPMD) that accepts and says nothing."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with Node(cookie="x", dist_port=port, connect_timeout=0.5) as n:
            with pytest.raises(HandshakeTimeout, match="did not finish the handshake"):
                await n.connect("silent@127.0.0.1")
            with pytest.raises(HandshakeTimeout, match="not tried again"):
                await n.connect("silent@127.0.0.1")
            assert len(accepted) == 1
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


# -- unlink with UNLINK_ID ------------------------------------------------------------------
async def test_unlink_sends_unlink_id_and_drops_exits_until_the_ack() -> None:
    async with Node("pz-unlink@host", cookie="x") as n:
        sent: list[tuple[Any, ...]] = []

        async def record(node: str, control: tuple[Any, ...], *, quiet: bool = False) -> None:
            sent.append(control)

        n._processes.signal = record
        proc = n.process()
        them = Pid(Atom("a@host"), 1, 0, 7)
        await proc.link(them)
        await proc.unlink(them)
        op, unlink_id, sender, to = sent[-1]
        assert (op, sender, to) == (C.UNLINK_ID, proc.pid, them) and unlink_id > 0
        back = SentBack()
        signals = n._processes
        signals.on_signal(back, C.Exit(them, proc.pid, Atom("old_link")))  # in flight: dropped
        signals.on_signal(back, C.UnlinkIdAck(unlink_id, them, proc.pid))
        assert proc.unlinking == {}
        signals.on_signal(back, C.Exit2(them, proc.pid, Atom("kill")))  # exit/2: delivered
        assert await proc.receive(timeout=1) == (Atom("EXIT"), them, Atom("kill"))
        with pytest.raises(TimeoutError):
            await proc.receive(timeout=0.05)


@pytest.mark.erlang
async def test_unlink_id_is_understood_by_a_real_node(node: Node, cluster: LocalCluster) -> None:
    peer = cluster.nodes[0]
    proc = node.process()
    target = await node.rpc(peer, "erlang", "spawn", [Atom("timer"), Atom("sleep"), [30000]])
    await proc.link(target)
    links = Atom("links")
    for _ in range(100):  # LINK and the rpc travel on one connection but to other processes
        if await node.rpc(peer, "erlang", "process_info", [target, links]) == (links, [proc.pid]):
            break
        await asyncio.sleep(0.02)
    await proc.unlink(target)
    for _ in range(100):
        if await node.rpc(peer, "erlang", "process_info", [target, links]) == (links, []):
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("the real node kept the link")
    for _ in range(100):  # its UNLINK_ID_ACK came back
        if not proc.unlinking:
            break
        await asyncio.sleep(0.02)
    assert proc.unlinking == {}
    await node.rpc(peer, "erlang", "exit", [target, Atom("kill")])
    with pytest.raises(TimeoutError):
        await proc.receive(timeout=0.3)  # unlinked: no exit signal


# -- 15. nodes dropped without close() ------------------------------------------------------
def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.erlang
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts fds in /proc/self/fd")
async def test_dropped_nodes_are_closed_by_their_finalizer(cluster: LocalCluster) -> None:
    peer = cluster.nodes[0]
    gc.collect()
    threads, fds = threading.active_count(), _open_fds()

    async def use_and_drop() -> str:
        n = Node(cookie=cluster.cookie)
        assert await n.rpc(peer, "erlang", "node", []) == Atom(peer)
        n.process()
        assert n.name is not None
        return n.name

    names: list[str] = []
    gc.disable()  # the collection below, not an automatic one, must find them
    try:
        for _ in range(10):
            names.append(await use_and_drop())
        assert threading.active_count() >= threads + 10  # unreachable, not yet collected
        with pytest.warns(ResourceWarning, match="dropped without close"):
            gc.collect()
    finally:
        gc.enable()
    assert threading.active_count() == threads
    assert _open_fds() == fds
    # and the peer forgot them: no hidden connection is left ticking
    left = await asyncio.to_thread(
        cluster.erl_eval, 0, f"[N || N <- nodes(hidden), lists:member(N, {names!r})]."
    )
    assert left.strip() == "[]"
