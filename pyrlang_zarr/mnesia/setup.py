"""Bring Mnesia and our table up on a cluster, from outside, idempotently.

Run from one place (this client) against the nodes the table should live on:

1. nodes with Mnesia stopped and no schema anywhere: one disc schema for all of them
   (``mnesia:create_schema(Nodes)``), then ``mnesia:start()`` on each;
2. nodes with a schema of their own but Mnesia stopped (a restart): ``mnesia:start()``;
3. nodes outside an already running Mnesia cluster: start them, join them with
   ``change_config(extra_db_nodes, ...)``, and give them a disc schema;
4. the table: created if missing (``ordered_set`` by default, see below), else checked for
   compatibility and given a replica on every node of ``nodes`` that lacks one;
5. wait until every replica has loaded the table.

A **fragmented** table (``fragments=N``: ``mnesia_frag``'s ``frag_properties``) has N
fragments spread over ``nodes`` (its node pool), each on ``frag_copies`` of them; step 4 then
adds missing nodes to the pool instead of copying the table there, and
:func:`add_fragments` / :func:`add_pool_nodes` grow it while it is in use.
``disc_only_copies`` keeps records on disc only (dets: no ``ordered_set``, 2 GB per file,
so per fragment).

Nothing else on the cluster is touched: other tables and other nodes' roles stay as they are.

Why ``ordered_set``: a key ``{ArrayId, ChunkIndex}`` sorts by ``ArrayId`` first, so one array's
records are one contiguous range, and a ``select`` with the array id bound visits only that
range. On a ``set`` (ExZarr's default, accepted here) the same listing scans the whole table.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyrlang_zarr.erldist import Node
from pyrlang_zarr.erldist.node import split_node_name
from pyrlang_zarr.errors import IncompatibleTable, MnesiaNotRunning, TransactionError
from pyrlang_zarr.term import Atom, ExportFun, atoms
from pyrlang_zarr.term.format import format_term

TABLE_TYPES = ("ordered_set", "set")
_SCHEMA = Atom("schema")


@dataclass(frozen=True, slots=True)
class TableInfo:
    """What the table looks like once set up."""

    name: str
    type: str
    storage: str  # "disc_copies" | "ram_copies" | "disc_only_copies"
    replicas: tuple[str, ...]
    created: bool
    majority: bool = False
    fragments: int = 0  # 0: not fragmented
    pool: tuple[str, ...] = ()  # a fragmented table's node pool


def _check_args(nodes: Sequence[str], table: str, table_type: str) -> list[str]:
    if isinstance(nodes, str) or not nodes:
        raise ValueError(f"nodes must be a non-empty list of node names, got {nodes!r}")
    out = []
    for n in nodes:
        split_node_name(n)
        if n not in out:
            out.append(str(n))
    if not isinstance(table, str) or not table or len(table.encode()) > 255:
        raise ValueError(f"table must be a non-empty name of at most 255 bytes, got {table!r}")
    if table == "schema":
        raise ValueError("the table cannot be Mnesia's own 'schema' table")
    if table_type not in TABLE_TYPES:
        raise ValueError(f"table type must be one of {TABLE_TYPES}, got {table_type!r}")
    return out


async def _info(node: Node, peer: str, key: str) -> Any:
    return await node.rpc(peer, "mnesia", "system_info", [Atom(key)])


async def ensure_mnesia(node: Node, nodes: Sequence[str], *, timeout: float = 30.0) -> None:
    """Mnesia running on every node of ``nodes``, all in one Mnesia cluster."""
    nodes = _check_args(nodes, "x", "set")
    running = await asyncio.gather(*(_info(node, n, "is_running") for n in nodes))
    up = [n for n, r in zip(nodes, running, strict=True) if r == atoms.YES]
    down = [n for n in nodes if n not in up]
    if down and not up:
        has_schema = await asyncio.gather(*(_has_disc_schema(node, n) for n in down))
        if not any(has_schema):
            result = await node.rpc(nodes[0], "mnesia", "create_schema", [[Atom(n) for n in nodes]])
            if result != atoms.OK:
                raise TransactionError(
                    f"mnesia:create_schema({nodes}) failed: {format_term(result)}", result
                )
    await asyncio.gather(*(start_mnesia(node, n, timeout) for n in down))
    # every node must see the others as db nodes; join the ones that do not
    anchor = up[0] if up else nodes[0]
    db_nodes = {str(n) for n in await _info(node, anchor, "db_nodes")}
    for n in nodes:
        if n in db_nodes:
            continue
        joined = await node.rpc(
            n, "mnesia", "change_config", [Atom("extra_db_nodes"), [Atom(anchor)]]
        )
        if not (type(joined) is tuple and joined[0] == atoms.OK and Atom(anchor) in joined[1]):
            raise TransactionError(
                f"{n} could not join the Mnesia cluster of {anchor}: {format_term(joined)}", joined
            )
        copy = await node.rpc(
            anchor, "mnesia", "change_table_copy_type", [_SCHEMA, Atom(n), Atom("disc_copies")]
        )
        if copy != (atoms.ATOMIC, atoms.OK) and not _already(copy, "already_exists"):
            raise TransactionError(f"could not give {n} a disc schema: {format_term(copy)}", copy)


def _bad_type_hint(result: Any) -> str:
    """What to do when a disc table meets a node whose Mnesia schema lives in RAM."""
    if not _already(result, "bad_type") or len(result[1]) < 4:
        return ""
    _, _, storage, where = result[1][:4]
    if str(storage) not in ("disc_copies", "disc_only_copies"):
        return ""
    return (
        f". {where} runs Mnesia with a RAM schema (Mnesia was started there without a disc "
        "schema, as Elixir's plain :mnesia.start() does), which holds only RAM tables: pass "
        "ram_copies=True (?ram_copies=true in a mnesia:// URL), or give that node a disc "
        "schema first with mnesia:change_table_copy_type(schema, node(), disc_copies)"
    )


def _already(result: Any, what: str) -> bool:
    return (
        type(result) is tuple
        and result[:1] == (atoms.ABORTED,)
        and type(result[1]) is tuple
        and result[1][:1] == (Atom(what),)
    )


async def _has_disc_schema(node: Node, peer: str) -> bool:
    directory = await _info(node, peer, "directory")  # a charlist: a list of ints
    schema = bytes(directory).rstrip(b"/") + b"/schema.DAT"
    return bool(await node.rpc(peer, "filelib", "is_regular", [schema]))


async def start_mnesia(node: Node, peer: str, timeout: float) -> None:
    result = await node.rpc(peer, "mnesia", "start", [], timeout=timeout)
    if result != atoms.OK:
        raise MnesiaNotRunning(f"mnesia:start() on {peer} failed: {format_term(result)}")


def check_frag_args(
    nodes: Sequence[str],
    fragments: int | None,
    frag_copies: int | None,
    ram_copies: bool,
    disc_only_copies: bool,
) -> None:
    """Raise ``TypeError``/``ValueError`` for fragment and storage options that cannot
    work, before anything is sent."""
    if ram_copies and disc_only_copies:
        raise ValueError("pick one of ram_copies=True and disc_only_copies=True, not both")
    for name, value in (("fragments", fragments), ("frag_copies", frag_copies)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if frag_copies is not None and fragments is None:
        raise ValueError("frag_copies needs fragments=N (the table is not fragmented otherwise)")
    if frag_copies is not None and frag_copies > len(dict.fromkeys(nodes)):
        raise ValueError(
            f"frag_copies={frag_copies} needs at least {frag_copies} nodes, got {list(nodes)}"
        )


async def ensure_table(
    node: Node,
    nodes: Sequence[str],
    table: str = "zarr_storage",
    *,
    ram_copies: bool = False,
    table_type: str | None = None,
    majority: bool | None = None,
    timeout: float = 30.0,
    fragments: int | None = None,
    frag_copies: int | None = None,
    disc_only_copies: bool = False,
) -> TableInfo:
    """Mnesia up on ``nodes`` and ``table`` replicated on each of them; safe to repeat.

    An existing table is accepted if its records are ``{table, Key, Data}`` and its type is
    ``set`` or ``ordered_set`` (an ExZarr table qualifies); its storage type is kept.
    ``majority=True`` makes transactions on the table commit only where more than half of
    its replicas are reachable (``{majority, true}``): the minority side of a partition
    refuses writes instead of diverging. ``None`` leaves an existing table's setting alone.

    ``fragments=N`` creates the table in N fragments over ``nodes``, each on
    ``frag_copies`` (default 1) of them; an existing fragmented table keeps its fragments
    and the copies of each (grow it with :func:`add_fragments`) and gets ``nodes`` added
    to its pool.
    ``disc_only_copies=True`` stores records on disc only (the table type is then ``set``).
    """
    check_frag_args(nodes, fragments, frag_copies, ram_copies, disc_only_copies)
    if table_type is None:
        table_type = "set" if disc_only_copies else "ordered_set"
    elif disc_only_copies and table_type == "ordered_set":
        raise ValueError(
            "disc_only_copies tables cannot be ordered_set (dets): use table_type='set'"
        )
    nodes = _check_args(nodes, table, table_type)
    await ensure_mnesia(node, nodes, timeout=timeout)
    coordinator = nodes[0]
    tab = Atom(table)
    storage = (
        "ram_copies" if ram_copies else "disc_only_copies" if disc_only_copies else "disc_copies"
    )
    created = False
    if tab not in await _info(node, coordinator, "tables"):
        placement: Any
        if fragments is not None:
            placement = (
                Atom("frag_properties"),
                [
                    (Atom("n_fragments"), fragments),
                    (Atom(f"n_{storage}"), frag_copies or 1),
                    (Atom("node_pool"), [Atom(n) for n in nodes]),
                ],
            )
        else:
            placement = (Atom(storage), [Atom(n) for n in nodes])
        definition = [
            (Atom("attributes"), [Atom("key"), Atom("data")]),
            (Atom("type"), Atom(table_type)),
            placement,
            (Atom("majority"), bool(majority)),
        ]
        result = await node.rpc(coordinator, "mnesia", "create_table", [tab, definition])
        if result == (atoms.ATOMIC, atoms.OK):
            created = True
        elif not _already(result, "already_exists"):  # lost a race: check what exists
            raise TransactionError(
                f"mnesia:create_table({table}) failed: {format_term(result)}"
                + _bad_type_hint(result),
                result,
            )
    info = await _describe(node, coordinator, table)
    if fragments is not None and not info.fragments:
        raise IncompatibleTable(
            f"Mnesia table {table!r} exists and is not fragmented, so fragments={fragments} "
            "cannot apply: choose another table_name, or leave fragments out"
        )
    if info.fragments:  # a fragmented table grows by its node pool, never by whole copies
        extra = [n for n in nodes if n not in info.pool]
        if extra:
            await add_pool_nodes(node, coordinator, table, extra, timeout=timeout)
            info = await _describe(node, coordinator, table)
    missing = [] if created or info.fragments else [n for n in nodes if n not in info.replicas]
    if missing:
        for n in missing:
            result = await node.rpc(
                coordinator, "mnesia", "add_table_copy", [tab, Atom(n), Atom(info.storage)]
            )
            if result != (atoms.ATOMIC, atoms.OK) and not _already(result, "already_exists"):
                raise TransactionError(
                    f"could not add a replica of {table} on {n}: {format_term(result)}"
                    + _bad_type_hint(result),
                    result,
                )
        info = await _describe(node, coordinator, table)
    if majority is not None and info.majority != majority:
        result = await node.rpc(coordinator, "mnesia", "change_table_majority", [tab, majority])
        if result != (atoms.ATOMIC, atoms.OK):
            raise TransactionError(
                f"could not set majority={majority} on {table}: {format_term(result)}", result
            )
        info = await _describe(node, coordinator, table)
    tabs = await fragment_names(node, coordinator, table) if info.fragments else [tab]
    await asyncio.gather(*(wait_loaded(node, n, tabs, timeout) for n in nodes))
    return dataclasses.replace(info, created=created)


async def fragment_names(node: Node, peer: str, table: str) -> list[Atom]:
    """The fragment tables of ``table`` (``[table]`` when it is not fragmented)."""
    names = await node.rpc(peer, "mnesia", "activity", _frag_info(table, "frag_names"))
    return list(names)


def _frag_info(table: str, item: str) -> list[Any]:
    return [
        Atom("async_dirty"),
        ExportFun("mnesia", "table_info", 2),
        [Atom(table), Atom(item)],
        Atom("mnesia_frag"),
    ]


async def frag_properties(node: Node, peer: str, table: str) -> dict[str, Any]:
    """``mnesia:table_info(Table, frag_properties)`` as a dict (empty: not fragmented)."""
    props = await node.rpc(peer, "mnesia", "table_info", [Atom(table), Atom("frag_properties")])
    return {str(k): v for k, v in props} if isinstance(props, list) else {}


async def add_fragments(
    node: Node, peer: str, table: str, count: int = 1, *, timeout: float = 120.0
) -> int:
    """Add ``count`` fragments to the fragmented ``table`` while it is in use, each on the
    least loaded nodes of its pool (``mnesia:change_table_frag(T, {add_frag, FragDist})``:
    Mnesia moves the records whose hash now points at the new fragment, in a schema
    transaction; reads and writes wait for it, none fails). Returns the number of
    fragments now."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive int, got {count!r}")
    props = await frag_properties(node, peer, table)
    if not props:
        raise IncompatibleTable(f"Mnesia table {table!r} is not fragmented: nothing to add to")
    tab = Atom(table)
    for _ in range(count):
        dist = await node.rpc(peer, "mnesia", "activity", _frag_info(table, "frag_dist"))
        result = await node.rpc(
            peer, "mnesia", "change_table_frag", [tab, (Atom("add_frag"), dist)], timeout=timeout
        )
        if result != (atoms.ATOMIC, atoms.OK):
            raise TransactionError(
                f"could not add a fragment to {table}: {format_term(result)}", result
            )
    return len(await fragment_names(node, peer, table))


