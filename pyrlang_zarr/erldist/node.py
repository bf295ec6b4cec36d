"""The hidden node: connections to peers, remote calls through ``rex``, and our processes.

Every socket lives on the node's own :class:`IoThread`; public coroutines may be awaited from
any event loop in any thread and hand their work over thread-safely. One connection per
peer, made on first use and made again after the peer restarts.

A remote call is a ``gen_server:call`` to the peer's ``rex`` server, sent from one internal
pid with a fresh reference as the tag: many calls are in flight on one connection and each
reply is routed by its reference. When a connection drops, every call in flight on it fails
at once with :class:`NodeDown` (its outcome on the peer is unknown).
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import os
import secrets
import socket
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyrlang_zarr.erldist import control as C
from pyrlang_zarr.erldist import epmd
from pyrlang_zarr.erldist.connection import DistConnection
from pyrlang_zarr.erldist.cookie import resolve_cookie
from pyrlang_zarr.erldist.handshake import ClientHandshake, new_creation
from pyrlang_zarr.erldist.io_thread import IoThread
from pyrlang_zarr.erldist.mailbox import Mailbox, resolve
from pyrlang_zarr.errors import (
    DecodeError,
    HandshakeTimeout,
    NodeDown,
    NodeUnreachable,
    ProtocolError,
    RpcError,
    RpcTimeout,
)
from pyrlang_zarr.term import Atom, ImproperList, Pid, Reference, encode_parts
from pyrlang_zarr.term.format import format_term

log = logging.getLogger(__name__)

_EMPTY = Atom("")
_REX = Atom("rex")
_GEN_CALL = Atom("$gen_call")
_CALL = Atom("call")
_USER = Atom("user")
_BADRPC = Atom("badrpc")
_NORMAL = Atom("normal")
_NOPROC = Atom("noproc")
_NOCONNECTION = Atom("noconnection")
_EXIT = Atom("EXIT")
_DOWN = Atom("DOWN")
_PROCESS = Atom("process")
_DEFAULT = object()
_PROBE = (_CALL, Atom("erlang"), Atom("node"), [], _USER)  # its reply only proves life


def split_node_name(name: str) -> tuple[str, str]:
    """``'alive@host'`` -> ``('alive', 'host')``, with a clear error for anything else."""
    if not isinstance(name, str):
        raise TypeError(
            f"a node name must be a str such as 'node1@host', not {type(name).__name__}"
        )
    alive, sep, host = name.partition("@")
    if not sep or not alive or not host or "@" in host:
        raise ValueError(f"bad node name {name!r}: expected 'name@host'")
    return alive, host


def _local_address_towards(host: str | None) -> str:
    """Our IP address on the route to ``host`` (a UDP connect sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host or "127.0.0.1", 4369))
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def is_long_host(host: str) -> bool:
    """Erlang's rule: a host with a dot (or an IP address) makes a long node name."""
    if "." in host:
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(eq=False, slots=True)
class _Call:
    """A call in flight: its future and the loop that future belongs to."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    peer: str = ""
    kind: str = "send"  # "send", or "M:F/A" of a remote call
    ref: Reference | None = None
    copy: bool = True  # False: large binaries of the reply may stay memoryviews

    @property
    def what(self) -> str:
        return self.kind if self.kind == "send" else f"{self.kind} on {self.peer}"


@dataclass(eq=False)
class _Peer:
    """One peer's connection (or connection attempt), what waits for it, and calls in flight."""

    name: str
    conn: DistConnection | None = None
    connecting: asyncio.Task[None] | None = None
    queue: list[tuple[list[bytes | memoryview], _Call | None]] = field(default_factory=list)
    calls: set[Reference] = field(default_factory=set)


