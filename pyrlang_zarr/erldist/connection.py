"""One TCP connection to one peer node: the asyncio shell around a :class:`Session`.

The session decides everything about the protocol; this class moves its bytes. Received
bytes land in the session's buffer (a big packet straight in a buffer of its own), its
events go to the node, its tick policy runs on a loop timer, and outgoing packets are
corked: the small packets of one loop iteration leave in one write, while large binaries go
to the transport as they are, never joined into one buffer first.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any

from pyrlang_zarr.erldist.control import ControlMessage
from pyrlang_zarr.erldist.handshake import Peer
from pyrlang_zarr.erldist.session import Connected, Malformed, Outgoing, Session, SessionEvent
from pyrlang_zarr.erldist.tls import describe_ssl_error
from pyrlang_zarr.errors import NodeDown, ProtocolError, PyrlangZarrError
from pyrlang_zarr.term import encode_parts

log = logging.getLogger(__name__)

_SMALL_WRITE = 256 * 1024  # below this a packet goes out as one write (one segment train)

MessageHandler = Callable[["DistConnection", ControlMessage], None]
LostHandler = Callable[["DistConnection", Exception], None]


class DistConnection(asyncio.BufferedProtocol):
    """Feeds ``session`` and writes for it; control events go to ``on_message``."""

    def __init__(
        self,
        session: Session,
        on_message: MessageHandler,
        on_lost: LostHandler,
        *,
        on_received: Callable[[], None] | None = None,
    ) -> None:
        self.session = session
        self._on_message = on_message
        self._on_lost = on_lost
        self._on_received = on_received  # after each batch of received packets
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[Peer] = self._loop.create_future()
        self._error: Exception | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self._cork: list[bytes | memoryview] = []
        self._cork_scheduled = False
        self.closed = False

    @property
    def peer_name(self) -> str:
        return self.session.peer_name

    @property
    def last_recv(self) -> float:
        """The loop time when the peer last sent anything."""
        return self.session.last_recv

    # -- asyncio.BufferedProtocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(self.session.initiate())

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.session.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        session = self.session
        session.buffer_updated(nbytes, self._loop.time())
        try:
            on_message = self._on_message
            while (event := session.next_event()) is not None:
                if isinstance(event, SessionEvent):
                    self._handle(event)
                else:
                    on_message(self, event)
        except Exception as exc:  # a broken peer must not take the event loop down with it
            if not isinstance(exc, PyrlangZarrError):
                log.exception("error handling a packet from %s", self.peer_name)
                exc = ProtocolError(f"error handling a packet from {self.peer_name}: {exc}")
            else:
                log.debug("dropping the connection to %s", self.peer_name, exc_info=exc)
            self.abort(exc)
        if self._on_received is not None:
            self._on_received()

    def _handle(self, event: SessionEvent) -> None:
        if isinstance(event, Outgoing):
            assert self._transport is not None
            self._transport.write(event.data)
        elif isinstance(event, Connected):
            self.ready.set_result(event.peer)
            self._schedule_tick()
        elif isinstance(event, Malformed):
            log.debug("ignored control message from %s: %s", self.peer_name, event.error)
        # a Tick: the session noted the time already

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._ticker is not None:
            self._ticker.cancel()
        if not self.ready.done():
            if self._error is None and isinstance(exc, ssl.SSLError):
                # TLS 1.3: the node checks our certificate after our side of the TLS
                # handshake is done, and its refusal arrives as the first read fails
                self._error = describe_ssl_error(
                    self.peer_name, exc, stage="after the TLS handshake"
                )
            self.ready.set_exception(self._error or self.session.connection_lost())
            return
        error = self._error or NodeDown(
            f"connection to {self.peer_name} lost"
            + (f": {exc}" if exc else " (the node closed it or went down)")
        )
        self._on_lost(self, error)

    # -- sending --------------------------------------------------------------------------
    def send(
        self, control: tuple[Any, ...], message: Any = None, *, has_message: bool = True
    ) -> None:
        """Write one pass-through packet: ``control`` and, if ``has_message``, ``message``."""
        parts = encode_parts(control)
        if has_message:
            parts += encode_parts(message)
        self.send_parts(parts)

    def send_parts(self, parts: list[bytes | memoryview]) -> None:
        """Write a packet whose encoded terms are ``parts`` (already ETF-encoded)."""
        transport = self._transport
        if transport is None or self.closed or transport.is_closing():
            raise NodeDown(f"connection to {self.peer_name} is closed")
        size = 1
        for part in parts:
            size += len(part)
        cork = self._cork
        cork.append(self.session.header(size))
        if size < _SMALL_WRITE:
            # small packets of one loop iteration leave in one write: one syscall, one wake-up
            cork.extend(parts)
            if not self._cork_scheduled:
                self._cork_scheduled = True
                self._loop.call_soon(self._uncork)
        else:  # big binaries go to the socket as they are, after what is queued before them
            for part in parts:
                if len(part) >= _SMALL_WRITE:
                    self._uncork()
                    transport.write(part)
                else:
                    cork.append(part)
            self._uncork()

    def flush(self) -> None:
        """Write what is queued now (the end of a batch of sends)."""
        if self._cork:
            self._uncork()

    def _uncork(self) -> None:
        self._cork_scheduled = False
        if self._cork and self._transport is not None and not self.closed:
            self._transport.write(b"".join(self._cork))
        self._cork.clear()

    # -- ticks ----------------------------------------------------------------------------
    def _schedule_tick(self) -> None:
        self._ticker = self._loop.call_later(self.session.tick_interval, self._tick)

    def _tick(self) -> None:
        if self.closed:
            return
        try:
            data = self.session.tick(self._loop.time())
        except NodeDown as exc:
            self.abort(exc)
            return
        if data and self._transport is not None:
            self._transport.write(data)
        self._schedule_tick()

    # -- closing --------------------------------------------------------------------------
    def abort(self, error: Exception) -> None:
        """Drop the connection; ``error`` is what the calls in flight on it get."""
        if self._error is None:
            self._error = error
        if self._transport is not None:
            self._transport.abort()
