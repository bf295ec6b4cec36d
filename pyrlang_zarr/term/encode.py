"""Python values to External Term Format bytes.

The encoder walks the term with an explicit stack, so deep nesting is a clean ``EncodeError``
rather than a ``RecursionError``, and writes into one ``bytearray``. Binaries of 64 KiB or more
are not copied into it: ``encode_parts`` hands them out as separate parts so a multi-MB chunk
can go to the socket with ``writelines`` untouched.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from itertools import chain
from typing import Any, Final

from pyrlang_zarr.errors import EncodeError
from pyrlang_zarr.term.tags import (
    ATOM_UTF8_EXT,
    BINARY_EXT,
    BIT_BINARY_EXT,
    EXPORT_EXT,
    INTEGER_EXT,
    LARGE_BIG_EXT,
    LARGE_TUPLE_EXT,
    LIST_EXT,
    MAP_EXT,
    MAX_ATOM_CHARS,
    MAX_NESTING,
    NEW_FLOAT_EXT,
    NEW_PID_EXT,
    NEW_PORT_EXT,
    NEWER_REFERENCE_EXT,
    NIL_EXT,
    SMALL_ATOM_UTF8_EXT,
    SMALL_BIG_EXT,
    SMALL_INTEGER_EXT,
    SMALL_TUPLE_EXT,
    STRING_EXT,
    V4_PORT_EXT,
    VERSION,
)
from pyrlang_zarr.term.types import (
    Atom,
    BitBinary,
    ExportFun,
    ImproperList,
    ListKey,
    OpaqueFun,
    Pid,
    Port,
    Reference,
)

__all__ = ["ZERO_COPY_THRESHOLD", "encode", "encode_atom", "encode_parts"]

#: Binaries at least this long are handed out as their own part by ``encode_parts``.
ZERO_COPY_THRESHOLD: Final = 64 * 1024

_TAG_U8: Final = struct.Struct(">BB").pack
_TAG_U16: Final = struct.Struct(">BH").pack
_TAG_U32: Final = struct.Struct(">BI").pack
_TAG_I32: Final = struct.Struct(">Bi").pack
_TAG_F64: Final = struct.Struct(">Bd").pack
_TAG_U32_U8: Final = struct.Struct(">BIB").pack
_PID_TAIL: Final = struct.Struct(">III").pack
_U32_U32: Final = struct.Struct(">II").pack
_U64_U32: Final = struct.Struct(">QI").pack
_REF_TAILS: Final = {n: struct.Struct(f">I{n}I").pack for n in range(6)}  # creation, ids

_SMALL_INTS: Final = tuple(bytes((SMALL_INTEGER_EXT, i)) for i in range(256))
_INT32_MIN: Final = -(1 << 31)
_INT32_END: Final = 1 << 31
_U32_MAX: Final = 0xFFFFFFFF

_ATOM_CACHE_LIMIT: Final = 4096
_atom_cache: dict[str, bytes] = {}


def _atom_bytes(name: str) -> bytes:
    """The encoded atom (tag included); recent atoms are cached since they repeat constantly."""
    cached = _atom_cache.get(name)
    if cached is not None:
        return cached
    if len(name) > MAX_ATOM_CHARS:
        raise EncodeError(f"atom longer than {MAX_ATOM_CHARS} characters: {name[:40]!r}...")
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EncodeError(f"atom is not valid Unicode: {name!r}") from exc
    n = len(raw)
    out = _TAG_U8(SMALL_ATOM_UTF8_EXT, n) + raw if n < 256 else _TAG_U16(ATOM_UTF8_EXT, n) + raw
    if len(_atom_cache) < _ATOM_CACHE_LIMIT:
        _atom_cache[str(name)] = out
    return out


def encode_atom(name: str) -> bytes:
    """The atom ``name`` encoded, tag included and no version byte: a piece of a term
    assembled from pre-encoded parts (the node's calls encode their fixed parts once)."""
    return _atom_bytes(name)


_TRUE: Final = _atom_bytes("true")
_FALSE: Final = _atom_bytes("false")
_UNDEFINED: Final = _atom_bytes("undefined")


def _big(value: int) -> bytes:
    """SMALL_BIG_EXT/LARGE_BIG_EXT: sign byte, then magnitude as little-endian bytes."""
    sign = value < 0
    magnitude = -value if sign else value
    n = (magnitude.bit_length() + 7) >> 3
    digits = magnitude.to_bytes(n, "little")
    if n < 256:
        return bytes((SMALL_BIG_EXT, n, sign)) + digits
    if n > _U32_MAX:
        raise EncodeError("integer too large for the External Term Format")
    return _TAG_U32_U8(LARGE_BIG_EXT, n, sign) + digits


def _string_bytes(items: list[Any]) -> bytes | None:
    """The STRING_EXT payload if Erlang would send this list as one, else None.

    ``term_to_binary`` uses STRING_EXT for a proper list of integers 0..255 shorter than 65536;
    doing the same keeps re-encoded terms byte-identical. ``bool`` is an ``int`` to ``bytes()``
    but an atom to us, hence the type check.
    """
    first = items[0]
    if type(first) is not int and (type(first) is bool or not isinstance(first, int)):
        return None  # most lists: no need to look further
    kinds = set(map(type, items))
    if kinds != {int}:
        if not all(issubclass(k, int) and k is not bool for k in kinds):
            return None
        items = [int.__int__(x) for x in items]
    try:
        return bytes(items)
    except ValueError:
        return None


def _buffer(obj: Any) -> memoryview:
    """A flat byte view of any buffer-protocol object (numpy arrays, array.array, ...)."""
    view = memoryview(obj)
    if view.contiguous:
        return view.cast("B") if view.format != "B" or view.ndim != 1 else view
    return memoryview(view.tobytes())


def _normalise(term: Any) -> Any:
    """Map subclasses and other buffers to the exact types the main loop dispatches on."""
    if isinstance(term, Atom):
        return Atom(str.__str__(term))
    if isinstance(term, str):
        return str.__str__(term)
    if isinstance(term, int):  # bool cannot be subclassed, IntEnum and friends land here
        return int.__int__(term)
    if isinstance(term, float):
        return float.__float__(term)
    if isinstance(term, ListKey):
        return list(term)
    if isinstance(term, tuple):
        return tuple(term)
    if isinstance(term, list):
        return list(term)
    if isinstance(term, dict):
        return dict(term)
    if isinstance(term, Pid):
        return Pid(term.node, term.id, term.serial, term.creation)
    if isinstance(term, Reference):
        return Reference(term.node, term.creation, term.ids)
    if isinstance(term, Port):
        return Port(term.node, term.id, term.creation)
    if isinstance(term, ExportFun):
        return ExportFun(term.module, term.function, term.arity)
    if isinstance(term, ImproperList):
        return ImproperList(term.elements, term.tail)
    if isinstance(term, BitBinary):
        return BitBinary(term.data, term.bits)
    if isinstance(term, OpaqueFun):
        return OpaqueFun(term.data)
    try:
        return _buffer(term)
    except TypeError:
        pass
    raise EncodeError(f"cannot encode a value of type {type(term).__name__} as an Erlang term")


def _check_map_keys(mapping: dict[Any, Any]) -> None:
    """Refuse dicts whose keys become equal terms (``"a"`` and ``b"a"``, ``None`` and
    ``Atom("undefined")``, ``True`` and ``Atom("true")``): the peer would reject a map with
    duplicate keys.
    """
    kinds = set(map(type, mapping))
    if str not in kinds and type(None) not in kinds and bool not in kinds:
        return
    as_terms = {_as_term_key(k) for k in mapping}
    if len(as_terms) != len(mapping):
        raise EncodeError(
            "dict keys collide once encoded (a str and the bytes of its UTF-8, None and "
            "Atom('undefined'), or a bool and its atom): an Erlang map cannot hold duplicate keys"
        )


def _as_term_key(key: Any) -> Any:
    """The key as the term it encodes to, where Python and Erlang tell keys apart differently."""
    kind = type(key)
    if kind is str:
        return key.encode("utf-8", "surrogatepass")
    if key is None:
        return Atom("undefined")
    if kind is bool:
        return Atom("true" if key else "false")
    return key


class _ListEnd:
    """Marker pushed after a proper list's elements: write NIL_EXT."""

    __slots__ = ()


_LIST_END: Final = _ListEnd()


def _encode(term: Any, parts: list[bytes | memoryview]) -> bytearray:
    """Write ``term`` (version byte first) into a buffer; big binaries go to ``parts``.

    Returns the buffer holding what follows the last entry of ``parts``.
    """
    out = bytearray((VERSION,))
    stack: list[Iterator[Any]] = []
    it: Iterator[Any] = iter((term,))
    atoms = _atom_cache
    small_ints = _SMALL_INTS
    t: Any = term
    try:
        while True:
            for t in it:
                tp = type(t)
                if tp is Atom:
                    b = atoms.get(t)
                    out += b if b is not None else _atom_bytes(t)
                    continue
                if tp is tuple:
                    n = len(t)
                    if n < 256:
                        out += _TAG_U8(SMALL_TUPLE_EXT, n)
                    else:
                        out += _TAG_U32(LARGE_TUPLE_EXT, n)
                    if n:
                        if len(stack) >= MAX_NESTING:
                            raise EncodeError(f"term nested deeper than {MAX_NESTING} levels")
                        stack.append(it)
                        it = iter(t)
                        break
                    continue
                if tp is int:
                    if 0 <= t < 256:
                        out += small_ints[t]
                    elif _INT32_MIN <= t < _INT32_END:
                        out += _TAG_I32(INTEGER_EXT, t)
                    else:
                        out += _big(t)
                    continue
                if tp is bytes or tp is bytearray or tp is memoryview:
                    if tp is memoryview and (t.format != "B" or t.ndim != 1 or not t.contiguous):
                        t = _buffer(t)
                    n = t.nbytes if tp is memoryview else len(t)
                    if n > _U32_MAX:
                        raise EncodeError("binary larger than 4 GiB")
                    out += _TAG_U32(BINARY_EXT, n)
                    if n >= ZERO_COPY_THRESHOLD:
                        parts.append(bytes(out))
                        parts.append(memoryview(t) if tp is bytearray else t)
                        out = bytearray()
                    else:
                        out += t
                    continue
                if tp is list:
                    n = len(t)
                    if not n:
                        out.append(NIL_EXT)
                        continue
                    if n < 65536:
                        s = _string_bytes(t)
                        if s is not None:
                            out += _TAG_U16(STRING_EXT, n)
                            out += s
                            continue
                    out += _TAG_U32(LIST_EXT, n)
                    if len(stack) >= MAX_NESTING:
                        raise EncodeError(f"term nested deeper than {MAX_NESTING} levels")
                    stack.append(it)
                    it = chain(t, (_LIST_END,))
                    break
                if t is _LIST_END:
                    out.append(NIL_EXT)
                    continue
                if tp is ExportFun:
                    if not 0 <= t.arity < 256:
                        raise EncodeError(f"fun arity out of range 0..255: {t.arity}")
                    out.append(EXPORT_EXT)
                    out += _atom_bytes(t.module)
                    out += _atom_bytes(t.function)
                    out += small_ints[t.arity]
                    continue
                if tp is Pid:
                    out.append(NEW_PID_EXT)
                    node = t.node
                    b = atoms.get(node)
                    out += b if b is not None else _atom_bytes(node)
                    out += _PID_TAIL(t.id, t.serial, t.creation)
                    continue
                if tp is Reference:
                    ids = t.ids
                    out += _TAG_U16(NEWER_REFERENCE_EXT, len(ids))
                    node = t.node
                    b = atoms.get(node)
                    out += b if b is not None else _atom_bytes(node)
                    pack_ids = _REF_TAILS.get(len(ids))
                    if pack_ids is None:
                        pack_ids = struct.Struct(f">I{len(ids)}I").pack
                    out += pack_ids(t.creation, *ids)
                    continue
                if tp is str:
                    try:
                        s = t.encode("utf-8")
                    except UnicodeEncodeError as exc:
                        raise EncodeError(f"str is not valid Unicode: {t[:40]!r}") from exc
                    n = len(s)
                    if n >= ZERO_COPY_THRESHOLD:
                        stack.append(it)  # let the bytes branch handle it (and its size)
                        it = iter((s,))
                        break
                    out += _TAG_U32(BINARY_EXT, n)
                    out += s
                    continue
                if tp is dict:
                    n = len(t)
                    out += _TAG_U32(MAP_EXT, n)
                    if n:
                        if n > 1:
                            _check_map_keys(t)
                        if len(stack) >= MAX_NESTING:
                            raise EncodeError(f"term nested deeper than {MAX_NESTING} levels")
                        stack.append(it)
                        it = chain.from_iterable(t.items())
                        break
                    continue
                if tp is float:
                    if not math.isfinite(t):
                        raise EncodeError(f"Erlang has no float {t!r}")
                    out += _TAG_F64(NEW_FLOAT_EXT, t)
                    continue
                if tp is bool:
                    out += _TRUE if t else _FALSE
                    continue
                if t is None:
                    out += _UNDEFINED
                    continue
                if tp is Port:
                    node_bytes = _atom_bytes(t.node)
                    if t.id > _U32_MAX:
                        out.append(V4_PORT_EXT)
                        out += node_bytes
                        out += _U64_U32(t.id, t.creation)
                    else:
                        out.append(NEW_PORT_EXT)
                        out += node_bytes
                        out += _U32_U32(t.id, t.creation)
                    continue
                if tp is ImproperList:
                    out += _TAG_U32(LIST_EXT, len(t.elements))
                    if len(stack) >= MAX_NESTING:
                        raise EncodeError(f"term nested deeper than {MAX_NESTING} levels")
                    stack.append(it)
                    it = chain(t.elements, (t.tail,))
                    break
                if tp is BitBinary:
                    out += _TAG_U32_U8(BIT_BINARY_EXT, len(t.data), t.bits)
                    out += t.data
                    continue
                if tp is OpaqueFun:
                    out += t.data
                    continue
                stack.append(it)
                it = iter((_normalise(t),))
                break
            else:
                if not stack:
                    return out
                it = stack.pop()
    except struct.error as exc:
        raise EncodeError(f"value out of range in {type(t).__name__}: {exc}") from None


def encode_parts(term: Any) -> list[bytes | memoryview]:
    """Encode ``term`` as a list of parts whose concatenation is ``encode(term)``.

    Binaries of ``ZERO_COPY_THRESHOLD`` bytes or more are their own part (the ``bytes`` object
    itself, or a view of the caller's buffer), so writing the parts does not copy them; the rest
    is coalesced. The caller must not modify those buffers until the parts are sent.
    """
    parts: list[bytes | memoryview] = []
    out = _encode(term, parts)
    if out:
        parts.append(bytes(out))
    return parts


def encode(term: Any) -> bytes:
    """Encode ``term`` as one External Term Format term, version byte included."""
    parts: list[bytes | memoryview] = []
    out = _encode(term, parts)
    if not parts:
        return bytes(out)
    return b"".join([*parts, out])
