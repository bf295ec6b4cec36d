"""One TCP connection to one peer node: the asyncio shell around a :class:`Session`.

The session decides everything about the protocol; this class moves its bytes. Received
bytes land in the session's buffer (a big packet straight in a buffer of its own), its
events go to the node, its tick policy runs on a loop timer, and outgoing packets are
corked: the small packets one event loop queues in one iteration leave in one write, while
large binaries go to the socket as they are, never joined into one buffer first.

Writing happens on whichever thread sends. Over plain TCP a caller's loop writes its
packets to the socket itself, under a lock, so a call wakes no other thread on its way out
(handing each packet to the IO thread costs a wake-up of that thread and a GIL hand-over:
about half of a round trip's cost). Whatever the socket does not take at once goes to the
transport on the IO loop, and every writer queues behind it until it is written: packets
never interleave or overtake each other. Reading, once the handshake is done, is the
business of the loops waiting on replies (``readers.py``): a reply completes its call where
it is read. Over TLS the transport encrypts and decrypts, so packets are handed to the IO
loop and read there, as during the handshake.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from pyrlang_zarr.erldist.control import ControlMessage, Reply
from pyrlang_zarr.erldist.handshake import Peer
from pyrlang_zarr.erldist.readers import Readers
from pyrlang_zarr.erldist.session import (
    Connected,
    Malformed,
    Outgoing,
    Session,
    SessionEvent,
    Tick,
)
from pyrlang_zarr.erldist.tls import describe_ssl_error
from pyrlang_zarr.errors import NodeDown, ProtocolError, PyrlangZarrError
from pyrlang_zarr.term import encode_parts

log = logging.getLogger(__name__)

_SMALL_WRITE = 256 * 1024  # below this a packet goes out as one write (one segment train)
_MAX_IOV = 512  # buffers per sendmsg (the kernel takes up to IOV_MAX, 1024 on Linux)
_STALE = 0.25  # seconds without a byte from the peer: a call first reads what is waiting

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
        sock: socket.socket | None = None,
        waiting: Callable[[asyncio.AbstractEventLoop], bool] | None = None,
    ) -> None:
        self.session = session
        self._on_message = on_message
        self._on_lost = on_lost
        self._on_received = on_received  # after each batch of received packets
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._io_thread = threading.get_ident()  # made on the IO loop
        self.ready: asyncio.Future[Peer] = self._loop.create_future()
        self._error: Exception | None = None
        self._ticker: asyncio.TimerHandle | None = None
        # packets queued per sending loop, written at the end of that loop's iteration
        self._corks: dict[asyncio.AbstractEventLoop, list[bytes | memoryview]] = {}
        # the socket, for writes from any thread (plain TCP once connected), and what is
        # waiting for the transport (which has bytes of its own to write first)
        self._sock = sock
        self._direct: socket.socket | None = None
        self._wlock = threading.Lock()
        self._spill: list[bytes | memoryview] = []
        self._spill_scheduled = False
        self._via_transport = False
        # plain TCP once connected: the loops waiting on replies read (readers.py)
        self._waiting = waiting
        self._readers: Readers | None = None
        self._connected_now = False
        # why the socket is not read any more (its end, or a packet we cannot read), seen by
        # a caller's loop before the IO loop drops the connection
        self.ended: Exception | None = None
        # batches of events read for the IO loop to handle, in order (appended under the
        # read lock, taken by the IO loop), and how many were handed and handled (counted
        # under the read lock and by the IO loop: each count has one writer)
        self._inbox: deque[list[ControlMessage | SessionEvent | Exception]] = deque()
        self._handed = 0
        self._handled = 0
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
        if self._sock is not None and transport.get_extra_info("sslcontext") is None:
            # resume_writing tells us when the transport's buffer is empty again
            transport.set_write_buffer_limits(high=0, low=0)
        else:
            self._sock = None  # TLS: the transport encrypts, every write goes through it
        transport.write(self.session.initiate())

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.session.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.session.buffer_updated(nbytes, self._loop.time())
        self._dispatch()
        if self._connected_now:
            self._connected_now = False
            self._share_reading()

    def _dispatch(self) -> None:
        """On the IO loop: handle every event of the bytes received so far."""
        session = self.session
        try:
            deliver = self._io_deliver()
            while (event := session.next_event()) is not None:
                self._handle_event(event, deliver)
        except Exception as exc:  # a broken peer must not take the event loop down with it
            self._broken(exc)
        if self._on_received is not None:
            self._on_received()

    def _io_deliver(self) -> Callable[[Reply], None] | None:
        """Where the IO loop hands replies to our calls (straight to their table)."""
        replies = self.session.replies
        return None if replies is None else replies.deliver

    def _handle_event(
        self, event: ControlMessage | SessionEvent, deliver: Callable[[Reply], None] | None
    ) -> None:
        """On the IO loop: one event of the session."""
        if type(event) is Reply and deliver is not None:
            deliver(event)
        elif isinstance(event, SessionEvent):
            self._handle(event)
        else:
            self._on_message(self, event)

    def _broken(self, exc: Exception) -> None:
        if not isinstance(exc, PyrlangZarrError):
            log.exception("error handling a packet from %s", self.peer_name)
            exc = ProtocolError(f"error handling a packet from {self.peer_name}: {exc}")
        else:
            log.debug("dropping the connection to %s", self.peer_name, exc_info=exc)
        self.abort(exc)

    # -- reading from callers' loops (plain TCP, once connected) --------------------------
    def _share_reading(self) -> None:
        """On the IO loop, once the handshake's bytes are handled: from now on the socket
        is read by the loops waiting on replies (:class:`Readers`), not by the transport."""
        transport = self._transport
        if self._sock is None or self._waiting is None or transport is None or self.closed:
            return
        transport.pause_reading()
        self._readers = Readers(self._sock, self._loop, self._read_once, self._waiting)

    def claim_reads(self, loop: asyncio.AbstractEventLoop) -> None:
        """On ``loop``'s thread, before it sends a call: it reads the replies itself. After
        a silence, what is waiting is read first: if the peer went away meanwhile (its
        owner's thread may have been blocked), the call goes to a new connection instead
        of this dead one (:attr:`direct` turns false)."""
        readers = self._readers
        if readers is None:
            return
        if readers.owner is not loop:
            readers.claim(loop)
        if time.monotonic() - self.session.last_recv > _STALE:
            readers.poll(loop)

    def _read_once(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        """One read from the socket, on ``loop``, with the read lock held.

        Events keep the order they arrived in: a reply completes where it is read only while
        nothing read before it waits for the IO loop (a message to one of our processes,
        say); from the first such event on, the batch goes to the IO loop whole, and so does
        every later read until the IO loop has handled it."""
        session = self.session
        try:
            nbytes = sock.recv_into(session.get_buffer(-1))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost_on(loop, NodeDown(f"connection to {self.peer_name} lost: {exc}"))
            return
        if nbytes == 0:
            self._lost_on(
                loop,
                NodeDown(f"connection to {self.peer_name} lost (the node closed it or went down)"),
            )
            return
        session.buffer_updated(nbytes, time.monotonic())
        io_loop = self._loop
        in_order = self._handed == self._handled  # nothing read before waits for the IO loop
        if loop is io_loop and in_order:
            self._dispatch()
            return
        replies = session.replies
        deliver = None if replies is None or not in_order else replies.deliver_on
        queued: list[ControlMessage | SessionEvent | Exception] = []
        failed = False
        try:
            while (event := session.next_event()) is not None:
                if type(event) is Reply and deliver is not None and not queued:
                    deliver(event, loop)  # one of our replies: completed here
                elif type(event) is not Tick:  # a tick: the session noted the time
                    queued.append(event)
        except Exception as exc:
            queued.append(exc)
            failed = True
        if queued:
            self._inbox.append(queued)
            self._handed += 1
            try:
                if loop is io_loop:
                    io_loop.call_soon(self.handle_inbox)
                else:
                    io_loop.call_soon_threadsafe(self.handle_inbox)
            except RuntimeError:  # the node's loop is closed: so is the connection
                pass
        if failed:  # the session is broken: no loop reads it again
            self._stop_reading(ProtocolError(f"{self.peer_name} sent what we cannot read"))

    def handle_inbox(self) -> None:
        """On the IO loop: the events read on a loop that does not handle them itself, or
        read while earlier ones waited here; in the order they arrived. Nothing after a
        broken packet is handled. Each batch counts as handled once its calls' results have
        left for their loops (a reply read later must not complete before them)."""
        inbox = self._inbox
        deliver = self._io_deliver()
        while inbox:
            events = inbox.popleft()
            try:
                for event in events:
                    if self.closed or self._error is not None:
                        break
                    try:
                        if isinstance(event, Exception):
                            raise event
                        self._handle_event(event, deliver)
                    except Exception as exc:
                        self._broken(exc)
            finally:
                if self._on_received is not None:
                    self._on_received()  # the results of this batch leave, even after an error
                self._handled += 1

    def _stop_reading(self, error: Exception) -> None:
        """No direct call and no read on this connection from now on (the IO loop drops
        it); :attr:`ended` says why, for the next call to connect anew."""
        with self._wlock:
            self._direct = None
            if self.ended is None:
                self.ended = error
        if self._readers is not None:
            self._readers.close()  # no loop reads (or spins on) it again

    def _lost_on(self, loop: asyncio.AbstractEventLoop, error: NodeDown) -> None:
        """The socket failed or ended, seen on ``loop``: the IO loop drops the connection
        (after the events read before, which it handles first)."""
        self._stop_reading(error)
        if loop is self._loop:
            self.abort(error)
            return
        try:
            self._loop.call_soon_threadsafe(self.abort, error)
        except RuntimeError:
            pass

    def _handle(self, event: SessionEvent) -> None:
        if isinstance(event, Outgoing):
            self._write([event.data])
        elif isinstance(event, Connected):
            transport = self._transport
            if self._sock is not None and transport is not None:
                with self._wlock:
                    self._direct = self._sock
                    self._via_transport = transport.get_write_buffer_size() > 0
                self._connected_now = True  # readers once this batch is handled
            self.ready.set_result(event.peer)
            self._schedule_tick()
        elif isinstance(event, Malformed):
            log.debug("ignored control message from %s: %s", self.peer_name, event.error)
        # a Tick: the session noted the time already

    def eof_received(self) -> bool:
        return False  # close our side too

    def resume_writing(self) -> None:
        """The transport wrote all it held: writers may use the socket again."""
        with self._wlock:
            if not self._spill:
                self._via_transport = False

    def connection_lost(self, exc: Exception | None) -> None:
        with self._wlock:  # no thread writes to the socket once asyncio closes it
            self.closed = True
            self._direct = None
        if self._readers is not None:
            self._readers.close()
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

    @property
    def direct(self) -> bool:
        """Whether any thread's loop may send on this connection itself (plain TCP)."""
        return self._direct is not None

    def send_parts(
        self,
        parts: list[bytes | memoryview],
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        alone: bool = False,
    ) -> None:
        """Write a packet whose encoded terms are ``parts`` (already ETF-encoded), corked
        until the end of the iteration of ``loop``: the running loop, the IO loop if omitted.
        From a loop other than the IO loop only when :attr:`direct`. ``alone``: the caller
        knows of nothing else ``loop`` sends meanwhile (no call of its in flight); with no
        packet corked anywhere it is written at once, without a cork."""
        transport = self._transport
        if transport is None or self.closed or self._error is not None or transport.is_closing():
            raise NodeDown(f"connection to {self.peer_name} is closed")
        if loop is None:
            loop = self._loop
        size = 1
        for part in parts:
            size += len(part)
        header = self.session.header(size)
        corks = self._corks
        if alone and not corks and loop is not self._loop:
            if size < _SMALL_WRITE:
                self._write_one(b"".join((header, *parts)))
            else:
                self._write_joined([header, *parts])
            return
        cork = corks.get(loop)
        if cork is None:
            if corks:  # forget the corks of loops closed before their turn came
                for other in list(corks):  # one-step copy: other threads add theirs
                    if other.is_closed():
                        corks.pop(other, None)
            cork = corks[loop] = []
            loop.call_soon(self._uncork, loop)  # the end of this iteration's cork
            if loop is not self._loop:
                # a caller's first packet in an iteration leaves at once (a lone call waits
                # for nothing); the ones after it in the same iteration share one write
                self._write_joined([header, *parts])
                return
        cork.append(header)
        cork.extend(parts)
        if size >= _SMALL_WRITE:
            # big binaries go to the socket as they are, after what this loop queued before
            self._uncork(loop)

    def flush(self) -> None:
        """Write what the IO loop queued now (the end of a batch of sends)."""
        self.flush_loop(self._loop)

    def flush_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Write what ``loop`` (running in this thread) queued, now."""
        if self._corks.get(loop):
            self._uncork(loop)

    def _uncork(self, loop: asyncio.AbstractEventLoop) -> None:
        cork = self._corks.pop(loop, None)
        if cork:
            self._write_joined(cork)

    def _write_one(self, data: bytes) -> None:
        """Write one small packet (a lone call's)."""
        try:
            self._write([data])
        except NodeDown:
            pass  # the connection is lost: its calls fail from connection_lost

    def _write_joined(self, parts: list[bytes | memoryview]) -> None:
        """Write ``parts``, the small ones joined, the large ones as they are."""
        if self._transport is None or self.closed:
            return
        buffers: list[bytes | memoryview] = []
        small: list[bytes | memoryview] = []
        for part in parts:
            if len(part) >= _SMALL_WRITE:
                if small:
                    buffers.append(b"".join(small))
                    small = []
                buffers.append(part)
            else:
                small.append(part)
        if small:
            buffers.append(small[0] if len(small) == 1 else b"".join(small))
        try:
            self._write(buffers)
        except NodeDown:
            pass  # the connection is lost: its calls fail from connection_lost

    def _write(self, buffers: list[bytes | memoryview]) -> None:
        """Write ``buffers`` in order, from any thread: to the socket at once if it is free,
        else behind what the transport holds."""
        with self._wlock:
            sock = self._direct
            if sock is None or self._via_transport or self._spill:
                transport = self._transport
                if self.closed or transport is None:
                    raise NodeDown(f"connection to {self.peer_name} is closed")
                if not self._spill and threading.get_ident() == self._io_thread:
                    for buffer in buffers:
                        transport.write(buffer)
                    if sock is not None:
                        self._via_transport = transport.get_write_buffer_size() > 0
                    return
                self._spill.extend(buffers)
                self._schedule_spill()
                return
            sent = 0
            try:
                if len(buffers) == 1:  # most writes: one packet, or one corked batch joined
                    sent = sock.send(buffers[0])
                    if sent == len(buffers[0]):
                        return
                else:
                    for i in range(0, len(buffers), _MAX_IOV):
                        batch = buffers[i : i + _MAX_IOV]
                        n = sock.sendmsg(batch)
                        sent += n
                        if n < sum(len(b) for b in batch):
                            break
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                self._direct = None
                error = NodeDown(f"connection to {self.peer_name} lost: {exc}")
                try:  # the IO loop drops it; its calls fail from connection_lost
                    self._loop.call_soon_threadsafe(self.abort, error)
                except RuntimeError:  # the node's loop is closed: so is the connection
                    pass
                raise error from None
            rest = _after(buffers, sent)
            if rest:  # the socket is full: the transport writes the rest when it can
                self._via_transport = True
                self._spill.extend(rest)
                self._schedule_spill()

    def _schedule_spill(self) -> None:
        """With the lock held: have the IO loop give the spilled buffers to the transport."""
        if self._spill_scheduled:
            return
        self._spill_scheduled = True
        if threading.get_ident() == self._io_thread:
            self._loop.call_soon(self._drain_spill)
        else:
            try:
                self._loop.call_soon_threadsafe(self._drain_spill)
            except RuntimeError:  # the node's loop is closed: so is the connection
                self._spill.clear()

    def _drain_spill(self) -> None:
        """On the IO loop: hand the spilled buffers to the transport, in order."""
        with self._wlock:
            self._spill_scheduled = False
            spill, self._spill = self._spill, []
            transport = self._transport
            if transport is None or self.closed or transport.is_closing():
                return
            for buffer in spill:
                transport.write(buffer)
            if transport.get_write_buffer_size() == 0:
                self._via_transport = False
            else:
                self._via_transport = True  # until resume_writing

    # -- ticks ----------------------------------------------------------------------------
    def _schedule_tick(self) -> None:
        self._ticker = self._loop.call_later(self.session.tick_interval, self._tick)

    def _tick(self) -> None:
        if self.closed:
            return
        now = self._loop.time()
        if self._readers is not None:
            self._readers.check(now - self.session.last_recv, self.session.tick_interval)
        try:
            data = self.session.tick(now)
        except NodeDown as exc:
            self.abort(exc)
            return
        if data and self._transport is not None:
            try:
                self._write([data])
            except NodeDown:
                return
        self._schedule_tick()

    # -- closing --------------------------------------------------------------------------
    def abort(self, error: Exception) -> None:
        """Drop the connection; ``error`` is what the calls in flight on it get."""
        if self._error is None:
            self._error = error
        with self._wlock:
            self._direct = None
        if self._readers is not None:
            self._readers.close()
        if self._transport is not None:
            self._transport.abort()


def _after(buffers: list[bytes | memoryview], sent: int) -> list[bytes | memoryview]:
    """What of ``buffers`` is left once their first ``sent`` bytes are written."""
    for i, buffer in enumerate(buffers):
        if sent < len(buffer):
            rest = buffers[i:]
            if sent:
                rest[0] = memoryview(buffer)[sent:]
            return rest
        sent -= len(buffer)
    return []
