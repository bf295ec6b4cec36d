"""What is in a table: the arrays, their size and replicas; and removing one.

Counting runs on the server: one dirty ``select`` over the table (through ``mnesia_frag``,
so over every fragment of a fragmented table) with the sizes computed in
the match spec, summed per array id by an expression ``erl_eval`` runs on the node, so only
one small map per table crosses the network. Shapes and dtypes come from each array's root
metadata document, read through :class:`~pyrlang_zarr.MnesiaStore`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pyrlang_zarr as pz
from pyrlang_zarr.errors import MnesiaNotRunning, NotFound, TableNotFound
from pyrlang_zarr.keys import parse_metadata
from pyrlang_zarr.store import DEFAULT_TABLE
from pyrlang_zarr.term import Atom

__all__ = [
    "ArrayInfo",
    "FragmentInfo",
    "TableReplicas",
    "array_info",
    "evaluate",
    "fragments",
    "grow_fragments",
    "list_arrays",
    "remove_array",
    "table_replicas",
    "tables",
]

_TREES: dict[str, Any] = {}

# Per array id: {Records, Bytes}. Records whose key is not {Binary, _} are not ours.
_COUNT = """
lists:foldl(
    fun({A, S}, M) -> maps:update_with(A, fun({C, B}) -> {C + 1, B + S} end, {1, S}, M) end,
    #{},
    mnesia:activity(async_dirty, fun mnesia:select/2,
                    [Tab, [{{Tab, {'$1', '_'}, '$2'},
                            [{is_binary, '$1'}, {is_binary, '$2'}],
                            [{{'$1', {byte_size, '$2'}}}]}]], mnesia_frag)).
"""

_COUNT_ONE = """
lists:foldl(fun(S, {C, B}) -> {C + 1, B + S} end, {0, 0},
    mnesia:activity(async_dirty, fun mnesia:select/2,
                    [Tab, [{{Tab, {Aid, '_'}, '$1'}, [{is_binary, '$1'}],
                            [{byte_size, '$1'}]}]], mnesia_frag)).
"""


async def evaluate(node: pz.Node, peer: str, text: str, bindings: dict[str, Any]) -> Any:
    """The value of the Erlang expression ``text`` on ``peer`` (parsed there once)."""
    tree = _TREES.get(text)
    if tree is None:
        scanned = await node.rpc(peer, "erl_scan", "string", [list(text.encode())])
        if scanned[0] != Atom("ok"):
            raise ValueError(f"erl_scan refused the expression: {scanned!r}")
        parsed = await node.rpc(peer, "erl_parse", "parse_exprs", [scanned[1]])
        if parsed[0] != Atom("ok") or len(parsed[1]) != 1:
            raise ValueError(f"erl_parse refused the expression: {parsed!r}")
        tree = _TREES[text] = parsed[1][0]
    binds = sorted((Atom(k), v) for k, v in bindings.items())
    return await node.rpc(
        peer, "erl_eval", "expr", [tree, binds, Atom("none"), Atom("none"), Atom("value")]
    )


@dataclass(frozen=True)
class TableReplicas:
    """A table's replicas as the node asked sees them."""

    table: str
    storage: str  # disc_copies, ram_copies or disc_only_copies
    type: str
    replicas: tuple[str, ...]
    running: tuple[str, ...]  # replicas running Mnesia with the node asked
    majority: bool

    @property
    def down(self) -> tuple[str, ...]:
        return tuple(n for n in self.replicas if n not in self.running)

    def describe(self) -> str:
        down = f", down: {', '.join(self.down)}" if self.down else ""
        maj = ", majority" if self.majority else ""
        return f"{self.storage} on {', '.join(self.replicas)}{down}{maj}"


@dataclass(frozen=True)
class ArrayInfo:
    """One array (or group) of a table."""

    array_id: str
    records: int
    stored_bytes: int
    kind: str = "?"  # "array", "group", or "?" when its metadata is missing or unreadable
    zarr_format: int | None = None
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    chunks: tuple[int, ...] | None = None
    shards: tuple[int, ...] | None = None
    replicas: TableReplicas | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "array_id": self.array_id,
            "kind": self.kind,
            "zarr_format": self.zarr_format,
            "shape": list(self.shape) if self.shape is not None else None,
            "dtype": self.dtype,
            "chunks": list(self.chunks) if self.chunks is not None else None,
            "shards": list(self.shards) if self.shards is not None else None,
            "records": self.records,
            "stored_bytes": self.stored_bytes,
            "replicas": list(self.replicas.replicas) if self.replicas else None,
            "replicas_down": list(self.replicas.down) if self.replicas else None,
        }