async def add_pool_nodes(
    node: Node, peer: str, table: str, nodes: Sequence[str], *, timeout: float = 30.0
) -> list[str]:
    """Add ``nodes`` to the fragmented ``table``'s node pool (Mnesia set up and joined on
    them first), so fragments added later go there too; returns the pool."""
    nodes = _check_args(nodes, table, "set")
    props = await frag_properties(node, peer, table)
    if not props:
        raise IncompatibleTable(f"Mnesia table {table!r} is not fragmented: it has no node pool")
    await ensure_mnesia(node, [peer, *nodes], timeout=timeout)
    pool = [str(n) for n in props.get("node_pool", [])]
    for n in nodes:
        if n in pool:
            continue
        result = await node.rpc(
            peer, "mnesia", "change_table_frag", [Atom(table), (Atom("add_node"), Atom(n))]
        )
        if result != (atoms.ATOMIC, atoms.OK) and not _already(result, "already_exists"):
            raise TransactionError(
                f"could not add {n} to the node pool of {table}: {format_term(result)}", result
            )
        pool.append(n)
    return pool


async def wait_loaded(node: Node, peer: str, tabs: list[Atom], timeout: float) -> None:
    """Each replica loads its own copy (from disc or from another replica) after a start."""
    args = [tabs, int(timeout * 1000)]
    waited = await node.rpc(peer, "mnesia", "wait_for_tables", args, timeout=timeout + 5)
    if waited != atoms.OK:
        raise TransactionError(
            f"tables {tabs} not loaded on {peer} within {timeout} s: {format_term(waited)}", waited
        )


