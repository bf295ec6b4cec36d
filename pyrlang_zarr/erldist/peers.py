"""Connections to peers: made on first use, made again after a loss, watched for silence.

One connection per peer, as OTP's ``net_kernel`` keeps: packets for a peer that is still
connecting queue behind the attempt and leave in order once it succeeds, or fail with its
error. A peer that owes us replies and falls silent is probed, then dropped after
``liveness_timeout``: a peer cut off without a reset (a pulled cable, a partition) fails its
calls in seconds rather than after a whole tick time (``calls.py`` watches for that).

A connection attempt has one deadline, ``connect_timeout``, for all its stages (EPMD look-up,
TCP connect, handshake). An attempt that ran out of time is not made again for another
``connect_timeout``: calls to that peer meanwhile fail at once with its error (as a gRPC
channel fails fast while it backs off), so a frozen or black-holed peer costs a caller one
timeout, not one per call it makes in a row (a client discovering replicas, then calling).
Fast failures (refused, not registered) are never held: trying again is cheap.

The port comes from EPMD on the peer's host (at ``epmd_port``, ``$ERL_EPMD_PORT``), or, with
``dist_port`` set, is that port with no EPMD at all (``erl -erl_epmd_port``). With TLS
(``inet_tls_dist``, see ``tls.py``) EPMD stays plain; the TCP connection to the port is
wrapped in TLS (the node's certificate checked, ours shown) before the distribution
handshake, which then runs inside TLS with its cookie check as ever.
Everything here runs on the IO loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from pyrlang_zarr.erldist import epmd
from pyrlang_zarr.erldist.connection import DistConnection, MessageHandler
from pyrlang_zarr.erldist.handoff import Handoff, Pending
from pyrlang_zarr.erldist.handshake import ClientHandshake
from pyrlang_zarr.erldist.identity import Identity, is_long_host, split_node_name
from pyrlang_zarr.erldist.session import ReplyRoute, Session
from pyrlang_zarr.erldist.tls import TlsConfig, context_of, describe_ssl_error
from pyrlang_zarr.erldist.tls import server_name as tls_server_name
from pyrlang_zarr.errors import HandshakeTimeout, NodeDown, NodeUnreachable, ProtocolError
from pyrlang_zarr.term import Pid

log = logging.getLogger(__name__)


class Timeouts(Protocol):
    """The node's settings this module reads (read each time: they may be changed live)."""

    connect_timeout: float
    tick_time: float
    epmd_port: int
    dist_port: int | None


#: ``(peer, error, was_connected)``: the peer is gone, or never came
DownHandler = Callable[[str, BaseException, bool], None]


@dataclass(eq=False)
class _Peer:
    """One peer's connection (or connection attempt) and the packets waiting for it."""

    name: str
    conn: DistConnection | None = None
    connecting: asyncio.Task[None] | None = None
    queue: list[tuple[list[bytes | memoryview], Pending | None]] = field(default_factory=list)
    timed_out: bool = False  # the attempt ran out of time (it is then held, see Peers)