def own_binaries(term: Any) -> Any:
    """``term`` with every ``memoryview`` replaced by ``bytes`` of its own."""
    kind = type(term)
    if kind is memoryview:
        return term.tobytes()
    if kind is tuple:
        return tuple(own_binaries(t) for t in term)
    if kind is list:
        return [own_binaries(t) for t in term]
    if kind is dict:
        return {k: own_binaries(v) for k, v in term.items()}
    if kind is ImproperList:
        return ImproperList(tuple(own_binaries(t) for t in term.elements), own_binaries(term.tail))
    return term


def _resolve_all(results: list[tuple[Any, ...]]) -> None:
    """On a caller's loop: complete the futures of a batch of replies."""
    for fut, value, error in results:
        resolve(fut, value, error)


def _expire(call: _Call, limit: float) -> None:
    """On the caller's loop, when an rpc's time is up."""
    resolve(
        call.future, None, RpcTimeout(f"no reply to {call.what} within {limit} s (outcome unknown)")
    )


class Process:
    """A process of ours: a pid that Erlang code can send to, link to and monitor.

    Messages arrive in :meth:`receive`; exit signals from linked processes arrive as
    ``(Atom('EXIT'), From, Reason)`` and monitor notices as
    ``(Atom('DOWN'), Ref, Atom('process'), From, Reason)``, as for a process trapping exits.
    """

    def __init__(self, node: Node, pid: Pid) -> None:
        self.node = node
        self.pid = pid
        self.mailbox = Mailbox()
        self.links: set[Pid] = set()
        self.monitored_by: dict[Reference, Pid] = {}  # monitors others hold on us
        self.monitoring: dict[Reference, Pid] = {}  # monitors we hold on others
        self.closed = False

    def __repr__(self) -> str:
        return f"<Process {self.pid}>"

    async def receive(self, timeout: float | None = None) -> Any:
        """The next message; ``TimeoutError`` when none arrives within ``timeout`` seconds."""
        return await self.mailbox.get(timeout)

    async def send(self, dest: Pid | tuple[str, str], message: Any) -> None:
        """Send to a pid or to a registered name ``(name, node)``."""
        await self.node.send(dest, message, sender=self.pid)

    async def link(self, pid: Pid) -> None:
        self.links.add(pid)
        await self.node._signal(pid.node, (C.LINK, self.pid, pid))

    async def unlink(self, pid: Pid) -> None:
        self.links.discard(pid)
        await self.node._signal(pid.node, (C.UNLINK, self.pid, pid))

    async def monitor(self, pid: Pid) -> Reference:
        ref = self.node.make_ref()
        self.monitoring[ref] = pid
        await self.node._signal(pid.node, (C.MONITOR_P, self.pid, pid, ref))
        return ref

    async def demonitor(self, ref: Reference) -> None:
        pid = self.monitoring.pop(ref, None)
        if pid is not None:
            await self.node._signal(pid.node, (C.DEMONITOR_P, self.pid, pid, ref))

    async def close(self, reason: Any = _NORMAL) -> None:
        """Exit: linked processes get an exit signal, monitors a DOWN, with ``reason``."""
        if self.closed:
            return
        self.closed = True
        self.node._processes.pop(self.pid, None)
        for pid in self.links:
            await self.node._signal(pid.node, (C.EXIT, self.pid, pid, reason), quiet=True)
        for ref, pid in self.monitored_by.items():
            await self.node._signal(
                pid.node, (C.MONITOR_P_EXIT, self.pid, pid, ref, reason), quiet=True
            )
        self.links.clear()
        self.monitored_by.clear()

    async def __aenter__(self) -> Process:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Node:
    """A hidden Erlang node in this Python process.

    ``name`` is chosen when omitted (``pz-<random>@<this host>``, short or long to match the
    first peer); ``cookie`` comes from the argument, else ``ERLANG_COOKIE``, else
    ``~/.erlang.cookie``. ``rpc_timeout`` is the default timeout of :meth:`rpc` in seconds
    (``None``: wait until the reply or the connection's loss). ``tick_time`` is the peer's
    ``net_ticktime``: a peer silent that long is taken for down. While calls wait on a peer,
    it is probed whenever it is silent, and taken for down after ``liveness_timeout``
    seconds of silence: a peer cut off without a reset (a pulled cable, a partition) fails
    its calls in seconds rather than after a whole tick time.
    """

    def __init__(
        self,
        name: str | None = None,
        cookie: str | None = None,
        *,
        rpc_timeout: float | None = 60.0,
        connect_timeout: float = 10.0,
        tick_time: float = 60.0,
        liveness_timeout: float = 10.0,
    ) -> None:
        if name is not None:
            split_node_name(name)
        for label, value in (
            ("connect_timeout", connect_timeout),
            ("tick_time", tick_time),
            ("liveness_timeout", liveness_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{label} must be a positive number of seconds, got {value!r}")
        if rpc_timeout is not None and not rpc_timeout > 0:
            raise ValueError(f"rpc_timeout must be positive or None, got {rpc_timeout!r}")
        self._cookie = resolve_cookie(cookie)
        self._requested_name = name
        self.rpc_timeout = rpc_timeout
        self.connect_timeout = connect_timeout
        self.tick_time = tick_time
        self.liveness_timeout = liveness_timeout
        self._owner_pid = -1
        self._io: IoThread | None = None
        self._reset()

    def _reset(self) -> None:
        """Fresh runtime state: at first use, and in a child process after ``fork``."""
        self._owner_pid = os.getpid()
        self._io = None
        self._name: str | None = self._requested_name
        self._name_atom: Atom | None = None
        self._creation = new_creation()
        self._ids = itertools.count(1)
        self._peers: dict[str, _Peer] = {}
        self._pending: dict[Reference, _Call] = {}
        self._processes: dict[Pid, Process] = {}
        self._registered: dict[str, Process] = {}
        self._rpc_pid: Pid | None = None
        self._rex_header: list[bytes | memoryview] = []
        self._inbox: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._inbox_scheduled = False
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[Any, ...]]] = {}
        self._closed = False

    def __repr__(self) -> str:  # never the cookie
        return f"<Node {self._name or '(unnamed)'} peers={sorted(self._peers)}>"

    # -- identity -------------------------------------------------------------------------
    @property
    def name(self) -> str | None:
        """Our node name; ``None`` until the first connection or process decides it."""
        return self._name

    @property
    def creation(self) -> int:
        return self._creation

    def _ensure_name(self, long: bool, peer_host: str | None = None) -> str:
        if self._name is None:
            suffix = secrets.token_hex(4)
            if long:
                fqdn = socket.getfqdn()
                host = fqdn if "." in fqdn else _local_address_towards(peer_host)
            else:
                host = socket.gethostname().split(".")[0]
            self._name = f"pz-{suffix}@{host}"
        elif is_long_host(split_node_name(self._name)[1]) != long:
            form = "long" if long else "short"
            raise NodeUnreachable(
                f"this node is {self._name!r}, but the peer uses {form} names; Erlang does not "
                "mix the two forms: use one Node per form (pass name=...)"
            )
        return self._name

    def _our_atom(self) -> Atom:
        """Our name as an atom; decided (short form) if no connection decided it yet."""
        atom = self._name_atom
        if atom is None or atom != self._name:
            atom = self._name_atom = Atom(self._ensure_name(False))
        return atom

    def make_ref(self) -> Reference:
        """A reference unique to this node run (creation and a counter)."""
        n = next(self._ids)
        return Reference(self._our_atom(), self._creation, (n & 0x3FFFF, n >> 18 & 0xFFFFFFFF, 0))

    def _make_pid(self) -> Pid:
        n = next(self._ids)
        return Pid(self._our_atom(), n & 0x7FFF, n >> 15 & 0x1FFF, self._creation)

    # -- lifetime -------------------------------------------------------------------------
    def _runtime(self) -> IoThread:
        if self._owner_pid != os.getpid():
            self._reset()  # forked: the parent's thread and sockets are not ours
        if self._closed:
            raise RuntimeError("this Node is closed")
        io = self._io
        if io is None or not io.alive:
            io = self._io = IoThread(f"pyrlang_zarr-node-{id(self):x}")
            io.loop.call_soon_threadsafe(self._watch_liveness)
        return io

    def _watch_liveness(self) -> None:
        """On the IO loop, every quarter of ``liveness_timeout``: probe silent peers that
        owe us replies; drop those silent for the whole ``liveness_timeout``."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for peer in list(self._peers.values()):
            conn = peer.conn
            if conn is None or not peer.calls:
                continue
            silent = now - conn.last_recv
            if silent > self.liveness_timeout:
                conn.abort(
                    NodeDown(
                        f"{peer.name} sent nothing for {silent:.1f} s while calls were waiting "
                        "(cut off or hung)"
                    )
                )
            elif silent > self.liveness_timeout / 4 and self._rpc_pid is not None:
                probe = (_GEN_CALL, (self._rpc_pid, self.make_ref()), _PROBE)
                try:
                    conn.send_parts(self._rex_header + encode_parts(probe))
                except NodeDown:
                    pass
        if not self._closed:
            loop.call_later(self.liveness_timeout / 4, self._watch_liveness)

    async def start(self) -> Node:
        """Start the node's thread (connections are made on first use)."""
        self._runtime()
        return self

    async def __aenter__(self) -> Node:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection; calls in flight fail with :class:`NodeDown`."""
        io = self._io
        if self._owner_pid != os.getpid() or io is None or not io.alive:
            self._closed = True
            return
        await io.run(self._close_connections())
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(None, io.stop)

    async def _close_connections(self) -> None:
        for peer in list(self._peers.values()):
            if peer.connecting is not None:
                peer.connecting.cancel()
            if peer.conn is not None:
                peer.conn.abort(NodeDown(f"node {self._name} was closed"))
        for proc in list(self._processes.values()):
            proc.closed = True
        await asyncio.sleep(0)

    # -- connections ----------------------------------------------------------------------
    async def connect(self, peer: str) -> None:
        """Connect to ``peer`` now (calls connect on first use anyway)."""
        await self._runtime().run(self._connected(str(peer)))

    @property
    def connected_nodes(self) -> list[str]:
        return sorted(n for n, p in self._peers.items() if p.conn is not None)

    async def _connected(self, name: str) -> DistConnection:
        peer = self._peer(name)
        if peer.conn is None:
            assert peer.connecting is not None
            await asyncio.shield(peer.connecting)
        assert peer.conn is not None
        return peer.conn

    def _peer(self, name: str) -> _Peer:
        peer = self._peers.get(name)
        if peer is None:
            _, host = split_node_name(name)
            self._ensure_name(is_long_host(host), host)  # pids and refs carry our name
            peer = self._peers[name] = _Peer(name)
            task = asyncio.get_running_loop().create_task(self._connect(peer))
            # its error reaches the calls queued on it; mark it seen so no one logs it at GC
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            peer.connecting = task
        return peer

    async def _connect(self, peer: _Peer) -> None:
        try:
            conn = await self._open(peer.name)
        except BaseException as exc:
            self._peers.pop(peer.name, None)
            error = exc if isinstance(exc, Exception) else NodeDown(f"{self._name} closed")
            for _parts, call in peer.queue:
                if call is not None:
                    self._fail(call, error)
            for ref in peer.calls:
                call = self._pending.pop(ref, None)
                if call is not None:
                    self._fail(call, error)
            raise
        peer.conn, peer.connecting = conn, None
        queue, peer.queue = peer.queue, []
        for parts, call in queue:
            self._submit(peer.name, parts, call)

    async def _open(self, name: str) -> DistConnection:
        alive, host = split_node_name(name)
        loop = asyncio.get_running_loop()
        stage = "looking up the node in EPMD"
        transport: asyncio.BaseTransport | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                entry = await epmd.lookup(host, alive, timeout=self.connect_timeout)
                if not entry.lowest_version <= 6 <= entry.highest_version:
                    raise ProtocolError(
                        f"{name} speaks distribution versions {entry.lowest_version}.."
                        f"{entry.highest_version}; we speak 6 (OTP 23 and later)"
                    )
                stage = "connecting"
                sock = await self._tcp_connect(host, entry.port)
                our = self._ensure_name(is_long_host(host), host)
                hs = ClientHandshake(our, name, self._cookie, creation=self._creation)
                stage = "in the handshake"
                transport, conn = await loop.create_connection(
                    lambda: DistConnection(
                        hs,
                        self._on_message,
                        self._on_lost,
                        tick_time=self.tick_time,
                        on_received=self._flush_outbox,
                        views_for=self._is_reply,
                    ),
                    sock=sock,
                )
                await conn.ready
        except TimeoutError:
            if transport is not None:
                transport.abort()
            if stage == "in the handshake":
                raise HandshakeTimeout(
                    f"{name} accepted the connection but did not finish the handshake within "
                    f"{self.connect_timeout} s"
                ) from None
            raise NodeUnreachable(f"timed out {stage} for {name}") from None
        except BaseException:
            if transport is not None:
                transport.abort()
            raise
        log.debug("connected to %s as %s", name, our)
        return conn

    @staticmethod
    async def _tcp_connect(host: str, port: int) -> socket.socket:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        error: OSError | None = None
        for family, type_, proto, _name, addr in infos:
            sock = socket.socket(family, type_, proto)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, addr)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        raise NodeUnreachable(f"cannot connect to {host}:{port}: {error}")

    def _on_lost(self, conn: DistConnection, error: Exception) -> None:
        peer = self._peers.get(conn.peer_name)
        if peer is None or peer.conn is not conn:
            return
        del self._peers[conn.peer_name]
        for ref in peer.calls:
            call = self._pending.pop(ref, None)
            if call is not None:
                self._fail(call, NodeDown(f"{error} (during {call.what}; outcome unknown)"))
        for proc in list(self._processes.values()):
            for pid in [p for p in proc.links if p.node == conn.peer_name]:
                proc.links.discard(pid)
                proc.mailbox.put((_EXIT, pid, _NOCONNECTION))
            for ref, pid in list(proc.monitoring.items()):
                if pid.node == conn.peer_name:
                    del proc.monitoring[ref]
                    proc.mailbox.put((_DOWN, ref, _PROCESS, pid, _NOCONNECTION))
            for ref, pid in list(proc.monitored_by.items()):
                if pid.node == conn.peer_name:
                    del proc.monitored_by[ref]

    # -- sending --------------------------------------------------------------------------
    def _submit(self, peer_name: str, parts: list[bytes | memoryview], call: _Call | None) -> None:
        """On the IO loop: write now if connected, else queue behind the connection attempt."""
        try:
            peer = self._peer(peer_name)
        except Exception as exc:
            if call is not None:
                self._fail(call, exc)
            return
        if peer.conn is None:
            peer.queue.append((parts, call))
            return
        try:
            peer.conn.send_parts(parts)
        except NodeDown as exc:
            if call is not None:
                self._fail(call, exc)
            return
        if call is not None:  # a send: done once written
            self._succeed(call, None)

    def _succeed(self, call: _Call, value: Any) -> None:
        self._complete(call, value, None)

    def _fail(self, call: _Call, error: BaseException) -> None:
        self._complete(call, None, error)

    def _complete(self, call: _Call, value: Any, error: BaseException | None) -> None:
        """On the IO loop. Results for other loops are sent once per loop iteration, all of
        a loop's together: one wake-up of that loop however many replies arrived."""
        io_loop = asyncio.get_running_loop()
        if call.loop is io_loop:
            resolve(call.future, value, error)
            return
        box = self._outbox.get(call.loop)
        if box is None:
            if not self._outbox:
                io_loop.call_soon(self._flush_outbox)
            box = self._outbox[call.loop] = []
        box.append((call.future, value, error))

    def _flush_outbox(self) -> None:
        outbox, self._outbox = self._outbox, {}
        for loop, results in outbox.items():
            try:
                loop.call_soon_threadsafe(_resolve_all, results)
            except RuntimeError:  # that caller's loop is closed: nobody waits any more
                pass

    def _to_io(self, io: IoThread, fn: Callable[..., None], *args: Any) -> None:
        """Hand ``fn(*args)`` to the IO loop from another thread; calls made in a burst
        share one wake-up of the IO thread."""
        self._inbox.append((fn, args))
        if not self._inbox_scheduled:
            self._inbox_scheduled = True
            try:
                io.loop.call_soon_threadsafe(self._drain_inbox)
            except RuntimeError:
                self._inbox_scheduled = False
                raise NodeDown(f"node {self._name} is closed") from None

    def _drain_inbox(self) -> None:
        self._inbox_scheduled = False
        inbox = self._inbox
        while inbox:
            fn, args = inbox.popleft()
            try:
                fn(*args)
            except Exception:  # each handed-over function fails its own call
                log.exception("error handing a call to the node's loop")
        for peer in self._peers.values():  # the batch's packets leave now, not a turn later
            if peer.conn is not None:
                peer.conn.flush()

    async def send(
        self, dest: Pid | tuple[str, str], message: Any, *, sender: Pid | None = None
    ) -> None:
        """Send ``message`` to a pid or to a registered name ``(name, node)``.

        Returns once the message is written to the connection (Erlang gives no delivery
        receipt); raises :class:`NodeUnreachable` if the node cannot be reached.
        """
        if isinstance(dest, Pid):
            node = str(dest.node)
            control: tuple[Any, ...] = (C.SEND, _EMPTY, dest)
        elif isinstance(dest, tuple) and len(dest) == 2:
            reg, node = str(dest[0]), str(dest[1])
            split_node_name(node)
            control = (C.REG_SEND, sender or self._make_pid(), _EMPTY, Atom(reg))
        else:
            raise TypeError(f"send() needs a Pid or a (name, node) tuple, not {dest!r}")
        if node == self._name:
            self._deliver_local(control, message)
            return
        parts = encode_parts(control) + encode_parts(message)
        await self._send_parts(node, parts)

    async def _signal(self, node: str, control: tuple[Any, ...], *, quiet: bool = False) -> None:
        """Send a control message with no message part (link, monitor, exit signals)."""
        if str(node) == self._name:
            return
        try:
            await self._send_parts(str(node), encode_parts(control))
        except (NodeDown, NodeUnreachable):
            if not quiet:
                raise

    async def _send_parts(self, node: str, parts: list[bytes | memoryview]) -> None:
        io = self._runtime()
        loop = asyncio.get_running_loop()
        call = _Call(loop, loop.create_future(), node)
        if loop is io.loop:
            self._submit(node, parts, call)
        else:
            self._to_io(io, self._submit, node, parts, call)
        await call.future

    # -- remote calls ---------------------------------------------------------------------
    async def rpc(
        self,
        peer: str,
        module: str,
        function: str,
        args: Sequence[Any] = (),
        *,
        timeout: float | object | None = _DEFAULT,
        copy_binaries: bool = True,
    ) -> Any:
        """``apply(module, function, args)`` on ``peer``, through its ``rex`` server.

        Returns the decoded result. With ``copy_binaries=False`` binaries of a large reply
        may come as read-only ``memoryview``s of the received packet instead of ``bytes``
        (no copy of multi-MB chunk data). Raises :class:`RpcError` for ``{badrpc, Reason}``,
        :class:`NodeDown` if the connection drops first, :class:`RpcTimeout` after
        ``timeout`` seconds (default: the node's ``rpc_timeout``). After a timeout or a
        cancellation the late reply is dropped; the call may still have run on the peer.
        """
        peer = str(peer)
        split_node_name(peer)
        if not isinstance(module, str) or not isinstance(function, str):
            raise TypeError(f"rpc module and function must be str, got {module!r}, {function!r}")
        if not isinstance(args, list | tuple):
            raise TypeError(
                f"rpc args must be a list or tuple of arguments, not {type(args).__name__}"
            )
        io = self._runtime()
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        call = _Call(loop, fut, peer, f"{module}:{function}/{len(args)}", copy=copy_binaries)
        request = (_CALL, Atom(module), Atom(function), list(args), _USER)
        if loop is io.loop:
            self._start_call(peer, request, call)
        else:
            self._to_io(io, self._start_call, peer, request, call)
        limit = self.rpc_timeout if timeout is _DEFAULT else timeout
        timer = None if limit is None else loop.call_later(limit, _expire, call, limit)
        try:
            result = await fut
        except (RpcTimeout, asyncio.CancelledError):
            self._forget(io, call)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if type(result) is tuple and len(result) == 2 and result[0] == _BADRPC:
            raise RpcError(f"{call.what} failed: {format_term(result[1])}", result[1])
        return result

    def _start_call(self, peer_name: str, request: tuple[Any, ...], call: _Call) -> None:
        """On the IO loop: encode the ``$gen_call`` to ``rex`` and send or queue it."""
        if call.future.done():  # cancelled before it started
            return
        try:
            peer = self._peer(peer_name)
            if self._rpc_pid is None:
                self._rpc_pid = self._make_pid()
                self._rex_header = encode_parts((C.REG_SEND, self._rpc_pid, _EMPTY, _REX))
            ref = call.ref = self.make_ref()
            parts = self._rex_header + encode_parts((_GEN_CALL, (self._rpc_pid, ref), request))
        except Exception as exc:
            self._fail(call, exc)
            return
        self._pending[ref] = call
        peer.calls.add(ref)
        self._submit(peer_name, parts, None)

    def _forget(self, io: IoThread, call: _Call) -> None:
        def forget() -> None:
            if call.ref is None:
                return
            self._pending.pop(call.ref, None)
            p = self._peers.get(call.peer)
            if p is not None:
                p.calls.discard(call.ref)

        if io.in_thread():
            forget()
        else:
            try:
                io.loop.call_soon_threadsafe(forget)
            except RuntimeError:
                pass

    # -- receiving ------------------------------------------------------------------------
    def _on_message(
        self, conn: DistConnection, control: tuple[Any, ...], message: Any, views: bool = False
    ) -> None:
        op = control[0]
        try:
            if self._is_reply(control):
                self._on_reply(conn, message, views)
            elif op in C.SENDS_TO_PID or op in (C.REG_SEND, C.REG_SEND_TT):
                self._deliver_local(control, message)
            else:
                self._on_signal(conn, op, control, message)
        except (IndexError, TypeError, ValueError) as exc:
            log.debug("ignored control message %r from %s: %s", control, conn.peer_name, exc)

    def _on_reply(self, conn: DistConnection, message: Any, views: bool) -> None:
        if not (type(message) is tuple and len(message) == 2):
            return
        ref = message[0]
        call = self._pending.pop(ref, None)
        if call is None:
            return  # timed out or cancelled: dropped
        peer = self._peers.get(conn.peer_name)
        if peer is not None:
            peer.calls.discard(ref)
        result = message[1]
        if views and call.copy:
            try:
                result = own_binaries(result)
            except RecursionError:
                self._fail(call, DecodeError(f"reply to {call.what} is nested too deep to copy"))
                return
        self._succeed(call, result)

    def _is_reply(self, control: tuple[Any, ...]) -> bool:
        """A message to our rpc pid: the only kind whose large binaries may stay views."""
        return len(control) > 2 and control[0] in C.SENDS_TO_PID and control[2] == self._rpc_pid

    def _deliver(self, to: Any, message: Any) -> None:
        proc = self._processes.get(to) if isinstance(to, Pid) else None
        if proc is not None:
            proc.mailbox.put(message)

    def _deliver_local(self, control: tuple[Any, ...], message: Any) -> None:
        """A SEND (to a pid) or REG_SEND (to a registered name) into one of our mailboxes."""
        if control[0] in C.SENDS_TO_PID:
            self._deliver(control[2], message)
        else:
            proc = self._registered.get(str(control[3]))
            if proc is not None:
                proc.mailbox.put(message)

    def _on_signal(self, conn: DistConnection, op: int, ctl: tuple[Any, ...], message: Any) -> None:
        if op == C.LINK:
            sender, to = ctl[1], ctl[2]
            proc = self._processes.get(to)
            if proc is None:
                conn.send((C.EXIT, to, sender, _NOPROC), has_message=False)
            else:
                proc.links.add(sender)
        elif op in (C.UNLINK, C.UNLINK_ID):
            sender, to = (ctl[1], ctl[2]) if op == C.UNLINK else (ctl[2], ctl[3])
            proc = self._processes.get(to)
            if proc is not None:
                proc.links.discard(sender)
            if op == C.UNLINK_ID:
                conn.send((C.UNLINK_ID_ACK, ctl[1], to, sender), has_message=False)
        elif (
            op in C.EXITS_WITH_REASON
            or op in C.EXITS_WITH_PAYLOAD
            or op
            in (
                C.EXIT_TT,
                C.EXIT2_TT,
            )
        ):
            sender, to = ctl[1], ctl[2]
            if op in C.EXITS_WITH_PAYLOAD:
                reason = message
            else:
                reason = ctl[4] if op in (C.EXIT_TT, C.EXIT2_TT) else ctl[3]
            proc = self._processes.get(to)
            if proc is not None:
                proc.links.discard(sender)
                proc.mailbox.put((_EXIT, sender, reason))
        elif op == C.MONITOR_P:
            sender, to, ref = ctl[1], ctl[2], ctl[3]
            proc = self._processes.get(to) if isinstance(to, Pid) else self._registered.get(str(to))
            if proc is None:
                conn.send((C.MONITOR_P_EXIT, to, sender, ref, _NOPROC), has_message=False)
            else:
                proc.monitored_by[ref] = sender
        elif op == C.DEMONITOR_P:
            to, ref = ctl[2], ctl[3]
            proc = self._processes.get(to) if isinstance(to, Pid) else self._registered.get(str(to))
            if proc is not None:
                proc.monitored_by.pop(ref, None)
        elif op in (C.MONITOR_P_EXIT, C.PAYLOAD_MONITOR_P_EXIT):
            sender, to, ref = ctl[1], ctl[2], ctl[3]
            reason = message if op == C.PAYLOAD_MONITOR_P_EXIT else ctl[4]
            proc = self._processes.get(to)
            if proc is not None and proc.monitoring.pop(ref, None) is not None:
                proc.mailbox.put((_DOWN, ref, _PROCESS, sender, reason))
        else:
            log.debug("ignored control message %r from %s", ctl, conn.peer_name)

    # -- processes ------------------------------------------------------------------------
    def process(self, name: str | None = None) -> Process:
        """A new process of ours; with ``name``, registered so ``{name, node}`` reaches it."""
        self._runtime()
        if name is not None and name in self._registered:
            raise ValueError(f"a process is already registered as {name!r}")
        proc = Process(self, self._make_pid())
        self._processes[proc.pid] = proc
        if name is not None:
            self._registered[name] = proc
        return proc
