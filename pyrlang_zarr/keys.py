"""Zarr keys of one store <-> the second element ``X`` of Mnesia keys ``{ArrayId, X}``.

The records are ExZarr's, as its code writes them (``ExZarr.Storage.Backend.Mnesia``). For a
store of array ``exp1`` in table ``zarr_storage``:

- the root metadata document -> ``{zarr_storage, {<<"exp1">>, metadata}, Json}``: the v2
  ``.zarray`` text or the v3 ``zarr.json`` text. Which zarr key it is served as follows from
  the text itself: a JSON object with ``"zarr_format": 2`` is ``.zarray``, anything else
  ``zarr.json``. When that record already holds the other document, the second one goes to a
  path record (below); when it is deleted, the other document moves into it.
- chunk ``I, J`` of the root array -> ``{zarr_storage, {<<"exp1">>, {chunk, {I, J}}}, Bytes}``
  whatever its spelling (``c/0/1``, ``c.0.1``, ``0.1``, ``0/1``): the spelling comes from the
  root metadata, the record key does not depend on it.
- any other key (``.zattrs``, ``grp/arr/zarr.json``, ``grp/arr/c/0``, ...) ->
  ``{zarr_storage, {<<"exp1">>, <<"grp/arr/c/0">>}, Bytes}``

A key is a chunk key only if the root metadata says how chunk keys are spelt and the key
spells a chunk index of the root array's rank exactly (``c/01/0`` does not). This project's
earlier chunk records ``{<<"exp1">>, {I, J}}`` (the seed docs' form) are still read, listed
and deleted as the same chunk: :mod:`pyrlang_zarr.migrate` moves them to ExZarr's form.

A key maps to a few candidate records: the chunk record, the earlier chunk record and the
path record for a chunk key; the path record otherwise. A read serves the first present one,
a write writes the first and deletes the others, a delete deletes them all, and listing names
each record once. So a store never needs to move records when the root metadata changes:
records follow it, and nothing depends on state a client cached.

Records of any other form (``{Id, {chunk, foo}}``, ``{Id, 42}``, an index of another rank)
cannot be named: they are never listed, moved or deleted, except that clearing the whole
array (``delete_dir("")``, ``clear()``) removes chunk records of every rank.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from pyrlang_zarr.term import Atom

METADATA = Atom("metadata")
CHUNK = Atom("chunk")
ROOT_METADATA_KEY = "zarr.json"
V2_ARRAY_METADATA_KEY = ".zarray"
METADATA_NAMES = (ROOT_METADATA_KEY, V2_ARRAY_METADATA_KEY)
_V2_PATH = V2_ARRAY_METADATA_KEY.encode()


def other_metadata_name(name: str) -> str:
    return V2_ARRAY_METADATA_KEY if name == ROOT_METADATA_KEY else ROOT_METADATA_KEY


def _json(document: bytes | memoryview | None) -> Any:
    if document is None:
        return None
    try:
        return json.loads(bytes(document))
    except (ValueError, UnicodeDecodeError):
        return None


def is_v2_document(document: bytes | memoryview | None) -> bool:
    """Whether ``document`` is a zarr v2 metadata text (``"zarr_format": 2``)."""
    meta = _json(document)
    return (
        isinstance(meta, dict) and type(meta.get("zarr_format")) is int and meta["zarr_format"] == 2
    )


def _ints(value: Any) -> tuple[int, ...] | None:
    try:
        return tuple(int(v) for v in value)
    except (TypeError, ValueError):
        return None


def parse_metadata(zarr_json: bytes | None, zarray: bytes | None) -> dict[str, Any]:
    """kind, format, shape, dtype, chunks and shards from the root metadata documents."""
    if zarr_json is not None:
        try:
            doc = json.loads(bytes(zarr_json))
        except ValueError:
            return {}
        if doc.get("node_type") == "group":
            return {"kind": "group", "zarr_format": 3}
        grid = doc.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape")
        chunks, shards = _ints(grid), None
        for codec in doc.get("codecs", []):
            if isinstance(codec, dict) and codec.get("name") == "sharding_indexed":
                shards = chunks
                chunks = _ints(codec.get("configuration", {}).get("chunk_shape"))
        dtype = doc.get("data_type")
        return {
            "kind": "array",
            "zarr_format": 3,
            "shape": _ints(doc.get("shape", ())),
            "dtype": dtype if isinstance(dtype, str) else json.dumps(dtype),
            "chunks": chunks,
            "shards": shards,
        }
    if zarray is not None:
        try:
            doc = json.loads(bytes(zarray))
        except ValueError:
            return {}
        return {
            "kind": "array",
            "zarr_format": 2,
            "shape": _ints(doc.get("shape", ())),
            "dtype": str(doc.get("dtype")),
            "chunks": _ints(doc.get("chunks", ())),
        }
    return {}


def metadata_name_of(document: bytes | memoryview) -> str:
    """The zarr key the ``{Id, metadata}`` record holding ``document`` is served as."""
    return V2_ARRAY_METADATA_KEY if is_v2_document(document) else ROOT_METADATA_KEY


def version(data: bytes | memoryview | None) -> bytes | None:
    """What a transaction compares to check a record is unchanged: the md5 of its data."""
    return None if data is None else hashlib.md5(data).digest()


@dataclass(frozen=True, slots=True)
class ChunkKeys:
    """How the root array spells chunk keys: ``prefix`` + indices joined by ``separator``."""

    ndim: int
    separator: str  # "/" or "."
    prefix: str  # "c" for v3's default encoding, "" for the v2 encoding
    _template: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        body = self.separator.join(["%d"] * self.ndim)
        head = self.prefix + self.separator if self.prefix and self.ndim else self.prefix
        object.__setattr__(self, "_template", head + body)  # "c/%d/%d", "%d.%d", ...

    def format(self, index: tuple[int, ...]) -> str:
        if not index:
            return self.prefix or "0"
        body = self.separator.join(map(str, index))
        return f"{self.prefix}{self.separator}{body}" if self.prefix else body

    def parse(self, key: str) -> tuple[int, ...] | None:
        """The chunk index ``key`` spells, or ``None`` if it is not exactly one."""
        if self.ndim == 0:
            return () if key == (self.prefix or "0") else None
        if self.prefix:
            head = self.prefix + self.separator
            if not key.startswith(head):
                return None
            key = key[len(head) :]
        index = _indices(key.split(self.separator))
        return index if index is not None and len(index) == self.ndim else None

    def names(self, index: Any) -> str | None:
        """The key of chunk ``index`` if it is an index of this rank, else ``None``."""
        if type(index) is not tuple or len(index) != self.ndim:
            return None
        for i in index:
            if type(i) is not int or i < 0:
                return None
        return self._template % index if index else (self.prefix or "0")

    def could_start_with(self, prefix: str) -> bool:
        """Whether some chunk key starts with ``prefix``."""
        if self.ndim == 0:
            return (self.prefix or "0").startswith(prefix)
        if self.prefix:
            head = self.prefix + self.separator
            if len(prefix) <= len(head):
                return head.startswith(prefix)
            prefix = prefix[len(head) :]
        return all(c.isdigit() or c == self.separator for c in prefix)

    def leading(self, prefix: str) -> tuple[int, ...] | None:
        """For a directory ``prefix`` (``""`` or ending in ``/``): the leading indices every
        chunk key under it has; ``None`` if no chunk key is under it."""
        if prefix == "":
            return ()
        if not self.could_start_with(prefix) or self.ndim == 0:
            return None
        if self.prefix:
            head = self.prefix + self.separator
            if len(prefix) <= len(head):
                return ()
            prefix = prefix[len(head) :]
        if not prefix.endswith(self.separator):
            return None
        lead = _indices(prefix[: -len(self.separator)].split(self.separator))
        return lead if lead is not None and len(lead) < self.ndim else None


def _indices(parts: list[str]) -> tuple[int, ...] | None:
    index = []
    for part in parts:
        if not part.isascii() or not part.isdigit() or (part != "0" and part[0] == "0"):
            return None
        index.append(int(part))
    return tuple(index)


def plausible_indices(key: str) -> tuple[tuple[int, ...], ...]:
    """Every chunk index ``key`` spells under some chunk key encoding (usually none or one).
    Only these keys can map to chunk records: other keys never depend on the metadata."""
    found: list[tuple[int, ...]] = []
    if key in ("c", "0"):
        found.append(())
    for sep in ("/", "."):
        head = "c" + sep
        parts = key[len(head) :].split(sep) if key.startswith(head) else key.split(sep)
        index = _indices(parts)
        if index is not None and index not in found:
            found.append(index)
    return tuple(found)


def chunk_keys_from_metadata(key: str, document: bytes | memoryview) -> ChunkKeys | None:
    """The root array's chunk key encoding from its metadata document, if it is one."""
    meta = _json(document)
    if not isinstance(meta, dict):
        return None
    try:
        if key == ROOT_METADATA_KEY and meta.get("zarr_format") == 3:
            if meta.get("node_type") != "array":
                return None
            ndim = len(meta["shape"])
            encoding = meta.get("chunk_key_encoding", {"name": "default"})
            name = encoding["name"] if isinstance(encoding, dict) else encoding
            config = encoding.get("configuration", {}) if isinstance(encoding, dict) else {}
            config = config if isinstance(config, dict) else {}
            if name == "default":
                return _checked(ChunkKeys(ndim, config.get("separator", "/"), "c"))
            if name == "v2":
                return _checked(ChunkKeys(ndim, config.get("separator", "."), ""))
            return None
        if key == V2_ARRAY_METADATA_KEY and meta.get("zarr_format") == 2:
            separator = meta.get("dimension_separator") or "."
            return _checked(ChunkKeys(len(meta["shape"]), separator, ""))
    except (KeyError, TypeError):
        return None
    return None


