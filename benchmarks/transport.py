"""The kernel's loopback TCP alone: the floor under any read over a distribution connection.

An uncompressed array read is a request out and megabytes back on one TCP connection. With
no Erlang and no Python decoding, how fast can one process receive replies of that size from
another on this machine? A sender process answers each request byte with a message of
``size`` bytes; the receiver, a thread of the benchmark, reads each straight into one buffer
allocated up front (a blocking ``recv_into``, the cheapest a reader can do). Nothing else
is in the loop, so no client of the distribution protocol here reads faster than this.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

_SENDER = """
import os, socket, sys
size, port = int(sys.argv[1]), int(sys.argv[2])
data = os.urandom(size)
sock = socket.create_connection(("127.0.0.1", port))
while sock.recv(1) == b"g":
    sock.sendall(data)
"""


def _receive(total: int, size: int) -> float:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        sender = subprocess.Popen([sys.executable, "-c", _SENDER, str(size), str(port)])
        try:
            server.settimeout(30)
            sock, _ = server.accept()
            with sock:
                sock.settimeout(30)
                view = memoryview(bytearray(size))
                sock.sendall(b"g")  # one message untimed: the connection warms up
                _read_into(sock, view)
                elapsed = 0.0
                for _ in range(max(1, total // size)):
                    t0 = time.perf_counter()
                    sock.sendall(b"g")
                    _read_into(sock, view)
                    elapsed += time.perf_counter() - t0
                sock.sendall(b"q")
        finally:
            sender.wait(timeout=30)
    return elapsed


def _read_into(sock: socket.socket, view: memoryview) -> None:
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if n == 0:
            raise ConnectionError("the sender closed the connection")
        got += n


async def loopback_replies(total: int, size: int) -> float:
    """Seconds to receive ``total`` bytes as replies of ``size`` bytes, a request byte each
    (in a thread: the event loop and the node's connections keep running)."""
    return await asyncio.to_thread(_receive, total, size)