async def _check_table(node: pz.Node, peer: str, table: str) -> None:
    """TableNotFound / MnesiaNotRunning with what to do, before anything else."""
    running = await node.rpc(peer, "mnesia", "system_info", [Atom("is_running")])
    if running != Atom("yes"):
        raise MnesiaNotRunning(
            f"Mnesia is not running on {peer} (is_running = {running}): start it there, or "
            f"let pyrlang_zarr set it up (pz.create(..., nodes=[...]), `pyrlang-zarr cluster "
            "up` for a local cluster); `pyrlang-zarr ping NODE` checks a node"
        )
    if Atom(table) not in await node.rpc(peer, "mnesia", "system_info", [Atom("tables")]):
        raise TableNotFound(
            f"table_not_found: no Mnesia table {table!r} on {peer}'s cluster; "
            f"`pyrlang-zarr ls {peer} --table NAME` lists another table, and "
            "pz.create(..., nodes=[...]) creates one"
        )


async def tables(
    peer: str, *, cookie: str | None = None, node: pz.Node | None = None, tls: Any = None
) -> list[str]:
    """The Mnesia tables of ``peer``'s cluster (Mnesia's own ``schema`` left out)."""
    async with _node(node, cookie, tls) as n:
        found = await n.rpc(peer, "mnesia", "system_info", [Atom("tables")])
    return sorted(str(t) for t in found if str(t) != "schema")


async def table_replicas(node: pz.Node, peer: str, table: str) -> TableReplicas:
    tab = Atom(table)

    async def ti(key: str) -> Any:
        return await node.rpc(peer, "mnesia", "table_info", [tab, Atom(key)])

    disc, ram, disc_only, majority, kind, frag, running = await asyncio.gather(
        ti("disc_copies"),
        ti("ram_copies"),
        ti("disc_only_copies"),
        ti("majority"),
        ti("type"),
        ti("frag_properties"),
        node.rpc(peer, "mnesia", "system_info", [Atom("running_db_nodes")]),
    )
    storage = "disc_copies" if disc else "ram_copies" if ram else "disc_only_copies"
    replicas = tuple(sorted(str(n) for n in (*disc, *ram, *disc_only)))
    pool = dict(p for p in frag if isinstance(p, tuple) and len(p) == 2).get(Atom("node_pool"))
    if isinstance(pool, list):  # fragmented: its fragments live anywhere in the pool
        replicas = tuple(sorted(str(n) for n in pool))
    live = {str(n) for n in running}
    return TableReplicas(
        table,
        storage,
        str(kind),
        replicas,
        tuple(n for n in replicas if n in live),
        majority is True,
    )


class _node:
    """``async with _node(given, cookie, tls)``: the given node, or a fresh one closed
    after."""

    def __init__(self, node: pz.Node | None, cookie: str | None, tls: Any = None) -> None:
        self.given = node
        self.cookie = cookie
        self.tls = tls
        self.own: pz.Node | None = None

    async def __aenter__(self) -> pz.Node:
        if self.given is not None:
            return self.given
        self.own = pz.Node(cookie=self.cookie, tls=self.tls)
        return self.own

    async def __aexit__(self, *exc: object) -> None:
        if self.own is not None:
            await self.own.close()


async def _describe(
    peer: str,
    table: str,
    counts: dict[str, tuple[int, int]],
    cookie: str | None,
    tls: Any,
    replicas: TableReplicas,
) -> list[ArrayInfo]:
    limit = asyncio.Semaphore(32)  # a table of thousands of arrays: not all at once

    async def one(array_id: str) -> ArrayInfo:
        records, nbytes = counts[array_id]
        store = pz.MnesiaStore(
            array_id, node=peer, cookie=cookie, tls=tls, table_name=table, read_only=True
        )
        proto = _prototype()
        async with limit:
            zj, za = await asyncio.gather(
                store.get("zarr.json", proto), store.get(".zarray", proto)
            )
        meta = parse_metadata(
            None if zj is None else zj.to_bytes(), None if za is None else za.to_bytes()
        )
        return ArrayInfo(array_id, records, nbytes, replicas=replicas, **meta)

    return list(await asyncio.gather(*(one(a) for a in sorted(counts))))


def _prototype() -> Any:
    from zarr.core.buffer import default_buffer_prototype

    return default_buffer_prototype()


def _decode_id(raw: Any) -> str:
    return bytes(raw).decode("utf-8", errors="backslashreplace")