def _checked(keys: ChunkKeys) -> ChunkKeys | None:
    return keys if keys.separator in ("/", ".") else None


@dataclass(frozen=True, slots=True)
class Root:
    """The records the key mapping depends on, as read: ``{Id, metadata}`` (``m``) and the
    path record ``{Id, <<".zarray">>}`` (``za``; it holds a v2 array's metadata only in
    records written before ExZarr's forms, and then serves the layout while ``m`` is absent).
    """

    m: bytes | None
    za: bytes | None = None
    #: The zarr key ``{Id, metadata}`` is served as (``None``: no such record).
    m_name: str | None = field(init=False, compare=False, repr=False)
    #: How the root array spells chunk keys; ``None``: there is no root array.
    layout: ChunkKeys | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        m_name = None if self.m is None else metadata_name_of(self.m)
        if self.m is not None:
            layout = chunk_keys_from_metadata(m_name or "", self.m)
        elif self.za is not None:
            layout = chunk_keys_from_metadata(V2_ARRAY_METADATA_KEY, self.za)
        else:
            layout = None
        object.__setattr__(self, "m_name", m_name)
        object.__setattr__(self, "layout", layout)

    def guards(self) -> list[tuple[Any, bytes | None]]:
        """``(X, version)`` of the records the layout was derived from: a transaction that
        maps keys with this layout checks them first."""
        guards: list[tuple[Any, bytes | None]] = [(METADATA, version(self.m))]
        if self.m is None:
            guards.append((_V2_PATH, version(self.za)))
        return guards

    def metadata(self) -> dict[str, Any]:
        """:func:`parse_metadata` of the root's document (v3, or v2 in either record)."""
        if self.m is not None and self.m_name != V2_ARRAY_METADATA_KEY:
            return parse_metadata(self.m, None)
        return parse_metadata(None, self.m if self.m is not None else self.za)

    def candidates(self, key: str) -> tuple[Any, ...]:
        """The records (``X``) that may hold the non-metadata ``key``, the one a write
        writes first. A chunk key: its chunk record, earlier chunk record, path record."""
        layout = self.layout
        index = None if layout is None else layout.parse(key)
        path = key.encode("utf-8")
        if index is None:
            return (path,)
        return ((CHUNK, index), index, path)

    def primary(self, key: str) -> Any:
        """The record (``X``) a write of ``key`` writes (for a metadata key: a write of a
        document of its own kind, see :func:`metadata_plan`)."""
        if key in METADATA_NAMES:
            return METADATA if self.m is None or self.m_name == key else key.encode()
        return self.candidates(key)[0]

    def serves(self, name: str) -> Any:
        """The record (``X``) that holds metadata key ``name`` now."""
        return METADATA if self.m_name == name else name.encode()

    def name(self, x: Any) -> str | None:
        """The zarr key record ``X`` holds, or ``None`` if the store cannot name it. A
        metadata record is named by :attr:`m_name` (pass its data as ``m``)."""
        if isinstance(x, bytes | bytearray | memoryview):
            return bytes(x).decode("utf-8", "surrogateescape")
        if x == METADATA:
            return self.m_name
        layout = self.layout
        if layout is None or type(x) is not tuple:
            return None
        if len(x) == 2 and x[0] == CHUNK:
            return layout.names(x[1])
        return layout.names(x)


