"""Zarr keys of one store <-> the second element of Mnesia keys ``{ArrayId, X}``.

The seed's schema, made lossless. For a store of array ``exp1`` in table ``zarr_storage``:

- ``zarr.json`` -> ``{zarr_storage, {<<"exp1">>, metadata}, Json}``
- chunk ``c/0/1`` (v3, separator ``/``), ``c.0.1`` (separator ``.``), ``0.1`` or ``0/1``
  (v2 encoding) of the root array -> ``{zarr_storage, {<<"exp1">>, {0, 1}}, Bytes}``
- chunk ``c`` of a 0-d root array -> ``{zarr_storage, {<<"exp1">>, {}}, Bytes}``
- any other key (``.zarray``, ``.zattrs``, ``grp/arr/zarr.json``, ``grp/arr/c/0``, ...) ->
  ``{zarr_storage, {<<"exp1">>, <<"grp/arr/c/0">>}, Bytes}``

A key becomes an integer tuple only if the root metadata (``zarr.json``, or ``.zarray`` for
a zarr v2 array) says how its chunk keys are spelt and the key spells a chunk index of that
array exactly (``c/01/0`` does not: it stays a path). Listing formats tuples back with the
same encoding, so it returns exactly the keys that were written. When the root metadata
changes its chunk key encoding (or goes away), the store re-keys the tuple records it holds
so that this stays true.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pyrlang_zarr.term import Atom

METADATA = Atom("metadata")
ROOT_METADATA_KEY = "zarr.json"
V2_ARRAY_METADATA_KEY = ".zarray"


@dataclass(frozen=True, slots=True)
class ChunkKeys:
    """How the root array spells chunk keys: ``prefix`` + indices joined by ``separator``."""

    ndim: int
    separator: str  # "/" or "."
    prefix: str  # "c" for v3's default encoding, "" for the v2 encoding

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
        parts = key.split(self.separator)
        if len(parts) != self.ndim:
            return None
        index = []
        for part in parts:
            if not part.isascii() or not part.isdigit() or (part != "0" and part[0] == "0"):
                return None
            index.append(int(part))
        return tuple(index)


def chunk_keys_from_metadata(key: str, document: bytes | memoryview) -> ChunkKeys | None:
    """The root array's chunk key encoding from its metadata document, if it is one."""
    try:
        meta = json.loads(bytes(document))
    except (ValueError, UnicodeDecodeError):
        return None
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
            if name == "default":
                return ChunkKeys(ndim, config.get("separator", "/"), "c")
            if name == "v2":
                return ChunkKeys(ndim, config.get("separator", "."), "")
            return None
        if key == V2_ARRAY_METADATA_KEY and meta.get("zarr_format") == 2:
            return ChunkKeys(len(meta["shape"]), meta.get("dimension_separator") or ".", "")
    except (KeyError, TypeError):
        return None
    return None


class KeyLayout:
    """The mapping for one store, given the root array's chunk keys (``None``: no array)."""

    __slots__ = ("chunks",)

    def __init__(self, chunks: ChunkKeys | None = None) -> None:
        self.chunks = chunks

    def to_mnesia(self, key: str) -> Any:
        """``X`` of the Mnesia key ``{ArrayId, X}`` for the zarr ``key``."""
        if key == ROOT_METADATA_KEY:
            return METADATA
        if self.chunks is not None:
            index = self.chunks.parse(key)
            if index is not None:
                return index
        return key.encode("utf-8")

    def from_mnesia(self, x: Any) -> str | None:
        """The zarr key for ``X``; ``None`` for a record this layout cannot name (a tuple
        record while no chunk encoding is known)."""
        if isinstance(x, bytes | bytearray | memoryview):
            return bytes(x).decode("utf-8", "surrogateescape")
        if x == METADATA:
            return ROOT_METADATA_KEY
        if isinstance(x, tuple) and self.chunks is not None and len(x) == self.chunks.ndim:
            return self.chunks.format(x)
        return None
