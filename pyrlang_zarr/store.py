"""``MnesiaStore``: a zarr v3 store whose keys live in one Mnesia table, under one array id.

Semantics follow zarr's own stores (``MemoryStore``, ``LocalStore``): a missing key reads as
``None``, deleting a missing key is no error, listing returns the exact keys written. What
Mnesia adds is done where it is cheapest: byte ranges and sizes are cut on the server,
``set_if_not_exists`` is one transaction, listing is one keys-only ``dirty_select``, and
``delete_dir``/``clear`` delete in one transaction. Every write is its own transaction, as
for any zarr store; the array API (``pyrlang_zarr.array``) commits whole slices atomically.

The store pickles its configuration only (dask, multiprocessing) and connects lazily,
through one hidden node per process and cookie, from whatever event loop calls it.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Self

from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype

from pyrlang_zarr.erldist.shared import shared_node
from pyrlang_zarr.keys import (
    METADATA,
    ROOT_METADATA_KEY,
    V2_ARRAY_METADATA_KEY,
    KeyLayout,
    chunk_keys_from_metadata,
)
from pyrlang_zarr.mnesia import Delete, MnesiaClient, Write, ensure_table
from pyrlang_zarr.mnesia.client import Op

DEFAULT_TABLE = "zarr_storage"
MAX_IN_FLIGHT = 16
_V2_ZARRAY = V2_ARRAY_METADATA_KEY.encode()


def check_array_id(array_id: object) -> str:
    if not isinstance(array_id, str):
        raise TypeError(f"array_id must be a str, not {type(array_id).__name__}")
    if not array_id:
        raise ValueError("array_id must be a non-empty string")
    return array_id


def check_nodes(node: str | None, nodes: Sequence[str] | None) -> tuple[str, tuple[str, ...]]:
    """The node to talk to and the replica list, validated."""
    if nodes is not None:
        if isinstance(nodes, str) or not isinstance(nodes, Sequence) or not nodes:
            raise ValueError(f"nodes must be a non-empty list of node names, got {nodes!r}")
        replicas = tuple(dict.fromkeys(nodes))
    else:
        replicas = ()
    node = node if node is not None else (replicas[0] if replicas else None)
    if node is None:
        raise ValueError("pass node='name@host' (the Erlang node to talk to) or nodes=[...]")
    for n in (node, *replicas):
        if not isinstance(n, str) or n.count("@") != 1 or n.startswith("@") or n.endswith("@"):
            raise ValueError(f"bad node name {n!r}: expected 'name@host'")
    return node, replicas


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

    ``node`` is the Erlang node to talk to; ``nodes`` the table's replicas (when given, the
    table and Mnesia are set up on them when the store opens, idempotently). ``ram_copies``
    picks RAM-only replicas for a new table; ``majority`` makes its writes need a majority of
    replicas. ``durable`` forces each commit to disc. Calls fail over to other replicas
    (``nodes``, and those Mnesia reports) when the node talked to goes away.
    """

    supports_writes = True
    supports_deletes = True
    supports_listing = True

    def __init__(
        self,
        array_id: str,
        *,
        node: str | None = None,
        cookie: str | None = None,
        table_name: str = DEFAULT_TABLE,
        nodes: Sequence[str] | None = None,
        ram_copies: bool = False,
        majority: bool = False,
        read_only: bool = False,
        durable: bool = False,
        timeout: float | None = 60.0,
    ) -> None:
        super().__init__(read_only=read_only)
        self.array_id = check_array_id(array_id)
        self.node, self.nodes = check_nodes(node, nodes)
        if not isinstance(table_name, str) or not table_name:
            raise ValueError(f"table_name must be a non-empty str, got {table_name!r}")
        if cookie is not None and not isinstance(cookie, str):
            raise TypeError("cookie must be a str")
        self.table_name = table_name
        self.ram_copies = bool(ram_copies)
        self.majority = bool(majority)
        self.durable = bool(durable)
        self.timeout = timeout
        self._cookie = cookie
        self._aid = array_id.encode("utf-8")
        self._client: MnesiaClient | None = None
        self._layout: KeyLayout | None = None  # None: root metadata not read yet
        self._limits: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    # -- identity -------------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        return {
            "array_id": self.array_id,
            "node": self.node,
            "cookie": self._cookie,
            "table_name": self.table_name,
            "nodes": list(self.nodes) or None,
            "ram_copies": self.ram_copies,
            "majority": self.majority,
            "read_only": self.read_only,
            "durable": self.durable,
            "timeout": self.timeout,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MnesiaStore):
            return False
        mine, theirs = self._config(), other._config()
        mine.pop("cookie")
        theirs.pop("cookie")
        return mine == theirs

    def __hash__(self) -> int:
        return hash((self.array_id, self.node, self.table_name))

    def __repr__(self) -> str:  # never the cookie
        return (
            f"MnesiaStore(array_id={self.array_id!r}, node={self.node!r}, "
            f"table_name={self.table_name!r})"
        )

    def __str__(self) -> str:
        return f"mnesia://{self.node}/{self.table_name}/{self.array_id}"

    def __getstate__(self) -> dict[str, Any]:
        return self._config()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def with_read_only(self, read_only: bool = False) -> MnesiaStore:
        return type(self)(**{**self._config(), "read_only": read_only})

    # -- connection -----------------------------------------------------------------------
    async def _open(self) -> None:
        await super()._open()
        await self._ready()

    async def _ready(self) -> MnesiaClient:
        client = self._client
        if client is None:
            node = shared_node(self._cookie)
            if self.nodes and not self.read_only:
                await ensure_table(
                    node,
                    self.nodes,
                    self.table_name,
                    ram_copies=self.ram_copies,
                    majority=self.majority or None,
                )
            client = MnesiaClient(
                node,
                self.table_name,
                self.node,
                replicas=self.nodes,
                timeout=self.timeout,
                durable=self.durable,
            )
            self._client = client
        return client

    def _limit(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._limits.get(loop)
        if sem is None:
            sem = self._limits[loop] = asyncio.Semaphore(MAX_IN_FLIGHT)
        return sem

    async def layout(self) -> KeyLayout:
        """The key layout, from the root metadata (read once, then kept up to date)."""
        if self._layout is None:
            self._layout = _layout_of(await self._metadata_docs(await self._ready()))
        return self._layout

    async def _metadata_docs(self, client: MnesiaClient) -> dict[str, Any]:
        """The root metadata documents as stored (one round trip)."""
        root, v2 = await client.read_many([(self._aid, METADATA), (self._aid, _V2_ZARRAY)])
        return {ROOT_METADATA_KEY: root, V2_ARRAY_METADATA_KEY: v2}

    async def _mkey(self, key: str) -> Any:
        layout = await self.layout()
        return (self._aid, layout.to_mnesia(key))

    # -- reads ----------------------------------------------------------------------------
    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        client = await self._ready()
        mkey = await self._mkey(key)
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
        client = await self._ready()
        async with self._limit():
            return await client.size(await self._mkey(key)) is not None

    async def getsize(self, key: str) -> int:
        client = await self._ready()
        async with self._limit():
            size = await client.size(await self._mkey(key))
        if size is None:
            raise FileNotFoundError(key)
        return size

    async def getsize_prefix(self, prefix: str) -> int:
        client = await self._ready()
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
        client = await self._ready()
        async with self._limit():
            await client.insert_if_absent(await self._mkey(key), value.as_numpy_array().data)

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
        client = await self._ready()
        await client.delete_under(self._aid)
        self._layout = KeyLayout(None)

    async def _commit(self, ops: Sequence[Op]) -> None:
        """Map zarr keys to records and commit ``ops`` in one transaction.

        A write or delete of the root metadata may change how chunk keys are spelt: then the
        records whose key changes are moved in the same transaction, so listing stays exact.
        """
        client = await self._ready()
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
        self, client: MnesiaClient, old: KeyLayout, new: KeyLayout, replaced: set[str]
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
        client = await self._ready()
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