@dataclass(frozen=True, slots=True)
class TableFacts:
    """A table as Mnesia describes it, whoever made it (``mnesia:table_info/2``)."""

    name: str
    attributes: list[Any]
    record_name: Any
    type: str
    storage: str  # "disc_copies" | "ram_copies" | "disc_only_copies"
    replicas: tuple[str, ...]
    active: tuple[str, ...]
    majority: bool
    size: int | None  # None while the table is not loaded on that node (Mnesia: undefined)

    @property
    def holds_our_records(self) -> bool:
        """``{Table, Key, Data}`` records: two attributes, record name = table name."""
        return (
            len(self.attributes) == 2
            and self.record_name == Atom(self.name)
            and self.type in TABLE_TYPES
        )


async def describe_table(node: Node, peer: str, table: str) -> TableFacts:
    """What ``peer``'s Mnesia says of ``table`` (one round trip per fact, all at once)."""
    tab = Atom(table)

    async def ti(key: str) -> Any:
        return await node.rpc(peer, "mnesia", "table_info", [tab, Atom(key)])

    keys = (
        *("attributes", "record_name", "type"),
        *("disc_copies", "ram_copies", "disc_only_copies"),
        *("majority", "size", "active_replicas"),
    )
    (
        attributes,
        record_name,
        kind,
        disc,
        ram,
        disc_only,
        majority,
        size,
        active,
    ) = await asyncio.gather(*(ti(k) for k in keys))
    return TableFacts(
        name=table,
        attributes=list(attributes),
        record_name=record_name,
        type=str(kind),
        storage="disc_copies" if disc else "ram_copies" if ram else "disc_only_copies",
        replicas=tuple(sorted(str(n) for n in (*disc, *ram, *disc_only))),
        active=tuple(sorted(str(n) for n in active)),
        majority=majority is True,
        size=size if type(size) is int else None,
    )


async def _describe(node: Node, coordinator: str, table: str) -> TableInfo:
    facts = await describe_table(node, coordinator, table)
    if not facts.holds_our_records:
        raise IncompatibleTable(
            f"Mnesia table {table!r} exists but cannot hold our records {{{table}, Key, Data}}: "
            f"attributes {format_term(facts.attributes)}, record_name {facts.record_name}, "
            f"type {facts.type} (need 2 attributes, record_name = table name, type set or "
            "ordered_set); choose another table_name"
        )
    props = await frag_properties(node, coordinator, table)
    if not props:
        return TableInfo(table, facts.type, facts.storage, facts.replicas, False, facts.majority)
    pool = tuple(sorted(str(n) for n in props.get("node_pool", [])))
    return TableInfo(
        table, facts.type, facts.storage, pool, False, facts.majority, props["n_fragments"], pool
    )
