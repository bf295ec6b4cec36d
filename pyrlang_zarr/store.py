"""``MnesiaStore``: a zarr v3 store whose keys live in one Mnesia table, under one array id.

Semantics follow zarr's own stores (``MemoryStore``, ``LocalStore``): a missing key reads as
``None``, deleting a missing key is no error, listing returns each key once. The records are
ExZarr's (:mod:`pyrlang_zarr.keys`): an Elixir application on the cluster reads and writes
the same array.

**One truth for every client.** Which record a key lives in depends on the root metadata
(``{Id, metadata}``), and any client, this process or another, ExZarr included, may change
it at any time. So no client trusts what it saw before:

- a read of a key whose record depends on the metadata reads the metadata in the same round
  trip (a few hundred bytes) and decides with it;
- a write or delete of such a key is one server-side transaction that first checks the
  metadata is still the version the keys were mapped with (a read lock: writers of chunks
  run side by side, a metadata change waits for them), and is mapped again if it is not;
- metadata writes, ``set_if_not_exists`` (every key), ``delete_dir`` and ``clear`` are each
  one transaction; ``delete_dir``/``clear`` select what they delete inside it.

What Mnesia adds is done where it is cheapest: byte ranges and sizes are cut on the server,
listing is one keys-only ``dirty_select`` with the prefix filtered there (on a fragmented
table a ``select`` in one transaction: fragments may be split meanwhile).

The store is its configuration, a frozen :class:`~pyrlang_zarr.settings.StoreSettings`
plus zarr's ``read_only``: that is all it pickles (dask, multiprocessing; no cookie unless
``pickle_cookie``) and compares. It connects lazily, through one hidden node per process,
cookie and TLS setting, from whatever event loop calls it.

**Consolidated metadata is supported, and never served stale.** It is a copy of every
node's metadata in a group's own document (``consolidated_metadata`` in a v3 ``zarr.json``,
a v2 ``.zmetadata``), which nothing on the cluster keeps current: ExZarr, other processes and
Erlang code write metadata without updating it. So before the store serves such a copy, it
reads the metadata documents of every node under the group (one ``dirty_select`` that returns
only those documents) and compares: if any node was added, removed or changed since the
copy was made, the copy is left out (a v3 group is served without it, a ``.zmetadata`` as
missing) and a warning is logged. zarr then reads the nodes' own metadata, and
``use_consolidated=True`` fails loudly instead of giving an old answer. Run
``zarr.consolidate_metadata`` again to bring the copy up to date.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype

from pyrlang_zarr.erldist.node_registry import shared_node
from pyrlang_zarr.errors import TransactionError
from pyrlang_zarr.keys import (
    CHUNK,
    METADATA,
    METADATA_NAMES,
    V2_ARRAY_METADATA_KEY,
    KeyLayout,
    Root,
    metadata_plan,
    other_metadata_name,
    plausible_indices,
    root_after,
    root_of,
    version,
)
from pyrlang_zarr.mnesia import Delete, MnesiaClient, Write, ensure_table
from pyrlang_zarr.mnesia.client import Conflict, DeleteSelect, Guard, Move
from pyrlang_zarr.settings import DEFAULT_TABLE, StoreSettings
from pyrlang_zarr.term import Atom

if TYPE_CHECKING:
    from pyrlang_zarr.watch import Watch

__all__ = ["DEFAULT_TABLE", "MnesiaStore", "StoreSettings"]

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 16
#: How often a transaction is mapped again after the metadata changed under it.
MAX_REMAPS = 20
_V2_PATH = V2_ARRAY_METADATA_KEY.encode()
_ANY = Atom("_")
_ALL = Atom("$_")
_V1 = Atom("$1")
_V2 = Atom("$2")
_BYTE_SIZE = Atom("byte_size")
_ZARRAY = Atom("zarray")
# match spec guard on $1 for the earlier chunk form {Id, Idx}: a tuple of integers, so never
# {chunk, _} (the full check, every element an integer, is made where the key is used)
_EARLIER_TAG = Atom("earlier")
_EARLIER = (
    Atom("orelse"),
    (Atom("=:="), (Atom("size"), _V1), 0),
    (Atom("is_integer"), (Atom("element"), 1, _V1)),
)

Mapped = list[Write | Delete | Move | DeleteSelect]


def _chunks_may_match(prefix: str) -> bool:
    """Whether a chunk key of some encoding may start with ``prefix``: chunk keys start with
    ``c`` (v3's default encoding) or a digit (the v2 encoding)."""
    return prefix == "" or prefix[0] == "c" or prefix[0].isdigit()


class MnesiaStore(Store):
    """Zarr store in Mnesia table ``table_name``, records keyed ``{array_id, ...}``.

    ``MnesiaStore(array_id, node=..., cookie=..., ...)`` takes the options of
    :class:`~pyrlang_zarr.settings.StoreSettings` (``node``, ``nodes``, ``table_name``,
    ``ram_copies``, ``majority``, ``durable``, ``timeout``, ``cookie``, ``tls``,
    ``pickle_cookie``), or one
    ``StoreSettings`` in place of them all; ``read_only`` is zarr's. Calls fail over to
    other replicas (``nodes``, and those Mnesia reports) when the node talked to goes away.
    An :class:`~pyrlang_zarr.Atom` ``array_id`` reaches an array an Elixir application keyed
    with an atom.

    Besides zarr's ``Store`` API, a few calls are public for code that works on the
    records directly, as :mod:`pyrlang_zarr.array` does: :meth:`client`, :meth:`root`,
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
        aid = self.settings.array_id
        self._aid: Any = aid if type(aid) is Atom else aid.encode("utf-8")
        self._client: MnesiaClient | None = None
        # the root metadata as last seen: a guess that saves a round trip before a write,
        # checked by the write's transaction, never trusted for a read
        self._hint: Root | None = None
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

    def __getstate__(self) -> dict[str, Any]:  # configuration only; no cookie by default
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
            node = shared_node(s.cookie, s.tls)
            if s.nodes and not self.read_only:
                await ensure_table(
                    node,
                    s.nodes,
                    s.table_name,
                    ram_copies=s.ram_copies,
                    majority=s.majority or None,
                    fragments=s.fragments,
                    frag_copies=s.frag_copies,
                    disc_only_copies=s.disc_only_copies,
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

    def mnesia_key(self, x: Any) -> tuple[Any, Any]:
        """The Mnesia key ``{ArrayId, X}``."""
        return (self._aid, x)

    async def root(self) -> Root:
        """The records the key mapping depends on, read now (one round trip)."""
        client = await self.client()
        return self.root_from(await client.read_many(self.root_keys()))

    def root_keys(self) -> list[Any]:
        """The Mnesia keys of the records :meth:`root` reads, to read them along with
        others (:meth:`root_from` makes the root of what was found)."""
        return [(self._aid, METADATA), (self._aid, _V2_PATH)]

    def root_from(self, found: Sequence[Any]) -> Root:
        """The root of the data read under :meth:`root_keys` (``None`` where missing)."""
        m, za = found
        root = root_of(_own(m), _own(za))
        self._hint = root
        return root

    async def layout(self) -> KeyLayout:
        """The key mapping as of now (read, not cached)."""
        return KeyLayout(await self.root())

    async def record_key(self, key: str) -> Any:
        """The Mnesia key ``{ArrayId, X}`` a write of zarr key ``key`` would use now."""
        root = await self.root()
        return (self._aid, root.primary(key))

    async def record_keys(self, keys: Iterable[str]) -> list[Any]:
        """:meth:`record_key` of each of ``keys``, in order (one reading of the metadata)."""
        root = await self.root()
        return [(self._aid, root.primary(key)) for key in keys]

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

    # -- reads ----------------------------------------------------------------------------
    async def _lookup(self, key: str, want: _Want) -> Any | None:
        """What ``want`` wants of the record that holds ``key``, with the metadata that
        decides which record that is read in the same round trip."""
        client = await self.client()
        if key in METADATA_NAMES:
            m, path = await client.read_many([(self._aid, METADATA), (self._aid, key.encode())])
            holder = m if m is not None and root_of(_own(m)).m_name == key else path
            return None if holder is None else want.cut(bytes(holder))
        indices = plausible_indices(key)
        if not indices:  # never a chunk key: the path record, whatever the metadata
            spec = want.spec(client, (self._aid, key.encode()))
            found = await client.select(spec, "read", one_key=True)
            return found[0] if found else None
        forms: list[Any] = []
        for index in indices:
            forms += [(CHUNK, index), index]
        forms.append(key.encode())
        calls = [
            client.read_call((self._aid, METADATA)),
            client.read_call((self._aid, _V2_PATH)),
            *(client.select_call(want.spec(client, (self._aid, x))) for x in forms),
        ]
        found = await client.dirty_calls(calls, "read")
        value = self._found(key, forms, found)
        if value is None and await client.fragmented():
            # on a fragmented table a record moving in a split may be looked for where it
            # has just left (or not yet arrived): what a dirty read missed is read again in
            # a transaction, which waits for a split in progress (record locks: the records
            # whole, cut here). The metadata found says which forms to look for again.
            m, za = found[:2]
            again = (
                root_of(_data(m), _data(za)).candidates(key) if m else [METADATA, _V2_PATH, *forms]
            )
            reads = [client.read_call((self._aid, x)) for x in again]
            looked = await client.dirty_calls(reads, "read", locked=True)
            records = dict(zip(again, looked, strict=True))
            if not m:
                m, za = records[METADATA], records[_V2_PATH]
            cut = [[want.cut(r[0][2])] if (r := records.get(x)) else [] for x in forms]
            value = self._found(key, forms, [m, za, *cut])
        return value

    def _found(self, key: str, forms: list[Any], found: list[Any]) -> Any | None:
        """What the calls of :meth:`_lookup` found for ``key`` (the metadata records, then
        each of ``forms``): the first candidate present."""
        m, za, *values = found
        root = root_of(_data(m), _data(za))
        self._hint = root
        by_form = dict(zip(forms, values, strict=True))
        for x in root.candidates(key):
            value = by_form[x]
            if value:
                return value[0]
        return None

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        want = _Want.of(byte_range)
        async with self._limit():
            data = await self._lookup(key, want)
        if data is not None and want.kind == "whole" and key.endswith((".zmetadata", "zarr.json")):
            data = await self._checked_consolidated(key, bytes(data))
        return None if data is None else prototype.buffer.from_bytes(data)

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    async def exists(self, key: str) -> bool:
        async with self._limit():
            return await self._lookup(key, _SIZE) is not None

    async def getsize(self, key: str) -> int:
        async with self._limit():
            size = await self._lookup(key, _SIZE)
        if size is None:
            raise FileNotFoundError(key)
        return int(size)

    async def getsize_prefix(self, prefix: str) -> int:
        return sum(size for _, size in await self._scan(prefix, sizes=True))

    # -- writes ---------------------------------------------------------------------------
    async def set(self, key: str, value: Buffer) -> None:
        self._check_writable()
        if not isinstance(value, Buffer):
            raise TypeError(
                f"MnesiaStore.set(): `value` must be a Buffer instance. Got an instance of "
                f"{type(value)} instead."
            )
        await self._commit([(key, value.as_numpy_array().data)])

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        """Write ``value`` unless ``key`` exists, atomically: one transaction checks and
        writes, for every key (the metadata keys included)."""
        self._check_writable()
        data = value.as_numpy_array().data
        if key in METADATA_NAMES:
            await self._metadata_op(key, data, only_if_absent=True)
            return
        if not plausible_indices(key):
            client = await self.client()
            async with self._limit():
                await client.insert_if_absent((self._aid, key.encode()), data)
            return

        def build(root: Root) -> tuple[Mapped, list[Any]]:
            forms = [(self._aid, x) for x in root.candidates(key)]
            return [Write(forms[0], data)], forms

        await self._guarded(build)

    async def _set_many(self, values: Iterable[tuple[str, Buffer]]) -> None:
        self._check_writable()
        await self._commit([(k, v.as_numpy_array().data) for k, v in values])

    async def delete(self, key: str) -> None:
        self._check_writable()
        await self._commit([(key, None)])

    async def delete_dir(self, prefix: str) -> None:
        """Delete every key under ``prefix`` in one transaction, which selects them itself:
        a key written before it commits is deleted, one written after is kept."""
        self._check_writable()
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if not prefix:
            await self.clear()
            return

        def build(root: Root) -> tuple[Mapped, list[Any]]:
            return [DeleteSelect(self._delete_spec(prefix, root))], []

        await self._guarded(build)

    async def clear(self) -> None:
        """Delete every record of the array the store can name, chunk records of any rank
        included, in one transaction (records of other forms are left alone)."""
        self._check_writable()
        client = await self.client()
        async with self._limit():
            await client.guarded([], [DeleteSelect(self._delete_spec("", None))])
        self._hint = Root(None)

    async def create_root(self, document: bytes, *, overwrite: bool = False) -> bool:
        """Put an array's metadata ``document`` at ``{Id, metadata}`` in one transaction:
        with ``overwrite``, after deleting every record of the array (as :meth:`clear`);
        without, only if there is no root node yet (False otherwise, nothing written)."""
        self._check_writable()
        client = await self.client()
        meta = (self._aid, METADATA)
        ops: Mapped = [Write(meta, document)]
        if overwrite:
            ops.insert(0, DeleteSelect(self._delete_spec("", None)))
            absent: list[Any] = []
        else:
            absent = [meta] + [(self._aid, k) for k in (b"zarr.json", b".zarray", b".zgroup")]
        async with self._limit():
            done = await client.guarded([], ops, absent=absent)
        self._hint = None
        return done

    async def _commit(self, items: Sequence[tuple[str, Any]]) -> None:
        """Write (data) or delete (``None``) zarr keys: the metadata keys each in their own
        transaction, then all other keys together in one."""
        rest: list[tuple[str, Any]] = []
        for key, data in items:
            if key in METADATA_NAMES:
                await self._metadata_op(key, data)
            else:
                rest.append((key, data))
        if not rest:
            return
        if not any(plausible_indices(key) for key, _ in rest):  # no mapping to check
            client = await self.client()
            ops = [
                Delete((self._aid, k.encode())) if d is None else Write((self._aid, k.encode()), d)
                for k, d in rest
            ]
            async with self._limit():
                if len(ops) == 1 and isinstance(ops[0], Write):
                    await client.write(ops[0].key, ops[0].data)
                elif len(ops) == 1:
                    await client.delete(ops[0].key)
                else:
                    await client.batch(ops)
            return

        if all(data is not None for _, data in rest) and await self._write_if_unchanged(rest):
            return

        def build(root: Root) -> tuple[Mapped, list[Any]]:
            ops: Mapped = []
            for key, data in rest:
                forms = [(self._aid, x) for x in root.candidates(key)]
                if data is None:
                    ops += [Delete(k) for k in forms]
                else:
                    ops.append(Write(forms[0], data, replaces=tuple(forms[1:])))
            return ops, []

        await self._guarded(build)

    async def _write_if_unchanged(self, items: Sequence[tuple[str, Any]]) -> bool:
        """The common write: keys mapped with the array's metadata, written in a transaction
        that checks it is unchanged, built of OTP's functions alone (no ``erl_eval``:
        :meth:`~pyrlang_zarr.mnesia.client.MnesiaClient.write_if`). A chunk's other record
        forms are left as they are: the chunk record takes precedence over them on every
        read, and a delete or a migration removes them. False when there is no metadata
        record to check (the general path then does it)."""
        client = await self.client()
        root = self._hint if self._hint is not None else await self.root()
        for _ in range(MAX_REMAPS):
            if root.m is None:
                return False
            writes = [((self._aid, root.candidates(k)[0]), d) for k, d in items]
            try:
                async with self._limit():
                    await client.write_if((self._aid, METADATA), root.m, writes)
                return True
            except Conflict:
                root = await self.root()
        raise TransactionError(
            f"transaction_error: the metadata of {self.array_id!r} kept changing while a write "
            f"was mapped ({MAX_REMAPS} attempts); nothing was written"
        )

    async def _guarded(self, build: Callable[[Root], tuple[Mapped, list[Any]]]) -> bool:
        """Map with the root metadata as last seen and commit in one transaction that checks
        it is unchanged; map again with what is there now if it is not."""
        client = await self.client()
        root = self._hint if self._hint is not None else await self.root()
        for _ in range(MAX_REMAPS):
            ops, absent = build(root)
            guards = [Guard((self._aid, x), v) for x, v in root.guards()]
            try:
                async with self._limit():
                    return await client.guarded(guards, ops, absent=absent)
            except Conflict:
                root = await self.root()
        raise TransactionError(
            f"transaction_error: the metadata of {self.array_id!r} kept changing while a write "
            f"was mapped ({MAX_REMAPS} attempts); nothing was written"
        )

    async def _metadata_op(
        self, name: str, data: Any | None, *, only_if_absent: bool = False
    ) -> None:
        """Write (``None``: delete) metadata key ``name`` in one transaction, checked against
        ``{Id, metadata}`` and the other metadata key's path record as read just before."""
        client = await self.client()
        other_name = other_metadata_name(name)
        value = None if data is None else bytes(data)
        for _ in range(MAX_REMAPS):
            m, other = await client.read_many(
                [(self._aid, METADATA), (self._aid, other_name.encode())]
            )
            m, other = _own(m), _own(other)
            before = Root(m, other if name != V2_ARRAY_METADATA_KEY else None)
            if only_if_absent and before.m_name == name:
                return
            plan = metadata_plan(name, value, m, other)
            after = root_after(before, name, plan)
            ops: Mapped = [
                Write((self._aid, x), d) if op == "write" else Delete((self._aid, x))
                for op, x, d in plan
            ]
            if after.layout is not None and after.layout != Root(m).layout:
                ops += await self._moves_into(after)
            guards = [
                Guard((self._aid, METADATA), version(m), write=True),
                Guard((self._aid, other_name.encode()), version(other), write=True),
            ]
            absent = [(self._aid, name.encode())] if only_if_absent else []
            try:
                async with self._limit():
                    await client.guarded(guards, ops, absent=absent)
            except Conflict:
                continue
            self._hint = after if name != V2_ARRAY_METADATA_KEY or after.m is not None else None
            return
        raise TransactionError(
            f"transaction_error: {name} of {self.array_id!r} kept changing while it was "
            f"written ({MAX_REMAPS} attempts); nothing was written"
        )

    async def _moves_into(self, root: Root) -> list[Move]:
        """Moves of the path records that spell chunk keys of ``root``'s array to chunk
        records (written before the metadata said they were chunks): ExZarr sees them."""
        layout = root.layout
        assert layout is not None
        client = await self.client()
        spec = [((client.table_atom, (self._aid, _V1), _ANY), [(Atom("is_binary"), _V1)], [_V1])]
        moves = []
        for path in await client.select(spec, "list"):
            name = bytes(path).decode("utf-8", "surrogateescape")
            index = layout.parse(name)
            if index is not None:
                moves.append(
                    Move(
                        (self._aid, bytes(path)),
                        (self._aid, (CHUNK, index)),
                        ((self._aid, index),),
                    )
                )
        return moves

    def _delete_spec(self, prefix: str, root: Root | None) -> list[Any]:
        """Match spec returning the keys of every record under directory ``prefix``; for
        ``""`` every record the store can name, chunk records of any rank included."""
        tab = Atom(self.settings.table_name)
        key = (_BYTE_SIZE, _V1)
        whole_key = [(Atom("element"), 2, _ALL)]
        clauses: list[Any] = []
        if prefix == "":
            clauses.append(((tab, (self._aid, METADATA), _ANY), [], whole_key))
            clauses.append(((tab, (self._aid, _V1), _ANY), [(Atom("is_binary"), _V1)], whole_key))
            chunk_guards: list[Any] = [(Atom("is_tuple"), _V1)]
        else:
            p = prefix.encode("utf-8")
            guards = [
                (Atom("is_binary"), _V1),
                (Atom(">="), key, len(p)),
                (Atom("=:="), (Atom("binary_part"), _V1, 0, len(p)), p),
            ]
            clauses.append(((tab, (self._aid, _V1), _ANY), guards, whole_key))
            layout = None if root is None else root.layout
            lead = None if layout is None else layout.leading(prefix)
            if layout is None or lead is None:
                return clauses
            chunk_guards = [
                (Atom("is_tuple"), _V1),
                (Atom("=:="), (Atom("size"), _V1), layout.ndim),
            ]
            chunk_guards += [
                (Atom("=:="), (Atom("element"), i + 1, _V1), v) for i, v in enumerate(lead)
            ]
        clauses.append(((tab, (self._aid, (CHUNK, _V1)), _ANY), chunk_guards, whole_key))
        clauses.append(((tab, (self._aid, _V1), _ANY), [*chunk_guards, _EARLIER], whole_key))
        return clauses

    # -- listing --------------------------------------------------------------------------
    async def _scan(self, prefix: str, *, sizes: bool = False) -> list[tuple[str, int]]:
        """``(key, size)`` of every key starting with ``prefix``, each once (size 0 unless
        ``sizes``): one ``dirty_select`` that filters path records by ``prefix`` on the
        server, and leaves chunk records out when no chunk key can start with it."""
        client = await self.client()
        tab = client.table_atom
        p = prefix.encode("utf-8")

        def body(term: Any) -> list[Any]:
            return [((term, (_BYTE_SIZE, _V2)),)] if sizes else [term]

        spec: list[Any] = [
            ((tab, (self._aid, METADATA), _V2), [], [((METADATA, _V2),)]),
            ((tab, (self._aid, _V2_PATH), _V2), [], [((_ZARRAY, _V2),)]),
        ]
        path_guards: list[Any] = [(Atom("is_binary"), _V1)]
        if p:
            path_guards += [
                (Atom(">="), (_BYTE_SIZE, _V1), len(p)),
                (Atom("=:="), (Atom("binary_part"), _V1, 0, len(p)), p),
            ]
        spec.append(((tab, (self._aid, _V1), _V2), path_guards, body(_V1)))
        if _chunks_may_match(prefix):  # chunk records (either form) give their index only
            tuple_guard: list[Any] = [(Atom("is_tuple"), _V1)]
            spec.append(((tab, (self._aid, (CHUNK, _V1)), _V2), tuple_guard, body(_V1)))
            # an earlier-form record is tagged when sizes are wanted: a chunk record of the
            # same index (which reads serve) gives the size
            earlier = [((_V1, (_BYTE_SIZE, _V2), _EARLIER_TAG),)] if sizes else [_V1]
            spec.append(((tab, (self._aid, _V1), _V2), [*tuple_guard, _EARLIER], earlier))
        async with self._limit():
            found = await client.select(spec, "list")
        m = za = None
        named: list[tuple[Any, int]] = []
        shadowed: list[tuple[Any, int]] = []
        for item in found:
            if type(item) is tuple and len(item) == 2 and type(item[0]) is Atom:
                if item[0] == METADATA:
                    m = bytes(item[1])
                else:
                    za = bytes(item[1])
            elif not sizes:
                named.append((item, 0))
            elif len(item) == 3 or type(item[0]) is not tuple:
                shadowed.append(item[:2])
            else:
                named.append(item)
        # first come, first named: with sizes, a chunk record's before the earlier form's
        # or the path record's of the same key (reads serve it)
        named += sorted(shadowed, key=lambda item: type(item[0]) is not tuple)
        root = root_of(m, za)
        self._hint = root
        out: dict[str, int] = {}
        if m is not None:
            out[root.m_name or ""] = len(m)
        if za is not None:
            out.setdefault(V2_ARRAY_METADATA_KEY, len(za))
        layout = root.layout
        for x, size in named:
            if type(x) is tuple:
                name = None if layout is None else layout.names(x)
            else:
                name = bytes(x).decode("utf-8", "surrogateescape")
            if name is not None and name not in out:
                out[name] = size
        if prefix:
            return [(k, v) for k, v in out.items() if k.startswith(prefix)]
        return list(out.items())

    async def list(self) -> AsyncIterator[str]:
        for key, _ in await self._scan(""):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for key, _ in await self._scan(prefix):
            yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        prefix = prefix.rstrip("/")
        head = prefix + "/" if prefix else ""
        seen: set[str] = set()
        for key, _ in await self._scan(head):
            child = key[len(head) :].split("/", 1)[0]
            if child not in seen:
                seen.add(child)
                yield child

    @property
    def supports_consolidated_metadata(self) -> bool:
        """True: a consolidated copy is checked against the nodes before it is served (see
        the module's documentation)."""
        return True

    async def _checked_consolidated(self, key: str, data: bytes) -> bytes | None:
        """``data`` of metadata key ``key``, less a consolidated copy that no longer matches
        the metadata of the nodes it describes (``None`` for a ``.zmetadata`` that does
        not)."""
        directory, _, name = key.rpartition("/")
        if name == "zarr.json":
            if b'"consolidated_metadata"' not in data:
                return data
            try:
                doc = json.loads(data)
                copy = doc["consolidated_metadata"]
                entries = None if copy is None else copy["metadata"]
            except (ValueError, KeyError, TypeError):
                return data
            if entries is None:
                return data
            actual = await self._node_documents(directory, ("zarr.json",))
            current = {path.rpartition("/")[0]: doc for path, doc in actual.items()}
            if _same_nodes(entries, current):
                return data
            log.warning(
                "consolidated metadata of %r in %s is out of date: left out; run "
                "zarr.consolidate_metadata again",
                key,
                self,
            )
            doc["consolidated_metadata"] = None
            return json.dumps(doc, indent=2).encode()
        if name == ".zmetadata":
            try:
                entries = json.loads(data)["metadata"]
            except (ValueError, KeyError, TypeError):
                return data
            actual = await self._node_documents(directory, (".zgroup", ".zarray", ".zattrs"))
            if isinstance(entries, dict) and _same_nodes(entries, actual):
                return data
            log.warning(
                "consolidated metadata %r in %s is out of date: left out; run "
                "zarr.consolidate_metadata again",
                key,
                self,
            )
            return None
        return data

    async def _node_documents(self, directory: str, names: tuple[str, ...]) -> dict[str, Any]:
        """The metadata documents ``names`` of every node strictly under ``directory``, keyed
        by their path relative to it (for v2 names, the group's own documents too): one
        ``dirty_select`` that ships nothing else (no chunk of a nested array)."""
        client = await self.client()
        tab = client.table_atom
        head = f"{directory}/".encode() if directory else b""
        spec: list[Any] = []
        for name in names:
            tail = name.encode()
            size = (_BYTE_SIZE, _V1)
            guards = [
                (Atom("is_binary"), _V1),
                (Atom(">="), size, len(head) + len(tail)),
                (Atom("=:="), (Atom("binary_part"), _V1, 0, len(head)), head),
                (
                    Atom("=:="),
                    (Atom("binary_part"), _V1, (Atom("-"), size, len(tail)), len(tail)),
                    tail,
                ),
            ]
            spec.append(((tab, (self._aid, _V1), _V2), guards, [((_V1, _V2),)]))
        found = await client.select(spec, "consolidated metadata check")
        out: dict[str, Any] = {}
        for path, data in found:
            rel = bytes(path)[len(head) :].decode("utf-8", "surrogateescape")
            base = rel.rpartition("/")[2]
            if base not in names or (rel == base and "zarr.json" in names):
                continue  # "xzarr.json", or the group's own zarr.json
            try:
                out[rel] = json.loads(bytes(data))
            except ValueError:
                out[rel] = None
        return out

    def watch(self, *, window: int = 256, backlog: int = 10_000) -> Watch:
        """Changes to any key of this store as they are committed by anyone: an async
        iterator of :class:`~pyrlang_zarr.watch.ChangeEvent` (``kind="key"``, or
        ``"resync"``), to use with ``async with``."""
        from pyrlang_zarr.watch import watch_store

        return watch_store(self, window=window, backlog=backlog)

    async def __aenter__(self) -> Self:
        await self._ensure_open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def _same_nodes(copy: dict[str, Any], actual: dict[str, Any]) -> bool:
    """Whether a consolidated copy describes exactly the nodes' own documents (a group's
    ``consolidated_metadata`` aside: consolidation fills it in for child groups)."""
    if not isinstance(copy, dict) or set(copy) != set(actual):
        return False
    for path, doc in actual.items():
        entry = copy[path]
        if isinstance(doc, dict) and isinstance(entry, dict):
            doc = {k: v for k, v in doc.items() if k != "consolidated_metadata"}
            entry = {k: v for k, v in entry.items() if k != "consolidated_metadata"}
        if doc != entry:
            return False
    return True


