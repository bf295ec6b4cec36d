"""Terms printed the way Erlang prints them (``~p``-like), for error messages and logs.

Formatting never raises and never does more work than its output needs: it stops once it has
``limit`` characters, cuts long binaries, and prints integers too long for decimal (Python
refuses ``str`` of ints over 4,300 digits, and it is quadratic) by their leading hex digits.
"""

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
#: Integers up to this many bits print in decimal (4,214 digits; Python's default limit for
#: ``str`` is 4,300), longer ones in hex.
_DECIMAL_BITS = 14_000


class _Full(Exception):
    """The output has reached its limit."""


def format_atom(atom: str) -> str:
    return (
        atom
        if _BARE_ATOM.match(atom)
        else "'" + atom.replace("\\", "\\\\").replace("'", "\\'") + "'"
    )


def format_term(term: Any, limit: int = _LIMIT) -> str:
    """Erlang syntax for ``term``, cut to about ``limit`` characters."""
    out = _Out(limit)
    try:
        out.term(term, 0)
    except _Full:
        pass
    except Exception:  # a value whose own repr fails: say so rather than fail the caller
        out.parts.append(f"<unprintable {type(term).__name__}>")
    text = "".join(out.parts)
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def format_int(n: int, digits: int = _LIMIT) -> str:
    """``n`` in decimal, or as Erlang's ``16#...`` with its leading ``digits`` hex digits."""
    bits = n.bit_length()
    if bits <= _DECIMAL_BITS:
        try:
            return str(n)
        except ValueError:  # sys.set_int_max_str_digits() set lower than that
            pass
    sign = "-" if n < 0 else ""
    shown = min(digits, (bits + 3) // 4)
    head = format(abs(n) >> max(bits - 4 * shown, 0), "X")
    return f"{sign}16#{head}...({bits} bits)" if 4 * shown < bits else f"{sign}16#{head}"


class _Out:
    def __init__(self, limit: int) -> None:
        self.parts: list[str] = []
        self.room = limit + 1  # one more than fits: the result shows it was cut

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.room -= len(text)
        if self.room <= 0:
            raise _Full

    def seq(self, items: Any, depth: int, sep: str = ",") -> None:
        first = True
        for x in items:
            if not first:
                self.add(sep)
            first = False
            self.term(x, depth)

    def term(self, t: Any, depth: int) -> None:
        add = self.add
        if depth > 50:
            add("...")
            return
        d = depth + 1
        if t is True or t is False:
            add("true" if t else "false")
        elif t is None:
            add("undefined")
        elif isinstance(t, Atom):
            add(format_atom(t))
        elif isinstance(t, int):
            add(format_int(int(t), self.room))
        elif isinstance(t, float):
            add(repr(t))
        elif isinstance(t, bytes | bytearray | memoryview):
            data = bytes(t[:200])
            more = len(t) > 200
            if data and all(32 <= c < 127 for c in data):
                text = data.decode().replace("\\", "\\\\").replace('"', '\\"')
                add('<<"' + text + ("..." if more else "") + '">>')
            else:
                add("<<" + ",".join(map(str, data)) + (",..." if more else "") + ">>")
        elif isinstance(t, str):
            self.term(t.encode(), depth)
        elif isinstance(t, tuple):
            add("{")
            self.seq(t, d)
            add("}")
        elif isinstance(t, list):
            if t and all(isinstance(c, int) and 32 <= c < 127 for c in t):
                add('"' + "".join(map(chr, t[: self.room])).replace('"', '\\"') + '"')
            else:
                add("[")
                self.seq(t, d)
                add("]")
        elif isinstance(t, ImproperList):
            add("[")
            self.seq(t.elements, d)
            add("|")
            self.term(t.tail, d)
            add("]")
        elif isinstance(t, dict):
            add("#{")
            first = True
            for k, v in t.items():
                if not first:
                    add(",")
                first = False
                self.term(k, d)
                add(" => ")
                self.term(v, d)
            add("}")
        elif isinstance(t, Pid):
            add(f"<{t.node}.{t.id}.{t.serial}>")
        elif isinstance(t, Reference):
            add(f"#Ref<{t.node}." + ".".join(map(str, t.ids)) + ">")
        elif isinstance(t, Port):
            add(f"#Port<{t.node}.{t.id}>")
        elif isinstance(t, ExportFun):
            add(f"fun {format_atom(t.module)}:{format_atom(t.function)}/{t.arity}")
        elif isinstance(t, OpaqueFun):
            add("#Fun<...>")
        elif isinstance(t, BitBinary):
            add(f"<<{len(t.data)} bytes, {t.bits} bits in the last>>")
        else:
            add(repr(t)[: max(self.room, 0) + 3])
