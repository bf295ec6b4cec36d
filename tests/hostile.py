"""Scripted hostile peers for the tests: parts no real node plays, on 127.0.0.1.

- :class:`FakeEpmd` answers EPMD look-ups for the names it is given (others go to the real
  EPMD), or floods the asker.
- :class:`FakeNode` accepts distribution connections under one name and plays a scripted
  part: a refusing status, another name, a wrong ack, raw bytes after the handshake, and
  answers (or "crashes" on) the remote calls it gets.
- :class:`ReflectingPeer` answers two names without knowing the cookie and tries to log in by
  sending our own challenge back to us.

Each one is bounded: floods stop after a set number of bytes, every wait has a timeout, and
``close()`` ends every connection.
"""

from __future__ import annotations

import asyncio
import secrets
import struct
from collections.abc import Callable
from typing import Any

from pyrlang_zarr.erldist import control as C
from pyrlang_zarr.erldist import flags as F
from pyrlang_zarr.erldist.epmd import EPMD_PORT, PORT2_RESP, PORT_PLEASE2_REQ
from pyrlang_zarr.erldist.handshake import digest
from pyrlang_zarr.term import Atom, decode, encode

HOST = "127.0.0.1"
PEER_FLAGS = F.OUR_FLAGS | F.PUBLISHED
#: Returned by a FakeNode call handler: drop the connection instead of answering.
CRASH = object()


class Raw:
    """Returned by a FakeNode call handler: the reply's result as these bytes, as they are
    (a term no encoder would make)."""

    def __init__(self, data: bytes) -> None:
        self.data = data


def port2_resp(name: str, port: int) -> bytes:
    """A PORT2_RESP for a registered normal node speaking version 6."""
    n = name.encode()
    return bytes([PORT2_RESP, 0]) + struct.pack(">HBBHHH", port, 77, 0, 6, 6, len(n)) + n + b"\0\0"


async def read_packet(reader: asyncio.StreamReader, header: int) -> bytes:
    size = int.from_bytes(await reader.readexactly(header), "big")
    return await reader.readexactly(size)


def packet(data: bytes, header: int) -> bytes:
    return len(data).to_bytes(header, "big") + data