def _own(data: Any) -> bytes | None:
    return None if data is None else bytes(data)


def _data(records: Any) -> bytes | None:
    """The data of the first of ``dirty_read``'s records, if any."""
    return bytes(records[0][2]) if records else None


@dataclass(frozen=True, slots=True)
class _Want:
    """What a read wants of a record: all of it, a byte range, a suffix, or its size. Cut on
    the server (:meth:`spec`), or here from data already read (:meth:`cut`)."""

    kind: str  # "whole" | "range" | "suffix" | "size"
    start: int = 0
    length: int | None = None

    @classmethod
    def of(cls, byte_range: ByteRequest | None) -> _Want:
        if byte_range is None:
            return cls("whole")
        if isinstance(byte_range, RangeByteRequest):
            return cls("range", byte_range.start, max(byte_range.end - byte_range.start, 0))
        if isinstance(byte_range, OffsetByteRequest):
            return cls("range", byte_range.offset, None)
        if isinstance(byte_range, SuffixByteRequest):
            return cls("suffix", 0, byte_range.suffix)
        raise TypeError(f"Unexpected byte_range, got {byte_range!r}")

    def spec(self, client: MnesiaClient, key: Any) -> list[Any]:
        if self.kind == "range":
            return client.range_spec(key, self.start, self.length)
        if self.kind == "suffix":
            assert self.length is not None
            return client.suffix_spec(key, self.length)
        if self.kind == "size":
            return client.size_spec(key)
        return [((client.table_atom, key, _V1), [], [_V1])]

    def cut(self, data: bytes) -> Any:
        if self.kind == "range":
            end = None if self.length is None else self.start + self.length
            return data[self.start : end]
        if self.kind == "suffix":
            assert self.length is not None
            return data[len(data) - min(self.length, len(data)) :]
        if self.kind == "size":
            return len(data)
        return data


_WHOLE = _Want("whole")
_SIZE = _Want("size")
