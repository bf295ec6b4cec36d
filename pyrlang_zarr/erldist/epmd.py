"""EPMD client: find the distribution port of a node by name (``PORT_PLEASE2_REQ``).

The request/reply codec is pure; :func:`lookup` is the asyncio shell around it. The reply is
read field by field, never "until EOF": a real one is under 300 bytes, and a reply longer than
:data:`MAX_REPLY` is refused before it is read.
"""

from __future__ import annotations

import asyncio
import os
import struct
from dataclasses import dataclass

from pyrlang_zarr.errors import NodeUnreachable, ProtocolError

EPMD_PORT = 4369
PORT_PLEASE2_REQ = 122
PORT2_RESP = 119
#: The longest reply accepted: tag, result, 10 bytes of fields, a node name (EPMD's own limit
#: is 255 characters, up to 4 UTF-8 bytes each), the extra field's length and the extra field.
MAX_REPLY = 2048


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """What EPMD knows about a registered node."""

    name: str
    port: int
    node_type: int  # 77 normal, 72 hidden
    protocol: int  # 0 = tcp/ip v4
    highest_version: int
    lowest_version: int
    extra: bytes


def encode_port_please2(name: str) -> bytes:
    """The look-up request for the short ``name`` (the part before ``@``)."""
    body = bytes([PORT_PLEASE2_REQ]) + name.encode("utf-8")
    return struct.pack(">H", len(body)) + body


def decode_port2_resp(data: bytes) -> NodeEntry | None:
    """The reply: the entry, or ``None`` when the name is not registered."""
    if len(data) < 2 or data[0] != PORT2_RESP:
        raise ProtocolError(f"EPMD sent an unexpected reply {bytes(data[:16])!r}")
    if data[1] != 0:
        return None
    try:
        port, ntype, proto, high, low, nlen = struct.unpack_from(">HBBHHH", data, 2)
        name = data[12 : 12 + nlen]
        (elen,) = struct.unpack_from(">H", data, 12 + nlen)
        extra = data[14 + nlen : 14 + nlen + elen]
    except struct.error:
        raise ProtocolError(f"EPMD reply is truncated ({len(data)} bytes)") from None
    if len(name) != nlen or len(extra) != elen:
        raise ProtocolError(f"EPMD reply is truncated ({len(data)} bytes)")
    return NodeEntry(name.decode("utf-8", "replace"), port, ntype, proto, high, low, bytes(extra))


def epmd_port() -> int:
    """EPMD's port: ``ERL_EPMD_PORT`` if set (as for ``erl`` itself), else 4369."""
    value = os.environ.get("ERL_EPMD_PORT", "")
    return int(value) if value.strip() else EPMD_PORT


async def _read_reply(reader: asyncio.StreamReader) -> bytes:
    """One PORT2_RESP, read by its own lengths; at most :data:`MAX_REPLY` bytes."""
    head = await reader.readexactly(2)
    if head[0] != PORT2_RESP or head[1] != 0:
        return head  # not registered, or not a reply at all: decoded (and refused) as it is
    fixed = await reader.readexactly(10)
    nlen = struct.unpack_from(">H", fixed, 8)[0]
    if 12 + nlen + 2 > MAX_REPLY:
        raise ProtocolError(f"EPMD reply announces a {nlen}-byte node name (limit {MAX_REPLY})")
    named = await reader.readexactly(nlen + 2)  # the name and the extra field's length
    elen = struct.unpack_from(">H", named, nlen)[0]
    if 14 + nlen + elen > MAX_REPLY:
        raise ProtocolError(
            f"EPMD reply announces {elen} bytes of extra data (replies are limited to "
            f"{MAX_REPLY} bytes)"
        )
    return head + fixed + named + await reader.readexactly(elen)


async def lookup(
    host: str, name: str, *, port: int | None = None, timeout: float = 5.0
) -> NodeEntry:
    """Ask EPMD on ``host`` for node ``name``; EPMD closes the socket after its reply."""
    if port is None:
        port = epmd_port()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=MAX_REPLY)
            try:
                writer.write(encode_port_please2(name))
                data = await _read_reply(reader)
            except asyncio.IncompleteReadError as exc:
                got = len(exc.partial)
                raise ProtocolError(
                    f"EPMD on {host}:{port} closed in the middle of its reply "
                    f"({got} of {exc.expected} bytes of a field)"
                ) from None
            finally:
                writer.close()
    except TimeoutError:
        raise NodeUnreachable(f"EPMD on {host}:{port} did not answer within {timeout} s") from None
    except OSError as exc:
        raise NodeUnreachable(
            f"cannot reach EPMD on {host}:{port} ({exc.strerror or exc}); "
            f"is an Erlang node running on {host}?"
        ) from None
    entry = decode_port2_resp(data)
    if entry is None:
        raise NodeUnreachable(f"no node named {name!r} is registered with EPMD on {host}")
    return entry
