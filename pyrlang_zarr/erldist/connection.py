"""One TCP connection to one peer node: the asyncio shell around the sans-IO parts.

Runs the :class:`~pyrlang_zarr.erldist.handshake.ClientHandshake`, then cuts the stream into
pass-through ``'p'`` packets (control term + optional message term) with a
:class:`~pyrlang_zarr.erldist.framing.PacketReader`, answers and checks ticks, and writes large
binaries to the transport without joining them into one buffer first.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from typing import Any

from pyrlang_zarr.erldist.framing import PacketReader
from pyrlang_zarr.erldist.handshake import ClientHandshake, Peer, State
from pyrlang_zarr.errors import AuthenticationError, NodeDown, NodeUnreachable, ProtocolError
from pyrlang_zarr.term import decode, encode_parts

log = logging.getLogger(__name__)

PASS_THROUGH = 112
TICK = b"\x00\x00\x00\x00"
TICK_INTERVAL = 1.0
_HEADER = struct.Struct(">IB")
_SMALL_WRITE = 256 * 1024  # below this a packet goes out as one write (one segment train)

MessageHandler = Callable[["DistConnection", tuple[Any, ...], Any, bool], None]
LostHandler = Callable[["DistConnection", Exception], None]


class DistConnection(asyncio.BufferedProtocol):
    """Handshake, framing and ticks for one peer; messages go to ``on_message``."""

    def __init__(
        self,
        handshake: ClientHandshake,
        on_message: MessageHandler,
        on_lost: LostHandler,
        *,
        tick_time: float,
        on_received: Callable[[], None] | None = None,
        views_for: Callable[[tuple[Any, ...]], bool] | None = None,
    ) -> None:
        self.handshake = handshake
        self.peer_name = handshake.peer_name
        self._on_message = on_message
        self._on_lost = on_lost
        self._on_received = on_received  # after each batch of received packets
        self._views_for = views_for  # which messages may keep large binaries as views
        self._tick_time = tick_time
        self._reader = PacketReader(2)
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[Peer] = self._loop.create_future()
        self._error: Exception | None = None
        self.last_recv = self._loop.time()
        self._sent_since_tick = False
        self._ticker: asyncio.TimerHandle | None = None
        self._cork: list[bytes | memoryview] = []
        self._cork_scheduled = False
        self.closed = False

    # -- asyncio.BufferedProtocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(self.handshake.start())

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._reader.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self._reader.buffer_updated(nbytes)
        self.last_recv = self._loop.time()
        try:
            self._process_packets()
        except Exception as exc:  # a broken peer must not take the event loop down with it
            kept = isinstance(exc, ProtocolError | NodeDown | AuthenticationError | NodeUnreachable)
            self.abort(exc if kept else self._broken(exc))
        if self._on_received is not None:
            self._on_received()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._ticker is not None:
            self._ticker.cancel()
        if not self.ready.done():
            error = self._error or self.handshake.connection_lost()
            self.ready.set_exception(error)
            return
        error = self._error or NodeDown(
            f"connection to {self.peer_name} lost"
            + (f": {exc}" if exc else " (the node closed it or went down)")
        )
        self._on_lost(self, error)

    # -- receiving ------------------------------------------------------------------------
    def _process_packets(self) -> None:
        reader = self._reader
        while (packet := reader.next_packet()) is not None:
            if self.handshake.state is not State.CONNECTED:
                reply = self.handshake.packet_received(packet)
                if reply is not None:
                    self._write(reply)
                if self.handshake.state is State.CONNECTED:
                    reader.header_size = 4
                    assert self.handshake.peer is not None
                    self.peer_name = self.handshake.peer.name
                    self.ready.set_result(self.handshake.peer)
                    self._schedule_tick()
                continue
            if len(packet) == 0:
                continue  # a tick: _last_recv is already updated
            if packet[0] != PASS_THROUGH:
                raise ProtocolError(f"{self.peer_name} sent a packet of unknown type {packet[0]}")
            control, offset = decode(packet, 1)
            if not isinstance(control, tuple) or not control or not isinstance(control[0], int):
                raise ProtocolError(f"{self.peer_name} sent a bad control message {control!r}")
            # a big packet has a buffer of its own, never reused: its binaries can be views
            views = (
                isinstance(packet, bytearray)
                and self._views_for is not None
                and self._views_for(control)
            )
            message = None
            if offset < len(packet):
                message, offset = decode(packet, offset, copy_binaries=not views)
            self._on_message(self, control, message, views)

    def _broken(self, exc: Exception) -> ProtocolError:
        log.debug("bad packet from %s", self.peer_name, exc_info=exc)
        return ProtocolError(f"{self.peer_name} sent a packet we cannot read: {exc}")

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
        cork.append(_HEADER.pack(size, PASS_THROUGH))
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
        self._sent_since_tick = True

    def flush(self) -> None:
        """Write what is queued now (the end of a batch of sends)."""
        if self._cork:
            self._uncork()

    def _uncork(self) -> None:
        self._cork_scheduled = False
        if self._cork and self._transport is not None and not self.closed:
            self._transport.write(b"".join(self._cork))
        self._cork.clear()

    def _write(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)

    # -- ticks ----------------------------------------------------------------------------
    def _schedule_tick(self) -> None:
        # We cannot know the peer's net_ticktime (the handshake does not carry it); a peer
        # with a short one drops a connection that is silent for that long. A tick is 4
        # bytes: send one every second of silence, whatever our own tick_time.
        self._ticker = self._loop.call_later(min(self._tick_time / 4, TICK_INTERVAL), self._tick)

    def _tick(self) -> None:
        if self.closed:
            return
        silent = self._loop.time() - self.last_recv
        if silent > self._tick_time:
            self.abort(NodeDown(f"{self.peer_name} sent nothing for {silent:.0f} s (no ticks)"))
            return
        if not self._sent_since_tick and self._transport is not None:
            self._transport.write(TICK)
        self._sent_since_tick = False
        self._schedule_tick()

    # -- closing --------------------------------------------------------------------------
    def abort(self, error: Exception) -> None:
        """Drop the connection; ``error`` is what the calls in flight on it get."""
        if self._error is None:
            self._error = error
        if self._transport is not None:
            self._transport.abort()
