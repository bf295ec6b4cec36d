"""The hidden node: the public face composing peers, calls, processes and the hand-off.

Every socket is read on the node's own :class:`IoThread`; public coroutines may be awaited
from any event loop in any thread. Over a connected plain TCP peer a call is written from the
caller's thread (``connection.py``); otherwise work is handed over thread-safely
(``handoff.py``). Replies come back through the IO thread either way. One
connection per peer, made on first use and made again after the peer restarts
(``peers.py``); remote calls go through each peer's ``rex`` (``calls.py``); our processes
take part in links and monitors (``processes.py``). The protocol itself is sans-IO
(``session.py``, ``control.py``); this module wires the parts and routes received events.
What the node answers as an Erlang node (``net_kernel``, ``rex``) is in ``services.py``.

Nothing the IO thread holds refers to the :class:`Node` itself (its parts get the settings
object and weak callbacks), so a node dropped without :meth:`Node.close` is collected; its
finalizer then warns (``ResourceWarning``, as an unclosed socket does) and stops its thread,
connections and sockets.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import ssl
import threading
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pyrlang_zarr.erldist import control as C
from pyrlang_zarr.erldist.callers import CallerLoops
from pyrlang_zarr.erldist.calls import Calls, encode_request, own_binaries, rpc_result
from pyrlang_zarr.erldist.connection import DistConnection
from pyrlang_zarr.erldist.cookie import resolve_cookie
from pyrlang_zarr.erldist.handoff import Handoff, Pending
from pyrlang_zarr.erldist.identity import Identity, is_long_host, split_node_name
from pyrlang_zarr.erldist.io_thread import IoThread
from pyrlang_zarr.erldist.options import (
    DEFAULT_EPMD_PORT,
    Settings,
    check_port,
    check_timeout,
    env_port,
)
from pyrlang_zarr.erldist.peers import Peers
from pyrlang_zarr.erldist.processes import Process, Processes
from pyrlang_zarr.erldist.services import NAMES as SERVICE_NAMES
from pyrlang_zarr.erldist.services import Services
from pyrlang_zarr.erldist.session import ReplyRoute
from pyrlang_zarr.erldist.sinks import ReplySink
from pyrlang_zarr.erldist.tls import TlsConfig, resolve_tls
from pyrlang_zarr.errors import NodeDown, NodeUnreachable, RpcTimeout
from pyrlang_zarr.term import Atom, Pid, Reference, atoms, encode_parts

__all__ = ["Node", "Process", "is_long_host", "own_binaries", "split_node_name"]

log = logging.getLogger(__name__)


class _Default(enum.Enum):
    TIMEOUT = "the node's rpc_timeout"


_DEFAULT = _Default.TIMEOUT


@dataclass(eq=False)
class _Runtime:
    """What the finalizer of a dropped node needs, without the node itself."""

    owner_pid: int
    io: IoThread | None = None
    peers: Peers | None = None
    identity: Identity | None = None
    closed: bool = False


def _release(rt: _Runtime) -> None:
    """Finalizer of a node dropped without ``close()``: warn, then stop its connections and
    its IO thread (joined, so its sockets, event loop and threads are gone on return)."""
    io, peers = rt.io, rt.peers
    if rt.closed or io is None or peers is None or rt.owner_pid != os.getpid() or not io.alive:
        return
    rt.closed = True
    name = rt.identity.name if rt.identity is not None else None
    warnings.warn(
        f"Node {name or '(unnamed)'} was dropped without close(); its connections and "
        "thread are closed now. Use 'async with Node(...)' or 'await node.close()'",
        ResourceWarning,
        stacklevel=2,
    )
    error = NodeDown(f"node {name} was dropped without close()")
    try:
        io.loop.call_soon_threadsafe(peers.close, error)
    except RuntimeError:  # its loop closed meanwhile
        return
    io.stop()


def _weakly(node: Node, method: Callable[..., None]) -> Callable[..., None]:
    """``method`` of ``node`` for the IO thread to call, holding ``node`` only weakly."""
    ref = weakref.ref(node)

    def call(*args: Any) -> None:
        target = ref()
        if target is not None:
            method(target, *args)

    return call


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

    ``connect_timeout`` bounds a whole connection attempt (EPMD look-up, TCP connect and
    handshake); an attempt that ran out of time is not repeated for another
    ``connect_timeout``, calls meanwhile failing at once with its error. ``epmd_port`` is
    where EPMD listens on the peers' hosts (default ``$ERL_EPMD_PORT``, else 4369). With
    ``dist_port`` (default ``$ERL_DIST_PORT``) no EPMD is asked at all: every peer listens
    on that port, as with ``erl -erl_epmd_port Port -start_epmd false``.

    ``tls`` joins clusters running TLS distribution (``-proto_dist inet_tls``): a
    :class:`~pyrlang_zarr.erldist.tls.TlsConfig` (certificate, key and CA files), the
    path of the cluster's ``ssl_dist_optfile``, or an ``ssl.SSLContext``. ``None`` (the
    default) reads ``$PYRLANG_ZARR_SSL_DIST_OPTFILE`` if it is set, else speaks plain TCP;
    ``False`` always speaks plain TCP. EPMD stays plain, as in OTP. The node's certificate
    must chain to the CA and name the host part of the node name, as OTP's own client checks
    (see ``tls.py``); the cookie is checked inside TLS as ever.
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
        epmd_port: int | None = None,
        dist_port: int | None = None,
        tls: TlsConfig | ssl.SSLContext | str | os.PathLike[str] | bool | None = None,
    ) -> None:
        if name is not None:
            split_node_name(name)
        # read now: a missing or bad certificate fails here, before anything is sent
        self._tls = resolve_tls(tls)
        self._settings = Settings()
        self.rpc_timeout = rpc_timeout
        self.connect_timeout = connect_timeout
        self.tick_time = tick_time
        self.liveness_timeout = liveness_timeout
        if epmd_port is None:
            epmd_port = env_port("ERL_EPMD_PORT") or DEFAULT_EPMD_PORT
        self.epmd_port = epmd_port
        self.dist_port = env_port("ERL_DIST_PORT") if dist_port is None else dist_port
        self._cookie = resolve_cookie(cookie)
        self._requested_name = name
        self._rt = _Runtime(os.getpid())
        finalizer = weakref.finalize(self, _release, self._rt)
        finalizer.atexit = False  # at exit the daemon thread just ends with the process
        self._reset()

    # -- settings: checked when set, read by the parts at each use ----------------------
    @property
    def rpc_timeout(self) -> float | None:
        return self._settings.rpc_timeout

    @rpc_timeout.setter
    def rpc_timeout(self, value: float | None) -> None:
        self._settings.rpc_timeout = check_timeout("rpc_timeout", value, allow_none=True)

    @property
    def connect_timeout(self) -> float:
        return self._settings.connect_timeout

    @connect_timeout.setter
    def connect_timeout(self, value: float) -> None:
        self._settings.connect_timeout = _positive("connect_timeout", value)

    @property
    def tick_time(self) -> float:
        return self._settings.tick_time

    @tick_time.setter
    def tick_time(self, value: float) -> None:
        self._settings.tick_time = _positive("tick_time", value)

    @property
    def liveness_timeout(self) -> float:
        return self._settings.liveness_timeout

    @liveness_timeout.setter
    def liveness_timeout(self, value: float) -> None:
        self._settings.liveness_timeout = _positive("liveness_timeout", value)

    @property
    def epmd_port(self) -> int:
        return self._settings.epmd_port

    @epmd_port.setter
    def epmd_port(self, value: int) -> None:
        self._settings.epmd_port = check_port("epmd_port", value)

    @property
    def dist_port(self) -> int | None:
        return self._settings.dist_port

    @dist_port.setter
    def dist_port(self, value: int | None) -> None:
        self._settings.dist_port = None if value is None else check_port("dist_port", value)

    def _reset(self) -> None:
        """Fresh runtime state: at first use, and in a child process after ``fork``.

        The parts the IO thread reaches (peers, calls, connections, the hand-off) get the
        settings object and weak callbacks, never the node: a dropped node is collected."""
        self._owner_pid = os.getpid()
        self._io: IoThread | None = None
        # one IO thread even when several threads make their first call at once (two would
        # each connect to the same peer, and the peer refuses the second)
        self._start_lock = threading.Lock()
        self._closed = False
        settings = self._settings
        identity = self._identity = Identity(self._requested_name)
        handoff = self._handoff = Handoff(lambda: peers.flush(), lambda: identity.name)
        replies = ReplyRoute()
        callers = self._callers = CallerLoops()
        peers = self._peers = Peers(
            identity,
            self._cookie,
            settings,
            handoff,
            on_message=_weakly(self, Node._on_message),
            on_down=_weakly(self, Node._on_down),
            views_for=lambda pid: calls.is_reply_to(pid),
            replies=replies,
            tls=self._tls,
            waiting=callers.waiting,
        )
        calls = self._calls = Calls(identity, handoff, peers, settings, replies)
        self._peer_names: set[str] = set()  # peer names checked already
        self._processes = Processes(self, identity, self._signal, reserved=SERVICE_NAMES)
        self._services = Services(identity, self._processes.deliver_named)
        rt = self._rt
        rt.owner_pid, rt.io, rt.peers, rt.identity = self._owner_pid, None, peers, identity
        rt.closed = False

    def __repr__(self) -> str:  # never the cookie
        tls = "" if self._tls is None else " tls"
        return f"<Node {self.name or '(unnamed)'}{tls} peers={sorted(self._peers)}>"

    @property
    def tls(self) -> TlsConfig | ssl.SSLContext | None:
        """What the node's connections speak TLS with (``None``: plain TCP)."""
        return self._tls

    # -- identity -------------------------------------------------------------------------
    @property
    def name(self) -> str | None:
        """Our node name; ``None`` until the first connection or process decides it."""
        return self._identity.name

    @property
    def creation(self) -> int:
        return self._identity.creation

    def make_ref(self) -> Reference:
        """A reference unique to this node run (creation and a counter)."""
        return self._identity.make_ref()

    # -- lifetime -------------------------------------------------------------------------
    def _runtime(self) -> IoThread:
        """The running IO thread, started now if needed (and afresh in a forked child)."""
        if self._owner_pid != os.getpid():
            self._reset()  # forked: the parent's thread and sockets are not ours
        if self._closed:
            raise RuntimeError("this Node is closed")
        io = self._io
        if io is None or not io.alive:
            with self._start_lock:
                io = self._io
                if io is None or not io.alive:
                    io = self._io = self._rt.io = IoThread(f"pyrlang_zarr-node-{id(self):x}")
                    io.loop.call_soon_threadsafe(self._calls.watch_liveness)
        return io

    def start_io_thread(self) -> asyncio.AbstractEventLoop:
        """Start the node's IO thread unless it runs (also in a forked child) and return its
        event loop: where the node's sockets, framing and codecs run (profilers want it).
        Raises ``RuntimeError`` once the node is closed."""
        return self._runtime().loop

    async def start(self) -> Node:
        """Start the node's thread (connections are made on first use)."""
        self._runtime()
        return self

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (a closed node cannot be used again)."""
        return self._closed and self._owner_pid == os.getpid()

    async def __aenter__(self) -> Node:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection; calls in flight fail with :class:`NodeDown`."""
        io = self._io
        if self._owner_pid != os.getpid() or io is None or not io.alive:
            self._closed = self._rt.closed = True
            return
        self._rt.closed = True  # closed here, not by the finalizer
        await io.run(self._close_connections())
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(None, io.stop)

    async def _close_connections(self) -> None:
        self._peers.close(NodeDown(f"node {self.name} was closed"))
        self._processes.close_all()
        await asyncio.sleep(0)

    # -- connections ----------------------------------------------------------------------
    async def connect(self, peer: str) -> None:
        """Connect to ``peer`` now (calls connect on first use anyway)."""
        await self._runtime().run(self._peers.connect(str(peer)))

    @property
    def connected_nodes(self) -> list[str]:
        return self._peers.connected

    def _on_down(self, peer: str, error: BaseException, was_connected: bool) -> None:
        """``peer``'s connection is lost (or never came): its calls fail, and links and
        monitors across it fire with ``noconnection``."""
        self._calls.fail_peer(peer, error, lost=was_connected)
        if was_connected:
            self._processes.peer_lost(peer)

    # -- receiving ------------------------------------------------------------------------
    def _on_message(self, conn: DistConnection, event: C.ControlMessage) -> None:
        """On the IO loop: route one control event from ``conn``'s peer."""
        if type(event) is C.Reply:
            self._calls.on_tagged_reply(event)
        elif type(event) is C.Send:
            if event.to == self._calls.pid:
                self._calls.on_reply(event)
            else:
                self._processes.deliver(event.to, event.message)
        elif type(event) is C.RegSend:
            if self._services.handles(event.name):
                self._services.on_message(conn, event)
            else:
                self._processes.deliver_named(event.name, event.message)
        elif type(event) is C.Undecodable:
            self._on_undecodable(conn, event)
        else:
            self._processes.on_signal(conn, event)

    def _on_undecodable(self, conn: DistConnection, event: C.Undecodable) -> None:
        """A message whose term cannot be decoded: a reply fails its call alone; any other
        is dropped, with a warning. The connection goes on either way."""
        if event.to is not None and event.to == self._calls.pid:
            if self._calls.on_undecodable(event):
                return
        log.warning(
            "dropped a message from %s to %s that cannot be decoded: %s",
            conn.peer_name,
            event.to,
            event.error,
        )

    # -- sending --------------------------------------------------------------------------
    async def send(
        self, dest: Pid | tuple[str, str], message: Any, *, sender: Pid | None = None
    ) -> None:
        """Send ``message`` to a pid or to a registered name ``(name, node)``.

        Returns once the message is written to the connection (Erlang gives no delivery
        receipt); raises :class:`NodeUnreachable` if the node cannot be reached.
        """
        if isinstance(dest, Pid):
            node = str(dest.node)
            if node == self.name:
                self._processes.deliver(dest, message)
                return
            control: tuple[Any, ...] = (C.SEND, atoms.EMPTY, dest)
        elif isinstance(dest, tuple) and len(dest) == 2:
            reg, node = str(dest[0]), str(dest[1])
            split_node_name(node)
            if node == self.name:
                self._processes.deliver_named(reg, message)
                return
            control = (C.REG_SEND, sender or self._identity.make_pid(), atoms.EMPTY, Atom(reg))
        else:
            raise TypeError(f"send() needs a Pid or a (name, node) tuple, not {dest!r}")
        await self._send_parts(node, encode_parts(control) + encode_parts(message))

    async def _signal(self, node: str, control: tuple[Any, ...], *, quiet: bool = False) -> None:
        """Send a control message with no message part (link, monitor, exit signals)."""
        if str(node) == self.name:
            return
        try:
            await self._send_parts(str(node), encode_parts(control))
        except (NodeDown, NodeUnreachable):
            if not quiet:
                raise

    async def _send_parts(self, node: str, parts: list[bytes | memoryview]) -> None:
        io = self._runtime()
        loop = asyncio.get_running_loop()
        if loop is not io.loop:
            conn = self._peers.connection(node)
            if conn is not None and conn.direct:  # written from this thread, now
                conn.send_parts(parts, loop)
                conn.flush_loop(loop)
                return
        call = Pending(loop, loop.create_future(), node)
        if loop is io.loop:
            self._peers.submit(node, parts, call)
        else:
            self._handoff.to_io(io, self._peers.submit, node, parts, call)
        await call.future

    # -- remote calls ---------------------------------------------------------------------
    async def rpc(
        self,
        peer: str,
        module: str,
        function: str,
        args: Sequence[Any] = (),
        *,
        timeout: float | _Default | None = _DEFAULT,
        copy_binaries: bool = True,
        sink: ReplySink | None = None,
    ) -> Any:
        """``apply(module, function, args)`` on ``peer``, through its ``rex`` server.

        Returns the decoded result. With ``copy_binaries=False`` binaries of a large reply
        may come as read-only ``memoryview``s of the received packet instead of ``bytes``
        (no copy of multi-MB chunk data). Raises :class:`RpcError` for ``{badrpc, Reason}``,
        :class:`NodeDown` if the connection drops first, :class:`RpcTimeout` after
        ``timeout`` seconds (default: the node's ``rpc_timeout``). After a timeout or a
        cancellation the late reply is dropped; the call may still have run on the peer.
        A ``sink`` (:mod:`~pyrlang_zarr.erldist.sinks`) is offered a big reply as it
        arrives, on the thread that reads it.
        """
        if type(peer) is not str or peer not in self._peer_names:
            peer = str(peer)
            split_node_name(peer)
            if len(self._peer_names) < 1024:
                self._peer_names.add(peer)
        request = encode_request(module, function, args)
        if timeout is _DEFAULT:
            limit = self._settings.rpc_timeout
        else:  # checked here: a bad timeout must not surface after the call was applied
            limit = check_timeout("timeout", timeout, allow_none=True)
        io = self._io
        if io is None or not io.running or self._closed or self._owner_pid != os.getpid():
            io = self._runtime()
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        call = Pending(
            loop, fut, peer, f"{module}:{function}/{len(args)}", copy=copy_binaries, sink=sink
        )
        state = self._callers.of(loop)
        if loop is io.loop:
            self._calls.start(peer, request, call)
        else:
            conn = self._peers.connection(peer)
            # connected over plain TCP: sent from this thread and its reply read here, no
            # wake-up of the IO thread either way
            if conn is not None and conn.direct:
                conn.claim_reads(loop)
            if (
                conn is None
                or not conn.direct
                or not self._calls.start_direct(conn, request, call, loop, state.inflight == 0)
            ):
                self._handoff.to_io(io, self._calls.start, peer, request, call)
        state.inflight += 1
        if limit is not None:
            state.add_deadline(call, limit)
        try:
            result = await fut
        except (RpcTimeout, asyncio.CancelledError):
            self._calls.forget(io, call)
            raise
        finally:
            state.inflight -= 1
            if limit is not None:
                state.discard_deadline(call)
        return rpc_result(call, result)

    # -- processes ------------------------------------------------------------------------
    def process(self, name: str | None = None) -> Process:
        """A new process of ours; with ``name``, registered so ``{name, node}`` reaches it."""
        self._runtime()
        return self._processes.spawn(name)


def _positive(label: str, value: Any) -> float:
    checked = check_timeout(label, value, allow_none=False)
    assert checked is not None
    return checked
