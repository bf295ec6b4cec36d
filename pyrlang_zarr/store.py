"""``MnesiaStore``: a zarr v3 store whose keys live in one Mnesia table, under one array id.

Semantics follow zarr's own stores (``MemoryStore``, ``LocalStore``): a missing key reads as
``None``, deleting a missing key is no error, listing returns the exact keys written. What
Mnesia adds is done where it is cheapest: byte ranges and sizes are cut on the server,
``set_if_not_exists`` is one transaction, listing is one keys-only ``dirty_select``, and
``delete_dir``/``clear`` delete in one transaction. Every write is its own transaction, as
for any zarr store; the array API (``pyrlang_zarr.array``) commits whole slices atomically.

The store is its configuration, a frozen :class:`~pyrlang_zarr.settings.StoreSettings`
plus zarr's ``read_only``: that is all it pickles (dask, multiprocessing) and compares. It
connects lazily, through one hidden node per process and cookie, from whatever event loop
calls it.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Container, Iterable, Sequence
from typing import Any, Self

from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype

from pyrlang_zarr.erldist.node_registry import shared_node
from pyrlang_zarr.keys import (
    METADATA,
    ROOT_METADATA_KEY,
    V2_ARRAY_METADATA_KEY,
    KeyLayout,
    chunk_keys_from_metadata,
)
from pyrlang_zarr.mnesia import Delete, MnesiaClient, Write, ensure_table
from pyrlang_zarr.mnesia.client import Op
from pyrlang_zarr.settings import DEFAULT_TABLE, StoreSettings

__all__ = ["DEFAULT_TABLE", "MnesiaStore", "StoreSettings"]

MAX_IN_FLIGHT = 16
_V2_ZARRAY = V2_ARRAY_METADATA_KEY.encode()


def _layout_of(docs: dict[str, Any]) -> KeyLayout:
    """The key layout the root metadata documents give (``zarr.json`` first)."""
    for key in (ROOT_METADATA_KEY, V2_ARRAY_METADATA_KEY):
        doc = docs.get(key)
        chunks = None if doc is None else chunk_keys_from_metadata(key, doc)
        if chunks is not None:
            return KeyLayout(chunks)
    return KeyLayout(None)


class MnesiaStore(Store):
    """Zarr store in Mnesia table ``table_name``, records keyed ``{array_id, ...}``.

    ``MnesiaStore(array_id, node=..., cookie=..., ...)`` takes the options of
    :class:`~pyrlang_zarr.settings.StoreSettings` (``node``, ``nodes``, ``table_name``,
    ``ram_copies``, ``majority``, ``durable``, ``timeout``, ``cookie``), or one
    ``StoreSettings`` in place of them all; ``read_only`` is zarr's. Calls fail over to
    other replicas (``nodes``, and those Mnesia reports) when the node talked to goes away.

    Besides zarr's ``Store`` API, three calls are public for code that works on the
    records directly, as :mod:`pyrlang_zarr.array` does: :meth:`client`,
    :meth:`record_key`/:meth:`record_keys` and :meth:`check_writable`.
    """

    supports_writes = True
    supports_deletes = True
    supports_listing = True

    def __init__(
        self, array_id: str | StoreSettings, *, read_only: bool = False, **options: Any
    ) -> None:
        super().__init__(read_only=read_only)
        if isinstance(array_id, StoreSettings):
            if options:
                raise TypeError(f"pass StoreSettings or options, not both: {sorted(options)}")
            self.settings = array_id
        else:
            self.settings = StoreSettings(array_id, **options)
        self._aid = self.settings.array_id.encode("utf-8")
        self._client: MnesiaClient | None = None
        self._layout: KeyLayout | None = None  # None: root metadata not read yet
        self._limits: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    # -- identity -------------------------------------------------------------------------
    @property
    def array_id(self) -> str:
        return self.settings.array_id

    @property
    def node(self) -> str:
        """The Erlang node first talked to (calls may move to another replica)."""
        return self.settings.node

    @property
    def table_name(self) -> str:
        return self.settings.table_name

    def __eq__(self, other: object) -> bool:  # the settings compare without the cookie
        if not isinstance(other, MnesiaStore):
            return False
        return self.settings == other.settings and self.read_only == other.read_only

    def __hash__(self) -> int:
        return hash(self.settings)

    def __repr__(self) -> str:  # never the cookie
        return (
            f"MnesiaStore(array_id={self.array_id!r}, node={self.node!r}, "
            f"table_name={self.table_name!r})"
        )

    def __str__(self) -> str:
        return f"mnesia://{self.node}/{self.table_name}/{self.array_id}"

    def __getstate__(self) -> dict[str, Any]:  # configuration only, cookie included
        return {"settings": self.settings, "read_only": self.read_only}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["settings"], read_only=state["read_only"])  # type: ignore[misc]

    def with_read_only(self, read_only: bool = False) -> MnesiaStore:
        return type(self)(self.settings, read_only=read_only)

    # -- the public seam: the records behind the zarr keys --------------------------------
    async def client(self) -> MnesiaClient:
        """The client this store talks to Mnesia through (made on first use, and with it,
        for a writable store given ``nodes``, Mnesia and the table set up on them)."""
        client = self._client
        if client is None:
            s = self.settings
            node = shared_node(s.cookie)
            if s.nodes and not self.read_only:
                await ensure_table(
                    node,
                    s.nodes,
                    s.table_name,
                    ram_copies=s.ram_copies,
                    majority=s.majority or None,
                )
            client = MnesiaClient(
                node,
                s.table_name,
                s.node,
                replicas=s.nodes,
                timeout=s.timeout,
                durable=s.durable,
            )
            self._client = client
        return client

    async def record_key(self, key: str) -> Any:
        """The Mnesia key ``{ArrayId, X}`` of the record holding zarr key ``key``."""
        layout = await self.layout()
        return (self._aid, layout.to_mnesia(key))

    async def record_keys(self, keys: Iterable[str]) -> list[Any]:
        """:meth:`record_key` of each of ``keys``, in order."""
        layout = await self.layout()
        return [(self._aid, layout.to_mnesia(key)) for key in keys]

    def check_writable(self) -> None:
        """Raise zarr's ``ValueError`` if the store is read-only."""
        self._check_writable()

    async def _open(self) -> None:
        await super()._open()
        await self.client()

    def _limit(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._limits.get(loop)
        if sem is None:
            sem = self._limits[loop] = asyncio.Semaphore(MAX_IN_FLIGHT)
        return sem

    async def layout(self) -> KeyLayout:
        """The key layout, from the root metadata (read once, then kept up to date)."""
        if self._layout is None:
            self._layout = _layout_of(await self._metadata_docs(await self.client()))
        return self._layout

    async def _metadata_docs(self, client: MnesiaClient) -> dict[str, Any]:
        """The root metadata documents as stored (one round trip)."""
        root, v2 = await client.read_many([(self._aid, METADATA), (self._aid, _V2_ZARRAY)])
        return {ROOT_METADATA_KEY: root, V2_ARRAY_METADATA_KEY: v2}

    # -- reads ----------------------------------------------------------------------------
    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        client = await self.client()
        mkey = await self.record_key(key)
        async with self._limit():
            if byte_range is None:
                data = await client.read(mkey)
            elif isinstance(byte_range, RangeByteRequest):
                length = max(byte_range.end - byte_range.start, 0)
                data = await client.read_range(mkey, byte_range.start, length)
            elif isinstance(byte_range, OffsetByteRequest):
                data = await client.read_range(mkey, byte_range.offset, None)
            elif isinstance(byte_range, SuffixByteRequest):
                data = await client.read_suffix(mkey, byte_range.suffix)
            else:
                raise TypeError(f"Unexpected byte_range, got {byte_range!r}")
        return None if data is None else prototype.buffer.from_bytes(data)

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    async def exists(self, key: str) -> bool:
        client = await self.client()
        async with self._limit():
            return await client.size(await self.record_key(key)) is not None

    async def getsize(self, key: str) -> int:
        client = await self.client()
        async with self._limit():
            size = await client.size(await self.record_key(key))
        if size is None:
            raise FileNotFoundError(key)
        return size

    async def getsize_prefix(self, prefix: str) -> int:
        client = await self.client()
        layout = await self.layout()
        total = 0
        for x, size in await client.sizes_under(self._aid):
            key = layout.from_mnesia(x)
            if key is not None and key.startswith(prefix):
                total += size
        return total

    # -- writes ---------------------------------------------------------------------------
    async def set(self, key: str, value: Buffer) -> None:
        self._check_writable()
        if not isinstance(value, Buffer):
            raise TypeError(
                f"MnesiaStore.set(): `value` must be a Buffer instance. Got an instance of "
                f"{type(value)} instead."
            )
        await self._commit([Write(key, value.as_numpy_array().data)])

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        self._check_writable()
        if key in (ROOT_METADATA_KEY, V2_ARRAY_METADATA_KEY):
            if not await self.exists(key):  # metadata may re-key records: take the full path
                await self.set(key, value)
            return
        client = await self.client()
        async with self._limit():
            await client.insert_if_absent(await self.record_key(key), value.as_numpy_array().data)

    async def _set_many(self, values: Iterable[tuple[str, Buffer]]) -> None:
        self._check_writable()
        await self._commit([Write(k, v.as_numpy_array().data) for k, v in values])

    async def delete(self, key: str) -> None:
        self._check_writable()
        await self._commit([Delete(key)])

    async def delete_dir(self, prefix: str) -> None:
        self._check_writable()
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        keys = [k async for k in self.list_prefix(prefix)]
        if keys:
            await self._commit([Delete(k) for k in keys])

    async def clear(self) -> None:
        self._check_writable()
        client = await self.client()
        await client.delete_under(self._aid)
        self._layout = KeyLayout(None)

    async def _commit(self, ops: Sequence[Op]) -> None:
        """Map zarr keys to records and commit ``ops`` in one transaction.

        A write or delete of the root metadata may change how chunk keys are spelt: then the
        records whose key changes are moved in the same transaction, so listing stays exact.
        """
        client = await self.client()
        layout = await self.layout()
        new_layout = layout
        metadata_ops = [op for op in ops if op.key in (ROOT_METADATA_KEY, V2_ARRAY_METADATA_KEY)]
        if metadata_ops:
            docs = await self._metadata_docs(client)
            for op in metadata_ops:  # in order: the last one on a document wins
                docs[op.key] = bytes(op.data) if isinstance(op, Write) else None
            new_layout = _layout_of(docs)
        records: list[Op] = []
        if new_layout.chunks != layout.chunks:
            records += await self._rekey(client, layout, new_layout, {op.key for op in ops})
        for op in ops:
            x = new_layout.to_mnesia(op.key)
            if isinstance(op, Write):
                records.append(Write((self._aid, x), op.data))
            else:
                records.append(Delete((self._aid, x)))
        async with self._limit():
            if len(records) == 1 and isinstance(records[0], Write):
                await client.write(records[0].key, records[0].data)
            elif len(records) == 1:
                await client.delete(records[0].key)
            else:
                await client.batch(records)
        if metadata_ops:  # other writes, in flight at the same time, must not undo it
            self._layout = new_layout

    async def _rekey(
        self, client: MnesiaClient, old: KeyLayout, new: KeyLayout, replaced: Container[str]
    ) -> list[Op]:
        """Operations moving each record to the key ``new`` gives its zarr name. Records
        whose name the commit itself writes or deletes (``replaced``) are only dropped: their
        data is not read, let alone shipped back."""
        ops: list[Op] = []
        moving: list[tuple[Any, Any]] = []
        for x in await client.keys_under(self._aid):
            name = old.from_mnesia(x)
            if name is None or name == ROOT_METADATA_KEY:
                continue
            target = new.to_mnesia(name)
            if target == x:
                continue
            if name in replaced:
                ops.append(Delete((self._aid, x)))
            else:
                moving.append((x, target))
        if moving:
            values = await client.read_many([(self._aid, x) for x, _ in moving], consistent=True)
            for (x, target), data in zip(moving, values, strict=True):
                if data is not None:
                    ops += [Delete((self._aid, x)), Write((self._aid, target), data)]
        return ops

    # -- listing --------------------------------------------------------------------------
    async def _keys(self) -> list[str]:
        client = await self.client()
        layout = await self.layout()
        keys = []
        for x in await client.keys_under(self._aid):
            key = layout.from_mnesia(x)
            if key is not None:
                keys.append(key)
        return keys

    async def list(self) -> AsyncIterator[str]:
        for key in await self._keys():
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for key in await self._keys():
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        prefix = prefix.rstrip("/")
        head = prefix + "/" if prefix else ""
        seen: set[str] = set()
        for key in await self._keys():
            if key.startswith(head):
                child = key[len(head) :].split("/", 1)[0]
                if child not in seen:
                    seen.add(child)
                    yield child

    @property
    def supports_consolidated_metadata(self) -> bool:
        return False

    async def __aenter__(self) -> Self:
        await self._ensure_open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
