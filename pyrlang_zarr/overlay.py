"""What zarr sees during one ``set_slice`` or ``get_slice``: two small wrappers of a store.

zarr's chunking and codecs run unchanged, against one of these instead of the
:class:`~pyrlang_zarr.store.MnesiaStore` itself, for one call:

- :class:`WriteBuffer` (``set_slice``): reads go to Mnesia and the md5 of each chunk read
  is noted (a partial chunk is read, merged and rewritten); writes and deletes are kept.
  :meth:`WriteBuffer.commit` sends them in one transaction that first checks, on the
  server, that the chunks read are unchanged.
- :class:`Snapshot` (``get_slice``): reads are served from chunks read beforehand in one
  transaction; it writes nothing.

Both map chunk keys to records with one :class:`~pyrlang_zarr.keys.Root` (the root
metadata as read when the array was opened): a chunk is read from the first present of its
records (ExZarr's ``{Id, {chunk, Idx}}``, then this project's earlier forms), written to
ExZarr's form with the others deleted, and the commit checks on the server that the root
metadata is still that version (so a write never lands under keys another client's array
no longer reads).

They wrap the store in the manner of zarr's ``WrapperStore``, through its public seam
(:meth:`~pyrlang_zarr.store.MnesiaStore.root` and ``mnesia_key``), but unlike
``WrapperStore`` they forward nothing else: what they do not implement, zarr's ``Store``
builds on their own ``get``/``set``/``delete``, or it is refused (listing). So no write
can pass the buffer and escape the transaction. Each serves the chunk keys of one array,
for one call, and equals only itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Self

from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype

from pyrlang_zarr.keys import Root, version
from pyrlang_zarr.mnesia.arriving import Placement
from pyrlang_zarr.mnesia.client import Delete, Either, Guard, MnesiaClient, Write

if TYPE_CHECKING:
    from pyrlang_zarr.store import MnesiaStore


def _slice_bytes(data: bytes | memoryview, byte_range: ByteRequest | None) -> bytes | memoryview:
    if byte_range is None:
        return data
    if isinstance(byte_range, RangeByteRequest):
        return data[byte_range.start : byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return data[byte_range.offset :]
    if isinstance(byte_range, SuffixByteRequest):
        return data[-byte_range.suffix :] if byte_range.suffix else b""
    raise TypeError(f"Unexpected byte_range, got {byte_range!r}")


class _SliceView(Store):
    """What both wrappers share: open with the store they wrap, unlisted, equal to itself."""

    supports_listing = False

    def __init__(self, store: MnesiaStore, *, read_only: bool) -> None:
        super().__init__(read_only=read_only)
        self._is_open = True  # the wrapped store connects lazily: nothing to open here
        self._store = store

    def __eq__(self, other: object) -> bool:
        return other is self

    async def _bytes(self, key: str) -> bytes | memoryview | None:
        raise NotImplementedError

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        data = await self._bytes(key)
        if data is None:
            return None
        return prototype.buffer.from_bytes(_slice_bytes(data, byte_range))

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        return [await self.get(k, prototype, r) for k, r in key_ranges]

    async def exists(self, key: str) -> bool:
        return await self.get(key, default_buffer_prototype()) is not None

    def list(self) -> AsyncIterator[str]:
        raise NotImplementedError("a slice overlay does not list")

    def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        raise NotImplementedError("a slice overlay does not list")

    def list_dir(self, prefix: str) -> AsyncIterator[str]:
        raise NotImplementedError("a slice overlay does not list")


class WriteBuffer(_SliceView):
    """``set_slice``'s view: reads from Mnesia with their md5 noted, writes kept for
    :meth:`commit`."""

    supports_writes = True
    supports_deletes = True

    def __init__(self, store: MnesiaStore, client: MnesiaClient, root: Root | None = None) -> None:
        super().__init__(store, read_only=False)
        self._client = client
        self._root = root  # None: read on first use
        self._versions: dict[Any, bytes | None] = {}  # md5 of each record as first read
        self._pending: dict[str, bytes | memoryview | None] = {}  # None: delete

    async def root(self) -> Root:
        if self._root is None:
            self._root = await self._store.root()
        return self._root

    async def _forms(self, key: str) -> list[Any]:
        return [self._store.mnesia_key(x) for x in (await self.root()).candidates(key)]

    async def _bytes(self, key: str) -> bytes | memoryview | None:
        if key in self._pending:
            return self._pending[key]
        forms = await self._forms(key)
        found = await self._client.dirty_calls([self._client.read_call(k) for k in forms], "read")
        data = None
        for k, records in zip(forms, found, strict=True):
            value = records[0][2] if records else None
            self._versions.setdefault(k, version(value))
            if data is None:
                data = value
        return data

    async def set(self, key: str, value: Buffer) -> None:
        self._pending[key] = value.as_numpy_array().data  # a view: no copy of the chunk

    def keep(self, key: str, data: bytes | memoryview | None) -> None:
        """Write ``data`` under ``key`` at :meth:`commit` (``None``: delete), as encoded
        already (the codec-free path of ``set_slice``, see ``rawchunks.py``)."""
        self._pending[key] = data

    async def delete(self, key: str) -> None:
        self._pending[key] = None

    async def commit(self) -> None:
        """Check that every chunk read and the root metadata are unchanged, then write: one
        transaction. :class:`~pyrlang_zarr.mnesia.client.Conflict` if one changed (nothing
        written; its ``keys`` say which)."""
        root = await self.root()
        reads: list[tuple[Any, bytes | None] | Guard] = list(self._versions.items())
        reads += [Guard(self._store.mnesia_key(x), v) for x, v in root.guards()]
        await self._client.checked_batch(reads, await self._ops())

    async def plan(self) -> tuple[list[Guard], list[Write | Delete]]:
        """What :meth:`commit` sends, for a transaction that commits several buffers at
        once: the guards (chunks read, under a write lock; the root metadata, under a read
        lock) and the writes."""
        root = await self.root()
        guards = [Guard(k, v, write=True) for k, v in self._versions.items()]
        guards += [Guard(self._store.mnesia_key(x), v) for x, v in root.guards()]
        return guards, await self._ops()

    async def _ops(self) -> list[Write | Delete]:
        """The pending writes and deletes, each under every record form its key has."""
        ops: list[Write | Delete] = []
        for key, value in self._pending.items():
            forms = await self._forms(key)
            if value is None:
                ops += [Delete(k) for k in forms]
            else:
                ops.append(Write(forms[0], value, replaces=tuple(forms[1:])))
        return ops


class Snapshot(_SliceView):
    """``get_slice``'s view: chunks read in one transaction beforehand (:meth:`read`)."""

    supports_writes = False
    supports_deletes = False

    def __init__(self, store: MnesiaStore, chunks: dict[str, Any], root: Root) -> None:
        super().__init__(store, read_only=True)
        self._chunks = chunks
        self.root_now = root  # the array's root as read with the chunks

    @classmethod
    async def read(
        cls,
        store: MnesiaStore,
        client: MnesiaClient,
        keys: Sequence[str],
        root: Root | None = None,
        *,
        consistent: bool = True,
        placement: Callable[[list[str | None]], Placement] | None = None,
    ) -> Self:
        """The chunks ``keys`` (absent ones as missing), read consistently in one go
        (``consistent=False``: each on its own), each from the first present of its records
        as ``root`` (default: read now) maps them; the root is read along with them
        (:attr:`root_now`: if it differs from ``root``, the chunks were mapped with a stale
        one). ``placement``, given the chunk read at each index of the read (``None``: not
        a chunk), gives where chunks may be received as they arrive
        (:mod:`~pyrlang_zarr.mnesia.arriving`)."""
        meta = store.root_keys()
        if root is None:  # read first: the chunks' keys follow from it
            root = await store.root()
        forms = [root.candidates(k) for k in keys]
        items = [Either(tuple(store.mnesia_key(x) for x in f)) for f in forms]
        where = None
        if placement is not None:  # the chunk read at each index, the root's records first
            read: list[str | None] = [None] * len(meta)
            read += [k for k, f in zip(keys, forms, strict=True) for _ in f]
            where = placement(read)
        found = await client.read_many([*meta, *items], consistent=consistent, placement=where)
        now = store.root_from(found[: len(meta)])
        return cls(store, dict(zip(keys, found[len(meta) :], strict=True)), now)

    async def _bytes(self, key: str) -> bytes | memoryview | None:
        return self._chunks.get(key)

    @property
    def chunks(self) -> dict[str, Any]:
        """The chunks read, by key (``None``: missing)."""
        return self._chunks

    async def set(self, key: str, value: Buffer) -> None:
        self._check_writable()

    async def delete(self, key: str) -> None:
        self._check_writable()