@functools.lru_cache(maxsize=256)
def root_of(m: bytes | None, za: bytes | None = None) -> Root:
    """:class:`Root` of the records as read, its JSON parsed once for each distinct text
    (a store reads the metadata with every chunk key it reads)."""
    return Root(m, za)


class KeyLayout:
    """The mapping for one store at one moment (a :class:`Root` read), for code that wants
    the record of a key without reading it: ``to_mnesia(key)`` is the record a write uses."""

    __slots__ = ("root",)

    def __init__(self, root: Root | None = None) -> None:
        self.root = root if root is not None else Root(None)

    @property
    def chunks(self) -> ChunkKeys | None:
        return self.root.layout

    def to_mnesia(self, key: str) -> Any:
        """``X`` of the Mnesia key ``{ArrayId, X}`` a write of ``key`` uses."""
        return self.root.primary(key)

    def from_mnesia(self, x: Any) -> str | None:
        """The zarr key for ``X``; ``None`` for a record this layout cannot name."""
        return self.root.name(x)


# (op, X, data): "write" X with data, "delete" X
PlanOp = tuple[str, Any, bytes | memoryview | None]


def metadata_plan(
    name: str, value: bytes | memoryview | None, m: bytes | None, other: bytes | None
) -> list[PlanOp]:
    """What a write of ``value`` to metadata key ``name`` (``None``: a delete) does, given
    ``{Id, metadata}`` (``m``) and the path record of the other metadata key (``other``).

    ``{Id, metadata}`` holds ``name`` when the value is of ``name``'s kind (see
    :func:`metadata_name_of`) and the record is free or already holds ``name``; otherwise
    the value goes to the path record ``{Id, <<name>>}``. When ``{Id, metadata}`` loses
    ``name``, the other document moves into it if it is of the other kind: an ExZarr reader
    always finds the array's metadata there.
    """
    path = name.encode()
    holds_name = m is not None and metadata_name_of(m) == name
    ops: list[PlanOp] = []
    if value is not None and metadata_name_of(value) == name and (m is None or holds_name):
        return [("write", METADATA, value), ("delete", path, None)]
    if value is None:
        ops.append(("delete", path, None))
    else:
        ops.append(("write", path, value))
    if holds_name:
        ops.append(("delete", METADATA, None))
        other_name = other_metadata_name(name)
        if other is not None and metadata_name_of(other) == other_name:
            ops += [("write", METADATA, other), ("delete", other_name.encode(), None)]
    return ops


def root_after(root: Root, name: str, plan: list[PlanOp]) -> Root:
    """The :class:`Root` once ``plan`` (for metadata key ``name``) is applied."""
    m, za = root.m, root.za
    for op, x, data in plan:
        value = None if op == "delete" else bytes(data)  # type: ignore[arg-type]
        if x == METADATA:
            m = value
        elif x == _V2_PATH:
            za = value
    return Root(m, za)
