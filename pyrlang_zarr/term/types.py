"""Python types for the Erlang terms that have no natural Python counterpart.

All of them are immutable and hashable (as long as what they hold is), so they can be used as
dict keys the way Erlang uses them as map keys, and they compare by value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pyrlang_zarr.term.tags import FUN_EXT, NEW_FUN_EXT


class Atom(str):
    """An Erlang atom.

    A ``str`` subclass, so it compares and hashes like its name (``Atom("ok") == "ok"``), but a
    distinct type, because the encoder must tell atoms from strings: a plain ``str`` travels as
    a UTF-8 binary.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Atom({str.__repr__(self)})"


def _as_atom(obj: object, field: str, owner: str) -> Atom:
    """Let constructors take a plain ``str`` where Erlang has an atom."""
    if type(obj) is Atom:
        return obj
    if isinstance(obj, str):
        return Atom(obj)
    raise TypeError(f"{owner}.{field} must be a str or Atom, not {type(obj).__name__}")


class ListKey(tuple):  # type: ignore[type-arg]
    """An Erlang list used as a map key (``#{"name" => 1}``: Erlang strings are lists).

    Python dict keys must be hashable, so a list key decodes to this tuple subclass, which
    encodes back as a list. Only map keys are decoded this way; lists elsewhere stay lists.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"ListKey({list(self)!r})"

    # never equal to a tuple: #{[1, 2] => a, {1, 2} => b} has two keys
    def __eq__(self, other: object) -> bool:
        return type(other) is ListKey and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((ListKey, tuple(self)))


@dataclass(frozen=True, slots=True, order=True, init=False)
class Pid:
    """A process identifier; ``node`` is the node the process lives on (a ``str`` is taken
    as the atom of that name)."""

    node: Atom
    id: int
    serial: int
    creation: int

    def __init__(self, node: str, id: int, serial: int, creation: int) -> None:
        object.__setattr__(self, "node", _as_atom(node, "node", "Pid"))
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "serial", serial)
        object.__setattr__(self, "creation", creation)


@dataclass(frozen=True, slots=True, order=True, init=False)
class Reference:
    """A reference (``make_ref()``, monitor refs, call tags); ``ids`` are its 32-bit words."""

    node: Atom
    creation: int
    ids: tuple[int, ...]

    def __init__(self, node: str, creation: int, ids: Iterable[int]) -> None:
        object.__setattr__(self, "node", _as_atom(node, "node", "Reference"))
        object.__setattr__(self, "creation", creation)
        object.__setattr__(self, "ids", ids if type(ids) is tuple else tuple(ids))


@dataclass(frozen=True, slots=True, order=True, init=False)
class Port:
    """A port identifier; only ever compared and passed back, never used locally."""

    node: Atom
    id: int
    creation: int

    def __init__(self, node: str, id: int, creation: int) -> None:
        object.__setattr__(self, "node", _as_atom(node, "node", "Port"))
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "creation", creation)


@dataclass(frozen=True, slots=True, init=False)
class ExportFun:
    """``fun Module:Function/Arity``: a fun that travels as data, with no code attached.

    This is how a client hands e.g. ``fun mnesia:write/1`` to ``mnesia:transaction/2``.
    """

    module: Atom
    function: Atom
    arity: int

    def __init__(self, module: str, function: str, arity: int) -> None:
        if type(arity) is not int:
            raise TypeError(f"ExportFun.arity must be an int, not {type(arity).__name__}")
        object.__setattr__(self, "module", _as_atom(module, "module", "ExportFun"))
        object.__setattr__(self, "function", _as_atom(function, "function", "ExportFun"))
        object.__setattr__(self, "arity", arity)


@dataclass(frozen=True, slots=True)
class ImproperList:
    """A list whose tail is not ``[]``, such as ``[a | b]``; Python lists cannot express it.

    ``elements`` holds the heads (at least one), ``tail`` the final non-list term.
    """

    elements: tuple[Any, ...]
    tail: Any

    def __post_init__(self) -> None:
        if type(self.elements) is not tuple:
            object.__setattr__(self, "elements", tuple(self.elements))
        if not self.elements:
            raise ValueError("ImproperList needs at least one element")
        if isinstance(self.tail, list | ImproperList):
            raise ValueError("ImproperList tail must not be a list; concatenate the lists instead")


@dataclass(frozen=True, slots=True)
class BitBinary:
    """A bitstring whose length is not a multiple of 8, such as ``<<1:1>>``.

    ``bits`` is how many (high) bits of the last byte are used, 1 to 8. The unused low bits are
    cleared so that equal bitstrings compare equal.
    """

    data: bytes
    bits: int

    def __post_init__(self) -> None:
        if type(self.data) is not bytes:
            object.__setattr__(self, "data", bytes(self.data))
        if type(self.bits) is not int or not 1 <= self.bits <= 8:
            raise ValueError(f"BitBinary.bits must be an int in 1..8, not {self.bits!r}")
        if not self.data:
            raise ValueError("BitBinary needs at least one byte")
        mask = (0xFF << (8 - self.bits)) & 0xFF
        last = self.data[-1]
        if last & ~mask:
            object.__setattr__(self, "data", self.data[:-1] + bytes((last & mask,)))


@dataclass(frozen=True, slots=True)
class OpaqueFun:
    """A closure (NEW_FUN_EXT or old FUN_EXT), kept as its encoded bytes, tag included.

    Python cannot run it; keeping the bytes lets it be passed back to Erlang unchanged.
    """

    data: bytes

    def __post_init__(self) -> None:
        if type(self.data) is not bytes:
            object.__setattr__(self, "data", bytes(self.data))
        if not self.data or self.data[0] not in (NEW_FUN_EXT, FUN_EXT):
            raise ValueError("OpaqueFun.data must be a NEW_FUN_EXT or FUN_EXT term, tag included")