class _Server:
    """An asyncio server on 127.0.0.1 (random port) whose connections ``close()`` ends."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await asyncio.wait_for(self.serve(reader, writer), 30)
        except (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> Any:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class FakeEpmd(_Server):
    """EPMD for ``names`` (short name -> port); other names are asked of the real EPMD.

    With ``flood``, every look-up is answered with ``flood`` followed by zeros, up to
    ``flood_limit`` bytes, sent in 64 KiB writes as fast as the client reads them.
    """

    def __init__(
        self,
        names: dict[str, int] | None = None,
        *,
        flood: bytes | None = None,
        flood_limit: int = 64 << 20,
    ) -> None:
        super().__init__()
        self.names = dict(names or {})
        self.flood = flood
        self.flood_limit = flood_limit
        self.sent = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_packet(reader, 2)
        if self.flood is not None:
            writer.write(self.flood)
            self.sent = len(self.flood)
            chunk = memoryview(bytes(64 << 10))
            while self.sent < self.flood_limit and not writer.is_closing():
                writer.write(chunk)
                self.sent += len(chunk)
                await writer.drain()
            await reader.read()  # until the client hangs up
            return
        if request[:1] != bytes([PORT_PLEASE2_REQ]):
            return
        name = request[1:].decode()
        if name in self.names:
            writer.write(port2_resp(name, self.names[name]))
            return
        real_reader, real_writer = await asyncio.open_connection(HOST, EPMD_PORT)
        try:
            real_writer.write(packet(request, 2))
            writer.write(await real_reader.read(4096))
        finally:
            real_writer.close()


class FakeNode(_Server):
    """Accepts connections as ``name``; knows ``cookie`` (``None``: does not).

    ``status``: the handshake status sent (``b"nok"``, ``b"not_allowed"``... end it there).
    ``claim``: the name sent in the challenge (default ``name``). ``ack``: ``"good"`` (the
    digest of the client's challenge), ``"bad"`` (random bytes) or ``"none"`` (hang).
    ``after_handshake``: raw bytes written once connected. ``on_call(module, function, args)``
    answers each rpc (its value is sent back; :data:`CRASH` drops the connection); unanswered
    calls get ``{badrpc, nodedown}``-like errors.
    """

    def __init__(
        self,
        name: str,
        cookie: str | None,
        *,
        status: bytes = b"ok",
        claim: str | None = None,
        ack: str = "good",
        after_handshake: bytes = b"",
        on_call: Callable[[str, str, list[Any]], Any] | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.cookie = cookie
        self.status = status
        self.claim = claim or name
        self.ack = ack
        self.after_handshake = after_handshake
        self.on_call = on_call
        self.calls: list[tuple[str, str, list[Any]]] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        send_name = await read_packet(reader, 2)
        assert send_name[:1] == b"N", send_name
        writer.write(packet(b"s" + self.status, 2))
        if self.status not in (b"ok", b"ok_simultaneous"):
            await writer.drain()
            return
        claim = self.claim.encode()
        ours = secrets.randbits(32)
        challenge = struct.pack(">QIIH", PEER_FLAGS, ours, 7, len(claim)) + claim
        writer.write(packet(b"N" + challenge, 2))
        reply = await read_packet(reader, 2)
        (theirs,) = struct.unpack(">I", reply[1:5])
        if self.ack == "none":
            await reader.read()
            return
        good = self.ack == "good" and self.cookie is not None
        writer.write(packet(b"a" + (digest(theirs, self.cookie or "") if good else bytes(16)), 2))
        writer.write(self.after_handshake)
        await serve_calls(reader, writer, self.calls, self.on_call)


async def serve_calls(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    calls: list[tuple[str, str, list[Any]]],
    on_call: Callable[[str, str, list[Any]], Any] | None,
) -> None:
    """Answer ``rex`` calls after the handshake, until :data:`CRASH` or the client leaves."""
    while True:
        data = await read_packet(reader, 4)
        if not data or data[0] != 112:
            continue  # a tick
        control, offset = decode(data, 1)
        if control[0] != C.REG_SEND or control[3] != Atom("rex") or offset >= len(data):
            continue
        message, _ = decode(data, offset)
        _tag, (pid, ref), request = message
        if request[0] != Atom("call"):
            continue
        module, function, args = str(request[1]), str(request[2]), list(request[3])
        calls.append((module, function, args))
        result = on_call(module, function, args) if on_call else None
        if result is CRASH:
            writer.transport.abort()
            return
        if result is None:
            result = (Atom("badrpc"), Atom("not_here"))
        if isinstance(result, Raw):
            head = b"p" + encode((C.SEND, Atom(""), pid)) + b"\x83h\x02" + encode(ref)[1:]
            writer.write(packet(head + result.data, 4))
            continue
        body = b"p" + encode((C.SEND, Atom(""), pid)) + encode((ref, result))
        writer.write(packet(body, 4))


class ReflectingPeer:
    """Answers as ``a`` and ``b`` (two ports) without the cookie. When the client connects to
    both at once, it sends the client's challenge from ``a`` back as its own challenge on
    ``b``; the client's digest on ``b`` is then the ack ``a`` waits for. ``forged`` is what it
    answers to the calls it gets on a connection so logged in."""

    def __init__(self, a: str, b: str, forged: Any) -> None:
        self.a, self.b = FakeNode(a, None), FakeNode(b, None)
        self.a.serve = self._serve_a  # type: ignore[method-assign]
        self.b.serve = self._serve_b  # type: ignore[method-assign]
        self.forged = forged
        self._challenge_a: asyncio.Future[int] | None = None
        self._digest_b: asyncio.Future[bytes] | None = None
        self.reflected = False
        self.logged_in = False
        self.calls: list[tuple[str, str, list[Any]]] = []

    async def _handshake_start(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str, ours: int
    ) -> bytes:
        await read_packet(reader, 2)
        writer.write(packet(b"sok", 2))
        n = name.encode()
        writer.write(packet(b"N" + struct.pack(">QIIH", PEER_FLAGS, ours, 7, len(n)) + n, 2))
        return await read_packet(reader, 2)  # 'r', the client's challenge, its digest

    async def _serve_a(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._challenge_a is not None and self._digest_b is not None
        reply = await self._handshake_start(reader, writer, self.a.name, secrets.randbits(32))
        (challenge_a,) = struct.unpack(">I", reply[1:5])
        self._challenge_a.set_result(challenge_a)
        try:
            digest_b = await asyncio.wait_for(asyncio.shield(self._digest_b), 10)
        except (ConnectionError, TimeoutError):
            return  # b was refused: nothing to log in with
        writer.write(packet(b"a" + digest_b, 2))
        self.logged_in = True
        await serve_calls(reader, writer, self.calls, lambda m, f, a: self.forged)

    async def _serve_b(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._challenge_a is not None and self._digest_b is not None
        try:
            challenge_a = await asyncio.wait_for(asyncio.shield(self._challenge_a), 10)
            self.reflected = True
            reply = await self._handshake_start(reader, writer, self.b.name, challenge_a)
            self._digest_b.set_result(reply[5:21])
        finally:
            if not self._digest_b.done():  # the client hung up on b
                self._digest_b.set_exception(ConnectionError("b refused"))
        await reader.read()

    async def __aenter__(self) -> ReflectingPeer:
        loop = asyncio.get_running_loop()
        self._challenge_a, self._digest_b = loop.create_future(), loop.create_future()
        await self.a.start()
        await self.b.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.a.close()
        await self.b.close()
