"""External Term Format bytes to Python values.

Every term a peer sends passes through here, so the decoder is one loop that dispatches on the
tag byte and keeps its own stack of open containers: no Python recursion (deep nesting is a
``DecodeError``, not a ``RecursionError``), and every length field is checked against the bytes
that are left before anything is allocated for it. Anything malformed raises ``DecodeError``
naming the tag and its offset.

Work is bounded by the input: every value takes at least one byte, a list whose tail is another
list is continued rather than copied into (``[a | [b | [c]]]`` is linear, not quadratic), maps
whose keys collide in Python's hash are refused beyond a bound, and a compressed term may
inflate to :data:`MAX_INFLATED_SIZE` bytes and decode to a number of values bounded by its
compressed size.
"""

from __future__ import annotations

import math
import struct
import sys
import zlib
from collections import Counter
from typing import Any, Final, TypeAlias

from pyrlang_zarr.errors import DecodeError
from pyrlang_zarr.term.tags import (
    ATOM_CACHE_REF,
    ATOM_EXT,
    ATOM_UTF8_EXT,
    BINARY_EXT,
    BIT_BINARY_EXT,
    COMPRESSED,
    COMPRESSED_MIN_VALUES,
    COMPRESSED_VALUES_PER_BYTE,
    EXPORT_EXT,
    FLOAT_EXT,
    FUN_EXT,
    INTEGER_EXT,
    LARGE_BIG_EXT,
    LARGE_TUPLE_EXT,
    LIST_EXT,
    LOCAL_EXT,
    MAP_EXT,
    MAX_INFLATED_SIZE,
    MAX_MAP_COLLISIONS,
    MAX_NESTING,
    NEW_FLOAT_EXT,
    NEW_FUN_EXT,
    NEW_PID_EXT,
    NEW_PORT_EXT,
    NEW_REFERENCE_EXT,
    NEWER_REFERENCE_EXT,
    NIL_EXT,
    PID_EXT,
    PORT_EXT,
    REFERENCE_EXT,
    SMALL_ATOM_EXT,
    SMALL_ATOM_UTF8_EXT,
    SMALL_BIG_EXT,
    SMALL_INTEGER_EXT,
    SMALL_TUPLE_EXT,
    STRING_EXT,
    TAG_NAMES,
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

__all__ = ["decode", "decode_element", "decode_term"]

_U16: Final = struct.Struct(">H").unpack_from
_U32: Final = struct.Struct(">I").unpack_from
_I32: Final = struct.Struct(">i").unpack_from
_F64: Final = struct.Struct(">d").unpack_from
_U32_U8: Final = struct.Struct(">IB").unpack_from
_U32_U32: Final = struct.Struct(">II").unpack_from
_U32_U32_U8: Final = struct.Struct(">IIB").unpack_from
_U32x3: Final = struct.Struct(">III").unpack_from
_U64_U32: Final = struct.Struct(">QI").unpack_from
_IDS: Final = {n: struct.Struct(f">{n}I").unpack_from for n in range(1, 6)}  # reference ids

# Container kinds on the decoder's stack.
_TUPLE: Final = 0
_LIST: Final = 1
_MAP: Final = 2
_FUN: Final = 3

#: NEW_FUN_EXT fixed fields after the tag: Size:4 Arity:1 Uniq:16 Index:4 NumFree:4.
_NEW_FUN_HEADER: Final = 29

_ATOM_CACHE_LIMIT: Final = 8192
#: UTF-8 atom bytes -> decoded value; atoms repeat in every message, decoding them once pays.
_atom_cache: dict[Any, Any] = {b"true": True, b"false": False}
#: The same for atoms inside pids, references and ports (node names), which stay atoms.
_node_cache: dict[bytes, Atom] = {}
_PID_CACHE_LIMIT: Final = 4096
_pid_cache: dict[bytes, Pid] = {}

_Buffer: TypeAlias = bytes | memoryview


def _tag_name(tag: int) -> str:
    return TAG_NAMES.get(tag, f"tag {tag}")


def _utf8_atom(raw: _Buffer) -> Any:
    """Decode (and cache) a UTF-8 atom; ``true``/``false`` come out as ``bool``."""
    value = Atom(str(raw, "utf-8"))
    if len(_atom_cache) < _ATOM_CACHE_LIMIT:
        _atom_cache[bytes(raw)] = value
    return value


def _latin1_atom(raw: _Buffer) -> Any:
    text = str(raw, "latin-1")
    if text == "true":
        return True
    if text == "false":
        return False
    return Atom(text)


def _read_atom(buf: _Buffer, pos: int, end: int) -> tuple[Atom, int]:
    """An atom embedded in a pid, reference, port or export: always an ``Atom``, never a bool."""
    tag = buf[pos]
    if tag == SMALL_ATOM_UTF8_EXT:
        start = pos + 2
        stop = start + buf[pos + 1]
        if stop <= end:
            raw = bytes(buf[start:stop])  # no copy when buf is bytes
            atom = _node_cache.get(raw)
            if atom is None:
                atom = Atom(str(raw, "utf-8"))
                if len(_node_cache) < _ATOM_CACHE_LIMIT:
                    _node_cache[raw] = atom
            return atom, stop
    elif tag == SMALL_ATOM_EXT:
        start = pos + 2
        stop = start + buf[pos + 1]
    elif tag == ATOM_UTF8_EXT or tag == ATOM_EXT:
        start = pos + 3
        stop = start + _U16(buf, pos + 1)[0]
    else:
        raise DecodeError(f"expected an atom at offset {pos}, found {_tag_name(tag)}")
    if stop > end:
        raise DecodeError(f"{_tag_name(tag)} at offset {pos} runs past the end of the data")
    encoding = "utf-8" if tag == ATOM_UTF8_EXT or tag == SMALL_ATOM_UTF8_EXT else "latin-1"
    return Atom(str(buf[start:stop], encoding)), stop


def _new_pid(buf: _Buffer, pos: int, end: int) -> tuple[Pid, int]:
    """NEW_PID_EXT after its tag.

    The same few pids come in message after message (ours, in every reply), so they are
    cached by their bytes.
    """
    if buf[pos] == SMALL_ATOM_UTF8_EXT:
        stop = pos + 14 + buf[pos + 1]  # atom tag, length, name, id:32, serial:32, creation:32
        if stop <= end:
            raw = bytes(buf[pos:stop])
            pid = _pid_cache.get(raw)
            if pid is None:
                node = _read_atom(raw, 0, len(raw))[0]
                pid = _pid(node, *_U32x3(raw, len(raw) - 12))
                if len(_pid_cache) >= _PID_CACHE_LIMIT:
                    _pid_cache.clear()
                _pid_cache[raw] = pid
            return pid, stop
    node, pos = _read_atom(buf, pos, end)
    return _pid(node, *_U32x3(buf, pos)), pos + 12


# Constructors for the decoder's already checked values: they skip ``__init__`` and its
# argument checks, which cost more than decoding the bytes.
_new = object.__new__
_set_pid_node, _set_pid_id, _set_pid_serial, _set_pid_creation = (
    Pid.__dict__[name].__set__ for name in ("node", "id", "serial", "creation")
)
_set_ref_node, _set_ref_creation, _set_ref_ids = (
    Reference.__dict__[name].__set__ for name in ("node", "creation", "ids")
)


def _pid(node: Atom, pid_id: int, serial: int, creation: int) -> Pid:
    pid = _new(Pid)
    _set_pid_node(pid, node)
    _set_pid_id(pid, pid_id)
    _set_pid_serial(pid, serial)
    _set_pid_creation(pid, creation)
    return pid


def _reference(node: Atom, creation: int, ids: tuple[int, ...]) -> Reference:
    ref = _new(Reference)
    _set_ref_node(ref, node)
    _set_ref_creation(ref, creation)
    _set_ref_ids(ref, ids)
    return ref


def _hashable(key: Any) -> Any:
    """A map key Python can hash: lists become :class:`ListKey` (maps cannot be helped)."""
    kind = type(key)
    if kind is list:
        return ListKey(_hashable(k) for k in key)
    if kind is tuple:
        return tuple(_hashable(k) for k in key)
    if kind is ImproperList:
        return ImproperList(tuple(_hashable(k) for k in key.elements), _hashable(key.tail))
    if kind is memoryview:
        return bytes(key)
    return key


#: Maps up to this size are built without looking at their keys' hashes first.
_SMALL_MAP: Final = 64


def _check_collisions(keys: list[Any], start: int) -> None:
    """Refuse keys whose equal hashes would make building the dict quadratic."""
    hashes = list(map(hash, keys))
    if len(set(hashes)) == len(hashes):
        return
    work = sum(n * (n - 1) // 2 for n in Counter(hashes).values() if n > 1)
    if work > MAX_MAP_COLLISIONS:
        raise DecodeError(
            f"MAP_EXT at offset {start}: {len(keys)} keys of which many share a Python hash "
            f"({work} same-hash comparisons to build it, limit {MAX_MAP_COLLISIONS})"
        )


def _make_map(items: list[Any], start: int, copy_binaries: bool) -> dict[Any, Any]:
    keys = items[0::2]
    try:
        if not copy_binaries:  # a view of a bytearray cannot be hashed
            keys = [_hashable(k) for k in keys]
        if len(keys) > _SMALL_MAP:
            try:
                _check_collisions(keys, start)
            except TypeError:  # a list (an Erlang string) as a key: make it a ListKey
                keys = [_hashable(k) for k in keys]
                _check_collisions(keys, start)
        try:
            result = dict(zip(keys, items[1::2], strict=True))
        except TypeError:  # a list (an Erlang string) as a key: make it a ListKey
            keys = [_hashable(k) for k in keys]
            result = dict(zip(keys, items[1::2], strict=True))
    except TypeError as exc:
        raise DecodeError(
            f"MAP_EXT at offset {start}: map key of unhashable type ({exc}); a map used as a "
            "map key has no Python equivalent"
        ) from None
    except RecursionError:  # keys nested very deep, or equal hashes compared recursively
        raise DecodeError(f"MAP_EXT at offset {start}: keys nested too deep") from None
    if len(result) != len(keys):
        raise DecodeError(
            f"MAP_EXT at offset {start}: duplicate keys, or keys that Python treats as equal "
            "(such as 1, 1.0 and true)"
        )
    return result


def _too_long(tag: int, tag_pos: int, what: str, count: int, left: int) -> DecodeError:
    return DecodeError(
        f"{_tag_name(tag)} at offset {tag_pos} claims {count} {what} but only {left} bytes are left"
    )


def _too_many_values(tag: int, tag_pos: int, limit: int) -> DecodeError:
    return DecodeError(
        f"{_tag_name(tag)} at offset {tag_pos}: the compressed term decodes to more than {limit} "
        "values, too many for its compressed size"
    )


def _nested_too_deep(tag: int, tag_pos: int) -> DecodeError:
    return DecodeError(
        f"{_tag_name(tag)} at offset {tag_pos} is nested deeper than {MAX_NESTING} levels"
    )


def _decode_body(
    buf: _Buffer, pos: int, end: int, copy_binaries: bool, max_values: int = sys.maxsize
) -> tuple[Any, int]:
    """Decode the term whose tag is at ``buf[pos]`` (no version byte); return it and its end.

    At most ``max_values`` elements of lists, tuples, maps and funs are decoded.
    """
    is_bytes = type(buf) is bytes
    view = None if copy_binaries else memoryview(buf).toreadonly()
    atoms = _atom_cache
    pids: dict[Any, Pid] = _pid_cache  # looked up by bytes or by a bytes-like slice
    # The innermost open container lives in locals; the ones around it wait on the stack.
    kind = -1
    count = 0
    items: list[Any] | None = None
    start_of = pos
    fun_end = -1
    stack: list[tuple[int, int, list[Any] | None, int, int]] = []
    tag = -1
    tag_pos = pos
    values = 0  # elements of the containers opened so far
    value: Any
    try:
        while True:
            if pos >= end:
                where = f" inside the term at offset {start_of}" if items is not None else ""
                raise DecodeError(f"unexpected end of data at offset {pos}{where}")
            tag_pos = pos
            tag = buf[pos]
            pos += 1
            if tag == SMALL_ATOM_UTF8_EXT:
                start = pos + 1
                pos = start + buf[pos]
                if pos > end:
                    raise _too_long(tag, tag_pos, "bytes", pos - start, end - start)
                raw = buf[start:pos] if is_bytes else bytes(buf[start:pos])
                value = atoms.get(raw)
                if value is None:
                    value = _utf8_atom(raw)
            elif tag == SMALL_TUPLE_EXT:
                n = buf[pos]
                pos += 1
                if n == 0:
                    value = ()
                else:
                    if n > end - pos:
                        raise _too_long(tag, tag_pos, "elements", n, end - pos)
                    values += n
                    if values > max_values:
                        raise _too_many_values(tag, tag_pos, max_values)
                    if len(stack) >= MAX_NESTING:
                        raise _nested_too_deep(tag, tag_pos)
                    stack.append((kind, count, items, start_of, fun_end))
                    kind, count, items, start_of, fun_end = _TUPLE, n, [], tag_pos, -1
                    continue
            elif tag == SMALL_INTEGER_EXT:
                value = buf[pos]
                pos += 1
            elif tag == BINARY_EXT:
                start = pos + 4
                pos = start + _U32(buf, pos)[0]
                if pos > end:
                    raise _too_long(tag, tag_pos, "bytes", pos - start, end - start)
                if view is not None:
                    value = view[start:pos]
                elif is_bytes:
                    value = buf[start:pos]
                else:
                    value = bytes(buf[start:pos])
            elif tag == NIL_EXT:
                value = []
            elif tag == LIST_EXT:
                n = _U32(buf, pos)[0] + 1  # the elements, then the tail
                pos += 4
                if n > end - pos:
                    raise _too_long(tag, tag_pos, "elements", n - 1, end - pos)
                values += n
                if values > max_values:
                    raise _too_many_values(tag, tag_pos, max_values)
                if kind == _LIST and items is not None and len(items) == count - 1:
                    # the tail of the open list is a list: continue it (ERTS never sends
                    # this; merging the finished tail into its head would copy it per level)
                    count += n - 1
                    continue
                if len(stack) >= MAX_NESTING:
                    raise _nested_too_deep(tag, tag_pos)
                stack.append((kind, count, items, start_of, fun_end))
                kind, count, items, start_of, fun_end = _LIST, n, [], tag_pos, -1
                continue
            elif tag == STRING_EXT:
                start = pos + 2
                pos = start + _U16(buf, pos)[0]
                if pos > end:
                    raise _too_long(tag, tag_pos, "bytes", pos - start, end - start)
                values += pos - start
                if values > max_values:
                    raise _too_many_values(tag, tag_pos, max_values)
                value = list(buf[start:pos])
            elif tag == INTEGER_EXT:
                value = _I32(buf, pos)[0]
                pos += 4
            elif tag == NEW_PID_EXT:
                # Cache hit only for a whole pid whose node is a SMALL_ATOM_UTF8_EXT: a key's
                # length follows from its own second byte, so a cut-off slice cannot match.
                stop = pos + 14 + buf[pos + 1]
                value = pids.get(buf[pos:stop] if is_bytes else bytes(buf[pos:stop]))
                if value is None:
                    value, pos = _new_pid(buf, pos, end)
                else:
                    pos = stop
            elif tag == NEWER_REFERENCE_EXT or tag == NEW_REFERENCE_EXT:
                n = _U16(buf, pos)[0]
                node, pos = _read_atom(buf, pos + 2, end)
                if tag == NEWER_REFERENCE_EXT:
                    creation = _U32(buf, pos)[0]
                    pos += 4
                else:
                    creation = buf[pos]
                    pos += 1
                if 4 * n > end - pos:
                    raise _too_long(tag, tag_pos, "bytes of ids", 4 * n, end - pos)
                unpack_ids = _IDS.get(n)
                ids = unpack_ids(buf, pos) if unpack_ids else struct.unpack_from(f">{n}I", buf, pos)
                pos += 4 * n
                value = _reference(node, creation, ids)
            elif tag == MAP_EXT:
                n = 2 * _U32(buf, pos)[0]
                pos += 4
                if n == 0:
                    value = {}
                else:
                    if n > end - pos:
                        raise _too_long(tag, tag_pos, "keys and values", n, end - pos)
                    values += n
                    if values > max_values:
                        raise _too_many_values(tag, tag_pos, max_values)
                    if len(stack) >= MAX_NESTING:
                        raise _nested_too_deep(tag, tag_pos)
                    stack.append((kind, count, items, start_of, fun_end))
                    kind, count, items, start_of, fun_end = _MAP, n, [], tag_pos, -1
                    continue
            elif tag == NEW_FLOAT_EXT:
                value = _F64(buf, pos)[0]
                pos += 8
                if not math.isfinite(value):
                    raise DecodeError(f"NEW_FLOAT_EXT at offset {tag_pos}: {value} is not a float")
            elif tag == SMALL_BIG_EXT or tag == LARGE_BIG_EXT:
                if tag == SMALL_BIG_EXT:
                    n = buf[pos]
                    pos += 1
                else:
                    n = _U32(buf, pos)[0]
                    pos += 4
                negative = buf[pos]
                start = pos + 1
                pos = start + n
                if pos > end:
                    raise _too_long(tag, tag_pos, "bytes", n, end - start)
                value = int.from_bytes(buf[start:pos], "little")
                if negative:  # any non-zero sign byte, as in ERTS
                    value = -value
            elif tag == ATOM_UTF8_EXT:
                start = pos + 2
                pos = start + _U16(buf, pos)[0]
                if pos > end:
                    raise _too_long(tag, tag_pos, "bytes", pos - start, end - start)
                raw = buf[start:pos] if is_bytes else bytes(buf[start:pos])
                value = atoms.get(raw)
                if value is None:
                    value = _utf8_atom(raw)
            elif tag == SMALL_ATOM_EXT or tag == ATOM_EXT:
                if tag == SMALL_ATOM_EXT:
                    start = pos + 1
                    pos = start + buf[pos]
                else:
                    start = pos + 2
                    pos = start + _U16(buf, pos)[0]
                if pos > end:
                    raise _too_long(tag, tag_pos, "bytes", pos - start, end - start)
                value = _latin1_atom(buf[start:pos])
            elif tag == LARGE_TUPLE_EXT:
                n = _U32(buf, pos)[0]
                pos += 4
                if n == 0:
                    value = ()
                else:
                    if n > end - pos:
                        raise _too_long(tag, tag_pos, "elements", n, end - pos)
                    values += n
                    if values > max_values:
                        raise _too_many_values(tag, tag_pos, max_values)
                    if len(stack) >= MAX_NESTING:
                        raise _nested_too_deep(tag, tag_pos)
                    stack.append((kind, count, items, start_of, fun_end))
                    kind, count, items, start_of, fun_end = _TUPLE, n, [], tag_pos, -1
                    continue
            elif tag == EXPORT_EXT:
                module, pos = _read_atom(buf, pos, end)
                function, pos = _read_atom(buf, pos, end)
                arity_tag = buf[pos]
                if arity_tag == SMALL_INTEGER_EXT:
                    arity = buf[pos + 1]
                    pos += 2
                elif arity_tag == INTEGER_EXT:
                    arity = _I32(buf, pos + 1)[0]
                    pos += 5
                    if not 0 <= arity <= 255:
                        raise DecodeError(f"EXPORT_EXT at offset {tag_pos}: arity {arity}")
                else:
                    raise DecodeError(
                        f"EXPORT_EXT at offset {tag_pos}: arity must be an integer, found "
                        f"{_tag_name(arity_tag)}"
                    )
                value = ExportFun(module, function, arity)
            elif tag == BIT_BINARY_EXT:
                n, bits = _U32_U8(buf, pos)
                start = pos + 5
                pos = start + n
                if pos > end:
                    raise _too_long(tag, tag_pos, "bytes", n, end - start)
                if (n == 0) != (bits == 0) or bits > 8:
                    raise DecodeError(
                        f"BIT_BINARY_EXT at offset {tag_pos}: {bits} bits used of {n} bytes"
                    )
                if bits == 0 or bits == 8:  # whole bytes: Erlang sees an ordinary binary
                    if view is not None:
                        value = view[start:pos]
                    else:
                        value = bytes(buf[start:pos])
                else:
                    value = BitBinary(bytes(buf[start:pos]), bits)
            elif tag == PID_EXT:
                node, pos = _read_atom(buf, pos, end)
                pid_id, serial, creation = _U32_U32_U8(buf, pos)
                pos += 9
                value = _pid(node, pid_id, serial, creation)
            elif tag == NEW_PORT_EXT:
                node, pos = _read_atom(buf, pos, end)
                port_id, creation = _U32_U32(buf, pos)
                pos += 8
                value = Port(node, port_id, creation)
            elif tag == V4_PORT_EXT:
                node, pos = _read_atom(buf, pos, end)
                port_id, creation = _U64_U32(buf, pos)
                pos += 12
                value = Port(node, port_id, creation)
            elif tag == PORT_EXT or tag == REFERENCE_EXT:
                node, pos = _read_atom(buf, pos, end)
                node_id, creation = _U32_U8(buf, pos)
                pos += 5
                if tag == PORT_EXT:
                    value = Port(node, node_id, creation)
                else:
                    value = Reference(node, creation, (node_id,))
            elif tag == NEW_FUN_EXT:
                size = _U32(buf, pos)[0]
                new_end = pos + size
                if size < _NEW_FUN_HEADER or new_end > end:
                    raise DecodeError(
                        f"NEW_FUN_EXT at offset {tag_pos}: size {size} does not fit the data"
                    )
                n = _U32(buf, pos + 25)[0] + 4  # module, old index, old uniq, pid, free vars
                pos += _NEW_FUN_HEADER
                if n > new_end - pos:
                    raise _too_long(tag, tag_pos, "terms", n, new_end - pos)
                values += n
                if values > max_values:
                    raise _too_many_values(tag, tag_pos, max_values)
                if len(stack) >= MAX_NESTING:
                    raise _nested_too_deep(tag, tag_pos)
                stack.append((kind, count, items, start_of, fun_end))
                kind, count, items, start_of, fun_end = _FUN, n, [], tag_pos, new_end
                continue
            elif tag == FUN_EXT:
                n = _U32(buf, pos)[0] + 4  # pid, module, index, uniq, free vars
                pos += 4
                if n > end - pos:
                    raise _too_long(tag, tag_pos, "terms", n, end - pos)
                values += n
                if values > max_values:
                    raise _too_many_values(tag, tag_pos, max_values)
                if len(stack) >= MAX_NESTING:
                    raise _nested_too_deep(tag, tag_pos)
                stack.append((kind, count, items, start_of, fun_end))
                kind, count, items, start_of, fun_end = _FUN, n, [], tag_pos, -1
                continue
            elif tag == FLOAT_EXT:
                if pos + 31 > end:
                    raise _too_long(tag, tag_pos, "bytes", 31, end - pos)
                text = bytes(buf[pos : pos + 31]).split(b"\0", 1)[0]
                pos += 31
                try:
                    value = float(text)
                except ValueError:
                    raise DecodeError(
                        f"FLOAT_EXT at offset {tag_pos}: bad float {text!r}"
                    ) from None
                if not math.isfinite(value):
                    raise DecodeError(f"FLOAT_EXT at offset {tag_pos}: {value} is not a float")
            elif tag == ATOM_CACHE_REF:
                raise DecodeError(
                    f"ATOM_CACHE_REF at offset {tag_pos}: the atom cache is never negotiated"
                )
            elif tag == LOCAL_EXT:
                raise DecodeError(
                    f"LOCAL_EXT at offset {tag_pos}: only the node that made it can decode it"
                )
            elif tag == COMPRESSED:
                raise DecodeError(
                    f"compressed term at offset {tag_pos}: only allowed right after the version "
                    "byte"
                )
            else:
                raise DecodeError(f"unknown tag {tag} at offset {tag_pos}")

            # A term is complete: hand it to the innermost open container, closing every
            # container it completes.
            while True:
                if items is None:
                    return value, pos
                items.append(value)
                if len(items) < count:
                    break
                if kind == _TUPLE:
                    value = tuple(items)
                elif kind == _LIST:
                    tail = items.pop()
                    if type(tail) is list:
                        items += tail
                        value = items
                    elif not items:  # LIST_EXT of length 0 is just its tail, as in ERTS
                        value = tail
                    elif type(tail) is ImproperList:
                        value = ImproperList((*items, *tail.elements), tail.tail)
                    else:
                        value = ImproperList(tuple(items), tail)
                elif kind == _MAP:
                    value = _make_map(items, start_of, copy_binaries)
                else:
                    if fun_end >= 0 and fun_end != pos:
                        raise DecodeError(
                            f"NEW_FUN_EXT at offset {start_of}: its size field says it ends at "
                            f"{fun_end}, its contents end at {pos}"
                        )
                    value = OpaqueFun(bytes(buf[start_of:pos]))
                kind, count, items, start_of, fun_end = stack.pop()
    except (IndexError, struct.error):
        raise DecodeError(
            f"truncated term: {_tag_name(tag)} at offset {tag_pos} runs past the end of the "
            f"data at offset {end}"
        ) from None
    except UnicodeDecodeError:
        raise DecodeError(f"{_tag_name(tag)} at offset {tag_pos}: invalid UTF-8") from None


def _inflate(buf: _Buffer, pos: int, copy_binaries: bool, max_inflated: int) -> tuple[Any, int]:
    """Decode a compressed term (tag at ``buf[pos]``): ``80, size:32, zlib stream``.

    The declared size is checked, never trusted: inflation stops one byte past it. The values
    decoded from it are bounded by the size of the zlib stream.
    """
    end = len(buf)
    if pos + 5 > end:
        raise DecodeError(f"truncated compressed term at offset {pos}")
    size = _U32(buf, pos + 1)[0]
    if size > max_inflated:
        raise DecodeError(
            f"compressed term at offset {pos} claims {size} bytes inflated (limit {max_inflated})"
        )
    source = memoryview(buf)[pos + 5 :]
    inflater = zlib.decompressobj()
    try:
        inflated = inflater.decompress(source, size + 1)
    except zlib.error as exc:
        raise DecodeError(f"compressed term at offset {pos}: {exc}") from None
    if not inflater.eof or len(inflated) != size:
        raise DecodeError(
            f"compressed term at offset {pos}: declared {size} bytes, the zlib stream "
            + ("is truncated or longer" if not inflater.eof else f"holds {len(inflated)}")
        )
    consumed = len(source) - len(inflater.unused_data)
    max_values = max(COMPRESSED_MIN_VALUES, COMPRESSED_VALUES_PER_BYTE * consumed)
    try:
        value, stop = _decode_body(inflated, 0, size, copy_binaries, max_values)
    except DecodeError as exc:
        raise DecodeError(f"in compressed term at offset {pos}: {exc}") from None
    if stop != size:
        raise DecodeError(
            f"compressed term at offset {pos}: {size - stop} bytes left over after the term"
        )
    return value, pos + 5 + consumed


def decode(
    data: bytes | bytearray | memoryview,
    offset: int = 0,
    *,
    copy_binaries: bool = True,
    max_inflated: int = MAX_INFLATED_SIZE,
) -> tuple[Any, int]:
    """Decode the term at ``data[offset]`` (its version byte); return it and where it ends.

    A distribution frame holds several terms back to back (control message, then payload);
    the returned offset is where the next one starts. With ``copy_binaries=False`` binaries
    come out as read-only ``memoryview`` slices of ``data`` instead of ``bytes`` copies, which
    keep ``data`` alive and must not outlive changes to it. A compressed term may inflate to
    ``max_inflated`` bytes at most.
    """
    buf: _Buffer = data if type(data) is bytes else memoryview(data).cast("B")
    end = len(buf)
    if not 0 <= offset < end:
        raise DecodeError(f"no term at offset {offset}: the data is {end} bytes long")
    if buf[offset] != VERSION:
        raise DecodeError(
            f"expected the version byte {VERSION} at offset {offset}, found {buf[offset]}"
        )
    pos = offset + 1
    if pos < end and buf[pos] == COMPRESSED:
        return _inflate(buf, pos, copy_binaries, max_inflated)
    return _decode_body(buf, pos, end, copy_binaries)


def decode_element(
    data: bytes | bytearray | memoryview, offset: int, *, copy_binaries: bool = True
) -> tuple[Any, int]:
    """Decode the term whose tag is at ``data[offset]``, with no version byte before it (an
    element of a larger term whose first bytes the caller recognised); return it and where
    it ends. Raises :class:`DecodeError` as :func:`decode` does."""
    buf: _Buffer = data if type(data) is bytes else memoryview(data).cast("B")
    end = len(buf)
    if not 0 <= offset < end:
        raise DecodeError(f"no term at offset {offset}: the data is {end} bytes long")
    return _decode_body(buf, offset, end, copy_binaries)


def decode_term(
    data: bytes | bytearray | memoryview,
    *,
    copy_binaries: bool = True,
    max_inflated: int = MAX_INFLATED_SIZE,
) -> Any:
    """Decode ``data`` that must hold exactly one term, version byte first."""
    value, stop = decode(data, 0, copy_binaries=copy_binaries, max_inflated=max_inflated)
    size = len(data) if type(data) is bytes else memoryview(data).nbytes
    if stop != size:
        raise DecodeError(f"{size - stop} bytes left over after the term ending at offset {stop}")
    return value