async def list_arrays(
    peer: str,
    table: str = DEFAULT_TABLE,
    *,
    cookie: str | None = None,
    node: pz.Node | None = None,
    tls: Any = None,
) -> list[ArrayInfo]:
    """Every array id in ``table`` (seen through ``peer``), sorted, with its records, bytes
    stored, and what its metadata says."""
    async with _node(node, cookie, tls) as n:
        await _check_table(n, peer, table)
        raw, replicas = await asyncio.gather(
            evaluate(n, peer, _COUNT, {"Tab": Atom(table)}), table_replicas(n, peer, table)
        )
    counts = {_decode_id(k): (int(v[0]), int(v[1])) for k, v in raw.items()}
    return await _describe(peer, table, counts, cookie, tls, replicas)


async def array_info(
    peer: str,
    table: str,
    array_id: str,
    *,
    cookie: str | None = None,
    node: pz.Node | None = None,
    tls: Any = None,
) -> ArrayInfo:
    """One array's :class:`ArrayInfo`; :class:`NotFound` if the table holds nothing under
    ``array_id``."""
    async with _node(node, cookie, tls) as n:
        await _check_table(n, peer, table)
        (records, nbytes), replicas = await asyncio.gather(
            evaluate(n, peer, _COUNT_ONE, {"Tab": Atom(table), "Aid": array_id.encode("utf-8")}),
            table_replicas(n, peer, table),
        )
    if records == 0:
        raise NotFound(f"not_found: nothing stored under {array_id!r} in table {table!r} ({peer})")
    counts = {array_id: (records, nbytes)}
    return (await _describe(peer, table, counts, cookie, tls, replicas))[0]


async def remove_array(
    peer: str, table: str, array_id: str, *, cookie: str | None = None, tls: Any = None
) -> ArrayInfo:
    """Delete every record of ``array_id`` in one transaction; what was removed.
    :class:`NotFound` if there was nothing."""
    info = await array_info(peer, table, array_id, cookie=cookie, tls=tls)
    await pz.MnesiaStore(array_id, node=peer, cookie=cookie, tls=tls, table_name=table).clear()
    return info


# Per fragment: {Name, Records, Memory (words), Nodes holding a copy}, asked where it is.
_FRAGMENTS = """
begin
    Info = fun(Item) ->
        mnesia:activity(async_dirty, fun mnesia:table_info/2, [Tab, Item], mnesia_frag)
    end,
    Memory = maps:from_list(Info(frag_memory)),
    [{F, Size, maps:get(F, Memory), lists:sort(mnesia:table_info(F, all_nodes))}
     || {F, Size} <- Info(frag_size)]
end.
"""


@dataclass(frozen=True)
class FragmentInfo:
    """One fragment of a fragmented table."""

    name: str
    records: int
    memory_words: int
    nodes: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "records": self.records,
            "memory_words": self.memory_words,
            "nodes": list(self.nodes),
        }


async def fragments(
    peer: str,
    table: str = DEFAULT_TABLE,
    *,
    cookie: str | None = None,
    node: pz.Node | None = None,
    tls: Any = None,
) -> tuple[list[str], list[FragmentInfo]]:
    """A table's node pool and fragments (one fragment, no pool: not fragmented)."""
    from pyrlang_zarr.mnesia.expr import Expressions
    from pyrlang_zarr.mnesia.setup import frag_properties

    async with _node(node, cookie, tls) as n:
        await _check_table(n, peer, table)
        props = await frag_properties(n, peer, table)
        found = await Expressions(n).eval(peer, _FRAGMENTS, {"Tab": Atom(table)}, timeout=60)
    pool = sorted(str(x) for x in props.get("node_pool", []))
    frags = [
        FragmentInfo(
            str(f),
            size if isinstance(size, int) else 0,
            memory if isinstance(memory, int) else 0,
            tuple(map(str, nodes)),
        )
        for f, size, memory, nodes in found
    ]
    return pool, frags


async def grow_fragments(
    peer: str,
    table: str = DEFAULT_TABLE,
    *,
    add: int = 0,
    nodes: list[str] | tuple[str, ...] = (),
    cookie: str | None = None,
    node: pz.Node | None = None,
    tls: Any = None,
) -> int:
    """Grow a fragmented table while it is in use: ``nodes`` join its node pool (Mnesia
    set up on them), then ``add`` fragments are added, each on the least loaded nodes.
    Returns the number of fragments."""
    from pyrlang_zarr.mnesia.setup import add_fragments, add_pool_nodes, fragment_names

    if isinstance(add, bool) or not isinstance(add, int) or add < 0:
        raise ValueError(f"add must be a non-negative int, got {add!r}")
    if not add and not nodes:
        raise ValueError("nothing to do: pass add=N fragments and/or nodes=[...] to join the pool")
    async with _node(node, cookie, tls) as n:
        await _check_table(n, peer, table)
        if nodes:
            await add_pool_nodes(n, peer, table, list(nodes))
        if add:
            return await add_fragments(n, peer, table, add)
        return len(await fragment_names(n, peer, table))
