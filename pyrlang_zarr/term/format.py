"""Terms printed the way Erlang prints them (``~p``-like), for error messages and logs."""

from __future__ import annotations

import re
from typing import Any

from pyrlang_zarr.term.types import (
    Atom,
    BitBinary,
    ExportFun,
    ImproperList,
    OpaqueFun,
    Pid,
    Port,
    Reference,
)

_BARE_ATOM = re.compile(r"[a-z][A-Za-z0-9_@]*\Z")
_LIMIT = 2000


def format_atom(atom: str) -> str:
    return (
        atom
        if _BARE_ATOM.match(atom)
        else "'" + atom.replace("\\", "\\\\").replace("'", "\\'") + "'"
    )


def format_term(term: Any, limit: int = _LIMIT) -> str:
    """Erlang syntax for ``term``, cut to about ``limit`` characters."""
    text = _fmt(term, 0)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fmt(t: Any, depth: int) -> str:
    if depth > 50:
        return "..."
    d = depth + 1
    if t is True or t is False:
        return "true" if t else "false"
    if t is None:
        return "undefined"
    if isinstance(t, Atom):
        return format_atom(t)
    if isinstance(t, int | float):
        return repr(t)
    if isinstance(t, bytes | bytearray | memoryview):
        data = bytes(t[:200])
        more = "..." if len(t) > 200 else ""
        if data and all(32 <= c < 127 for c in data):
            return '<<"' + data.decode().replace("\\", "\\\\").replace('"', '\\"') + more + '">>'
        return "<<" + ",".join(map(str, data)) + (",..." if more else "") + ">>"
    if isinstance(t, str):
        return _fmt(t.encode(), depth)
    if isinstance(t, tuple):
        return "{" + ",".join(_fmt(x, d) for x in t) + "}"
    if isinstance(t, list):
        if t and all(isinstance(c, int) and 32 <= c < 127 for c in t):
            return '"' + "".join(map(chr, t)).replace('"', '\\"') + '"'
        return "[" + ",".join(_fmt(x, d) for x in t) + "]"
    if isinstance(t, ImproperList):
        return "[" + ",".join(_fmt(x, d) for x in t.elements) + "|" + _fmt(t.tail, d) + "]"
    if isinstance(t, dict):
        return "#{" + ",".join(f"{_fmt(k, d)} => {_fmt(v, d)}" for k, v in t.items()) + "}"
    if isinstance(t, Pid):
        return f"<{t.node}.{t.id}.{t.serial}>"
    if isinstance(t, Reference):
        return f"#Ref<{t.node}." + ".".join(map(str, t.ids)) + ">"
    if isinstance(t, Port):
        return f"#Port<{t.node}.{t.id}>"
    if isinstance(t, ExportFun):
        return f"fun {format_atom(t.module)}:{format_atom(t.function)}/{t.arity}"
    if isinstance(t, OpaqueFun):
        return "#Fun<...>"
    if isinstance(t, BitBinary):
        return f"<<{len(t.data)} bytes, {t.bits} bits in the last>>"
    return repr(t)