class Peers:
    """The node's peers by name. ``on_message`` gets each control event, ``on_down`` each
    lost peer or failed attempt; ``views_for`` picks the messages whose large binaries may
    stay views of the packet (see :class:`~pyrlang_zarr.erldist.session.Session`)."""

    def __init__(
        self,
        identity: Identity,
        cookie: str,
        settings: Timeouts,
        handoff: Handoff,
        *,
        on_message: MessageHandler,
        on_down: DownHandler,
        views_for: Callable[[Pid], bool],
        replies: ReplyRoute | None = None,
        tls: TlsConfig | ssl.SSLContext | None = None,
        waiting: Callable[[asyncio.AbstractEventLoop], bool] | None = None,
    ) -> None:
        self._identity = identity
        self._waiting = waiting  # whether a loop has calls in flight (readers.py)
        self._cookie = cookie
        self._tls = tls
        self._ssl_context = None if tls is None else context_of(tls)
        self._settings = settings
        self._handoff = handoff
        self._on_message = on_message
        self._on_down = on_down
        self._views_for = views_for
        self._replies = replies
        self._peers: dict[str, _Peer] = {}
        #: peers whose last attempt timed out: (not before, error, when it failed)
        self._held: dict[str, tuple[float, Exception, float]] = {}
        self.attempts = 0  # connection attempts made (tests count them)
        self.closed = False

    def __iter__(self) -> Iterator[str]:
        return iter(self._peers)

    def connection(self, name: str) -> DistConnection | None:
        """``name``'s current connection, if it is connected."""
        peer = self._peers.get(name)
        return None if peer is None else peer.conn

    @property
    def connected(self) -> list[str]:
        return sorted(n for n, p in self._peers.items() if p.conn is not None)

    # -- connecting -----------------------------------------------------------------------
    def get(self, name: str) -> _Peer:
        """``name``'s peer, connecting it now if it is new (which decides our name's form)."""
        peer = self._peers.get(name)
        if peer is not None and (conn := peer.conn) is not None and conn.ended is not None:
            # seen ended on a caller's loop, and the IO loop has not dropped it yet: now,
            # after what was read before the end (a reply, a message) is handled
            conn.handle_inbox()
            conn.abort(conn.ended)
            self._lost(conn, conn.ended)
            peer = self._peers.get(name)
        if peer is None:
            _, host = split_node_name(name)
            self._identity.ensure_name(is_long_host(host), host)  # pids and refs carry it
            self._check_held(name)
            peer = self._peers[name] = _Peer(name)
            task = asyncio.get_running_loop().create_task(self._connect(peer))
            # its error reaches the calls queued on it; mark it seen so no one logs it at GC
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            peer.connecting = task
        return peer

    def _check_held(self, name: str) -> None:
        """Raise the error of ``name``'s last attempt if it timed out less than a
        ``connect_timeout`` ago."""
        held = self._held.get(name)
        if held is None:
            return
        until, error, failed_at = held
        now = asyncio.get_running_loop().time()
        if now >= until:
            del self._held[name]
            return
        raise type(error)(
            f"{error} ({now - failed_at:.1f} s ago; not tried again for another "
            f"{until - now:.1f} s)"
        )

    async def connect(self, name: str) -> DistConnection:
        """``name``'s connection, once made."""
        peer = self.get(name)
        if peer.conn is None:
            assert peer.connecting is not None
            await asyncio.shield(peer.connecting)
        assert peer.conn is not None
        return peer.conn

    async def _connect(self, peer: _Peer) -> None:
        try:
            conn = await self._open(peer)
        except BaseException as exc:
            self._peers.pop(peer.name, None)
            error = exc if isinstance(exc, Exception) else NodeDown(f"{peer.name} closed")
            if peer.timed_out and not self.closed:
                now = asyncio.get_running_loop().time()
                self._held[peer.name] = (now + self._settings.connect_timeout, error, now)
            for _parts, call in peer.queue:
                if call is not None:
                    self._handoff.fail(call, error)
            self._on_down(peer.name, error, False)
            raise
        peer.conn, peer.connecting = conn, None
        queue, peer.queue = peer.queue, []
        for parts, call in queue:
            self.submit(peer.name, parts, call)

    async def _open(self, peer: _Peer) -> DistConnection:
        name = peer.name
        alive, host = split_node_name(name)
        settings = self._settings
        limit = settings.connect_timeout
        loop = asyncio.get_running_loop()
        self.attempts += 1
        stage = "looking up the node in EPMD"
        transport: asyncio.BaseTransport | None = None
        try:
            async with asyncio.timeout(limit):  # one deadline for every stage
                port = settings.dist_port
                if port is None:
                    # the look-up's own timeout is a backstop: the deadline above governs
                    entry = await epmd.lookup(
                        host, alive, port=settings.epmd_port, timeout=limit + 1.0
                    )
                    if not entry.lowest_version <= 6 <= entry.highest_version:
                        raise ProtocolError(
                            f"{name} speaks distribution versions {entry.lowest_version}.."
                            f"{entry.highest_version}; we speak 6 (OTP 23 and later)"
                        )
                    port = entry.port
                stage = "connecting" + ("" if settings.dist_port is None else f" to port {port}")
                sock = await _tcp_connect(host, port)
                our = self._identity.ensure_name(is_long_host(host), host)
                tls = self._tls
                hs = ClientHandshake(
                    our,
                    name,
                    self._cookie,
                    creation=self._identity.creation,
                    length_bytes=2 if tls is None else 4,  # inet_tls_dist: {packet, 4}
                )
                session = Session(
                    hs,
                    tick_time=settings.tick_time,
                    views_for=self._views_for,
                    replies=self._replies,
                    now=loop.time(),
                )
                stage = "in the handshake" if tls is None else "in the TLS handshake"
                try:
                    transport, conn = await loop.create_connection(
                        lambda: DistConnection(
                            session,
                            self._on_message,
                            self._lost,
                            on_received=self._handoff.flush,
                            sock=sock,
                            waiting=self._waiting,
                        ),
                        sock=sock,
                        ssl=self._ssl_context,
                        server_hostname=None if tls is None else tls_server_name(tls, host),
                        ssl_handshake_timeout=None if tls is None else limit + 1.0,
                    )
                except (ssl.SSLError, ConnectionError) as exc:
                    if tls is None:
                        raise
                    raise describe_ssl_error(name, exc, stage="in the TLS handshake") from None
                stage = "in the handshake"
                await conn.ready
        except TimeoutError:
            _abort(transport)
            peer.timed_out = True
            if stage == "in the handshake":
                raise HandshakeTimeout(
                    f"{name} accepted the connection but did not finish the handshake within "
                    f"{limit} s"
                ) from None
            if stage == "in the TLS handshake":
                raise HandshakeTimeout(
                    f"{name} accepted the connection but did not finish the TLS handshake "
                    f"within {limit} s (a node without TLS distribution waits in silence: is "
                    "it started with -proto_dist inet_tls?)"
                ) from None
            raise NodeUnreachable(f"timed out {stage} for {name} (within {limit} s)") from None
        except BaseException:
            _abort(transport)
            raise
        log.debug("connected to %s as %s", name, our)
        return conn

    def _lost(self, conn: DistConnection, error: Exception) -> None:
        peer = self._peers.get(conn.peer_name)
        if peer is None or peer.conn is not conn:
            return
        del self._peers[conn.peer_name]
        self._on_down(conn.peer_name, error, True)

    # -- sending --------------------------------------------------------------------------
    def submit(self, name: str, parts: list[bytes | memoryview], call: Pending | None) -> None:
        """Write now if connected, else queue behind the connection attempt; ``call`` (a
        send) completes once written."""
        try:
            peer = self.get(name)
        except Exception as exc:
            if call is not None:
                self._handoff.fail(call, exc)
            return
        if peer.conn is None:
            peer.queue.append((parts, call))
            return
        try:
            peer.conn.send_parts(parts)
        except NodeDown as exc:
            if call is not None:
                self._handoff.fail(call, exc)
            return
        if call is not None:
            self._handoff.succeed(call, None)

    def flush(self) -> None:
        """Write every connection's corked packets now."""
        for peer in self._peers.values():
            if peer.conn is not None:
                peer.conn.flush()

    # -- closing ------------------------------------------------------------------------
    def close(self, error: Exception) -> None:
        """Stop every attempt and drop every connection; what waits on them gets ``error``."""
        self.closed = True
        for peer in list(self._peers.values()):
            if peer.connecting is not None:
                peer.connecting.cancel()
            if peer.conn is not None:
                peer.conn.abort(error)


def _abort(transport: asyncio.BaseTransport | None) -> None:
    if isinstance(transport, asyncio.Transport):
        transport.abort()
    elif transport is not None:
        transport.close()


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
