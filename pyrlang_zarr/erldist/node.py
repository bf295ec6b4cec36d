"""The hidden node: the public face composing peers, calls, processes and the hand-off.

Every socket lives on the node's own :class:`IoThread`; public coroutines may be awaited from
any event loop in any thread and hand their work over thread-safely (``handoff.py``). One
connection per peer, made on first use and made again after the peer restarts
(``peers.py``); remote calls go through each peer's ``rex`` (``calls.py``); our processes
take part in links and monitors (``processes.py``). The protocol itself is sans-IO
(``session.py``, ``control.py``); this module wires the parts and routes received events.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
from collections.abc import Sequence
from typing import Any

from pyrlang_zarr.erldist import control as C
from pyrlang_zarr.erldist.calls import Calls, own_binaries, rpc_request, rpc_result
from pyrlang_zarr.erldist.connection import DistConnection
from pyrlang_zarr.erldist.cookie import resolve_cookie
from pyrlang_zarr.erldist.handoff import Handoff, Pending, expire
from pyrlang_zarr.erldist.identity import Identity, is_long_host, split_node_name
from pyrlang_zarr.erldist.io_thread import IoThread
from pyrlang_zarr.erldist.peers import Peers
from pyrlang_zarr.erldist.processes import Process, Processes
from pyrlang_zarr.errors import NodeDown, NodeUnreachable, RpcTimeout
from pyrlang_zarr.term import Atom, Pid, Reference, encode_parts

__all__ = ["Node", "Process", "is_long_host", "own_binaries", "split_node_name"]

log = logging.getLogger(__name__)

_EMPTY = Atom("")


class _Default(enum.Enum):
    TIMEOUT = "the node's rpc_timeout"


_DEFAULT = _Default.TIMEOUT


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
        self._reset()

    def _reset(self) -> None:
        """Fresh runtime state: at first use, and in a child process after ``fork``."""
        self._owner_pid = os.getpid()
        self._io: IoThread | None = None
        self._closed = False
        identity = self._identity = Identity(self._requested_name)
        handoff = self._handoff = Handoff(self._flush_peers, lambda: identity.name)
        self._peers = Peers(
            identity,
            self._cookie,
            self,
            handoff,
            on_message=self._on_message,
            on_down=self._on_down,
            views_for=self._is_reply_to,
        )
        self._calls = Calls(identity, handoff, self._peers, self)
        self._processes = Processes(self, identity, self._signal)

    def __repr__(self) -> str:  # never the cookie
        return f"<Node {self.name or '(unnamed)'} peers={sorted(self._peers)}>"

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
            io = self._io = IoThread(f"pyrlang_zarr-node-{id(self):x}")
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
            self._closed = True
            return
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

    def _flush_peers(self) -> None:
        self._peers.flush()

    def _is_reply_to(self, pid: Pid) -> bool:
        return self._calls.is_reply_to(pid)

    def _on_down(self, peer: str, error: BaseException, was_connected: bool) -> None:
        """``peer``'s connection is lost (or never came): its calls fail, and links and
        monitors across it fire with ``noconnection``."""
        self._calls.fail_peer(peer, error, lost=was_connected)
        if was_connected:
            self._processes.peer_lost(peer)

    # -- receiving ------------------------------------------------------------------------
    def _on_message(self, conn: DistConnection, event: C.ControlMessage) -> None:
        """On the IO loop: route one control event from ``conn``'s peer."""
        if type(event) is C.Send:
            if event.to == self._calls.pid:
                self._calls.on_reply(event)
            else:
                self._processes.deliver(event.to, event.message)
        elif type(event) is C.RegSend:
            self._processes.deliver_named(event.name, event.message)
        else:
            self._processes.on_signal(conn, event)

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
            control: tuple[Any, ...] = (C.SEND, _EMPTY, dest)
        elif isinstance(dest, tuple) and len(dest) == 2:
            reg, node = str(dest[0]), str(dest[1])
            split_node_name(node)
            if node == self.name:
                self._processes.deliver_named(reg, message)
                return
            control = (C.REG_SEND, sender or self._identity.make_pid(), _EMPTY, Atom(reg))
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
        request = rpc_request(module, function, args)
        io = self._runtime()
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        call = Pending(loop, fut, peer, f"{module}:{function}/{len(args)}", copy=copy_binaries)
        if loop is io.loop:
            self._calls.start(peer, request, call)
        else:
            self._handoff.to_io(io, self._calls.start, peer, request, call)
        limit = self.rpc_timeout if isinstance(timeout, _Default) else timeout
        timer = None if limit is None else loop.call_later(limit, expire, call, limit)
        try:
            result = await fut
        except (RpcTimeout, asyncio.CancelledError):
            self._calls.forget(io, call)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        return rpc_result(call, result)

    # -- processes ------------------------------------------------------------------------
    def process(self, name: str | None = None) -> Process:
        """A new process of ours; with ``name``, registered so ``{name, node}`` reaches it."""
        self._runtime()
        return self._processes.spawn(name)
