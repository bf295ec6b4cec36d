"""Which event loop reads a connection's socket: the one waiting on its replies.

A reply read on the node's IO thread reaches its caller through a wake-up of the caller's
loop (a self-pipe write, an epoll return, a GIL hand-over): about as much time as the round
trip itself. So over plain TCP the loop that makes calls reads the socket itself: the reply
completes its future where it is read, and no other thread wakes.

- The loop of the latest call is the *owner*: it stays registered (``add_reader``) after its
  calls complete and reads whatever else comes (ticks, messages to our processes), handing
  those to the IO loop. Any other loop with calls in flight reads too; one at a time (a
  lock), each handing on what is not its own.
- A loop no longer owner and with nothing in flight drops its registration the next time
  the socket wakes it, without reading.
- The IO loop owns the socket until a caller claims it, and takes it back (:meth:`check`,
  on its tick timer) when the owner is closed, or has left bytes unread for a whole tick:
  a loop whose thread blocks (a synchronous call inside a coroutine) delays only its own
  calls; every other loop waiting on a reply reads for itself.

Registrations use a duplicate of the socket's descriptor, closed once no loop holds it: a
loop's selector never keeps a number the kernel may give to another socket. Closing shuts
the socket down, which wakes every running loop registered to drop its registration; an
idle one is let go of at once. (A loop registered, not running, and started again only
after the connection closed keeps the descriptor until it runs: one descriptor.)
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import threading
from collections.abc import Callable

Loop = asyncio.AbstractEventLoop
_WAIT_FOR_READER = 0.05  # seconds a loop waits for another one's read before trying again
#: reads once from the socket, on the given loop, with the read lock held
ReadOnce = Callable[[Loop, socket.socket], None]


class Readers:
    """The loops registered to read one connection's socket, and which one owns it."""

    def __init__(
        self,
        sock: socket.socket,
        io_loop: Loop,
        read_once: ReadOnce,
        waiting: Callable[[Loop], bool],
    ) -> None:
        self._sock = socket.socket(fileno=os.dup(sock.fileno()))
        self._sock.setblocking(False)
        self._fd = self._sock.fileno()
        self._io_loop = io_loop
        self._read_once = read_once
        self._waiting = waiting  # whether a loop has calls in flight
        self._pid = os.getpid()
        self._lock = threading.Lock()  # one reader at a time
        self._reg_lock = threading.Lock()  # registrations, and closing
        self._registered: set[Loop] = set()
        self.owner: Loop = io_loop
        self.closed = False
        self._register(io_loop)

    def claim(self, loop: Loop) -> None:
        """On ``loop``'s thread, as it makes a call: it reads the replies from now on."""
        self.owner = loop
        if loop not in self._registered:
            self._register(loop)

    def poll(self, loop: Loop, reads: int = 16) -> None:
        """On ``loop``'s thread: read what is waiting now (at most ``reads`` times), so an
        end of stream behind a few packets is seen too."""
        for _ in range(reads):
            if self.closed or not self._unread() or not self._lock.acquire(blocking=False):
                return
            try:
                self._read_once(loop, self._sock)
            finally:
                self._lock.release()

    def check(self, silent: float, limit: float) -> None:
        """On the IO loop, every tick: take the socket back from an owner that is closed,
        or that left bytes unread although the peer has been ``silent`` (for us) longer
        than ``limit`` seconds."""
        owner = self.owner
        if owner is self._io_loop or self.closed:
            return
        with self._reg_lock:
            self._registered = {loop for loop in self._registered if not loop.is_closed()}
        if owner.is_closed() or (silent > limit and self._unread()):
            self.owner = self._io_loop
            if self._io_loop not in self._registered:
                self._register(self._io_loop)

    def _unread(self) -> bool:
        """Whether the socket has bytes (or its end) waiting, now (``poll``: any descriptor
        number, where ``select`` stops at 1024)."""
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        try:
            return any(not events & select.POLLNVAL for _, events in poller.poll(0))
        except OSError:
            return False

    def close(self) -> None:
        """Shut the socket down: every running loop registered wakes and lets go, the
        others are let go of here; the descriptor is closed by the last one."""
        with self._reg_lock:
            if self.closed:
                return
            self.closed = True
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            for loop in list(self._registered):
                if loop.is_closed():
                    self._registered.discard(loop)
                elif not loop.is_running():  # idle: no thread is in its selector
                    loop.remove_reader(self._fd)
                    self._registered.discard(loop)
        try:
            here: Loop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is not None and here in self._registered:
            self._unregister(here)
        else:
            self._close_if_unused()

    # -- on each registered loop's thread -------------------------------------------------
    def _register(self, loop: Loop) -> None:
        with self._reg_lock:
            if self.closed:
                return
            loop.add_reader(self._fd, self._ready, loop)
            self._registered.add(loop)

    def _unregister(self, loop: Loop) -> None:
        with self._reg_lock:
            self._registered.discard(loop)
            loop.remove_reader(self._fd)
        self._close_if_unused()

    def _close_if_unused(self) -> None:
        with self._reg_lock:
            if self.closed and not self._registered and self._sock.fileno() != -1:
                self._sock.close()

    def _ready(self, loop: Loop) -> None:
        """The socket is readable (or shut down): read once, or let go."""
        if os.getpid() != self._pid:
            # a forked child running a loop it inherited: never read the parent's socket,
            # nor unregister (the epoll instance is shared: that would deafen the parent)
            return
        if not self.closed and (loop is self.owner or self._waiting(loop)):
            # another loop reading: wait for it (briefly, the GIL released) rather than spin
            if self._lock.acquire(timeout=_WAIT_FOR_READER):
                try:
                    self._read_once(loop, self._sock)
                finally:
                    self._lock.release()
            return
        self._unregister(loop)
