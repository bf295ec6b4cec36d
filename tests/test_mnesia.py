"""The Mnesia layer against real 2-3 node clusters: setup, replicas, atomicity, listing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from hashlib import md5
from typing import Any

import pytest

from pyrlang_zarr import Atom, ExportFun, Node
from pyrlang_zarr.errors import (
    IncompatibleTable,
    NotFound,
    TableNotFound,
    TransactionError,
)
from pyrlang_zarr.mnesia import Delete, MnesiaClient, Write, ensure_table
from pyrlang_zarr.testing.cluster import LocalCluster
from tests.erl import MFA, CallCounts

pytestmark = pytest.mark.erlang

TAB = "zarr_storage"


@pytest.fixture(scope="module")
def cluster3() -> Iterator[LocalCluster]:
    """Three real nodes of this module's own, for tables replicated three ways."""
    with LocalCluster(n=3) as c:
        yield c


@pytest.fixture
async def cluster3_node(cluster3: LocalCluster) -> AsyncIterator[Node]:
    """A hidden node of our own, with ``cluster3``'s cookie."""
    async with Node(cookie=cluster3.cookie) as n:
        yield n


@pytest.fixture
async def client(cluster3_node: Node, cluster3: LocalCluster) -> MnesiaClient:
    await ensure_table(cluster3_node, cluster3.nodes, TAB)
    return MnesiaClient(cluster3_node, TAB, cluster3.nodes[0])


async def test_setup_fresh_cluster_twice(cluster3_node: Node, cluster3: LocalCluster) -> None:
    first = await ensure_table(cluster3_node, cluster3.nodes, TAB)
    second = await ensure_table(cluster3_node, cluster3.nodes, TAB)
    assert first.type == second.type == "ordered_set"
    assert first.storage == second.storage == "disc_copies"
    assert set(first.replicas) == set(second.replicas) == set(cluster3.nodes)
    assert not second.created
    # from the Erlang side, independently
    out = cluster3.erl_eval(2, f"lists:sort(mnesia:table_info({TAB}, disc_copies)).")
    for n in cluster3.nodes:
        assert n in out


async def test_ram_copies_table(cluster3_node: Node, cluster3: LocalCluster) -> None:
    info = await ensure_table(cluster3_node, cluster3.nodes[:2], "pz_ram", ram_copies=True)
    assert info.storage == "ram_copies"
    assert set(info.replicas) == set(cluster3.nodes[:2])
    ram = await cluster3_node.rpc(
        cluster3.nodes[1], "mnesia", "table_info", [Atom("pz_ram"), Atom("ram_copies")]
    )
    assert sorted(map(str, ram)) == sorted(cluster3.nodes[:2])


async def test_write_is_readable_on_every_replica(
    client: MnesiaClient, cluster3_node: Node, cluster3: LocalCluster
) -> None:
    key = (b"arr-replica", (0, 1))
    await client.write(key, b"chunk-bytes")
    for peer in cluster3.nodes:  # dirty_read on a replica reads its local copy
        records = await cluster3_node.rpc(peer, "mnesia", "dirty_read", [Atom(TAB), key])
        assert records == [(Atom(TAB), key, b"chunk-bytes")]


async def test_read_missing_and_required(client: MnesiaClient) -> None:
    assert await client.read((b"nope", (9,))) is None
    with pytest.raises(NotFound, match="not_found"):
        await client.read_required((b"nope", (9,)))


async def test_missing_table_is_table_not_found(
    cluster3_node: Node, cluster3: LocalCluster
) -> None:
    await ensure_table(cluster3_node, cluster3.nodes, TAB)  # Mnesia up
    c = MnesiaClient(cluster3_node, "no_such_table", cluster3.nodes[0])
    with pytest.raises(TableNotFound, match="table_not_found"):
        await c.read((b"a", (0,)))
    with pytest.raises(TableNotFound):
        await c.write((b"a", (0,)), b"x")
    with pytest.raises(TableNotFound):
        await c.keys_under(b"a")


async def test_batch_with_one_bad_record_writes_nothing(client: MnesiaClient) -> None:
    good = [(Atom(TAB), (b"arr-atomic", (i,)), b"v") for i in range(5)]
    bad = (Atom(TAB), (b"arr-atomic", (99,)))  # wrong arity: bad_type
    write = ExportFun("mnesia", "write", 1)
    apply = ExportFun("erlang", "apply", 2)
    records = [*good[:3], bad, *good[3:]]
    with pytest.raises(TransactionError, match=r"transaction_error.*bad_type"):
        await client.transaction(
            ExportFun("lists", "zipwith", 3),
            [apply, [write] * len(records), [[r] for r in records]],
        )
    assert await client.keys_under(b"arr-atomic") == []


async def test_batch_writes_and_deletes_atomically(client: MnesiaClient) -> None:
    await client.write_many([((b"arr-b", (i,)), bytes([i])) for i in range(4)])
    await client.batch(
        [Delete((b"arr-b", (0,))), Write((b"arr-b", (9,)), b"n"), Delete((b"arr-b", (1,)))]
    )
    assert sorted(await client.keys_under(b"arr-b")) == [(2,), (3,), (9,)]


async def test_batch_into_missing_table_writes_nothing(
    cluster3_node: Node, client: MnesiaClient, cluster3: LocalCluster
) -> None:
    ok_write = ExportFun("mnesia", "write", 1)
    apply = ExportFun("erlang", "apply", 2)
    recs = [
        [(Atom(TAB), (b"arr-miss", (0,)), b"a")],
        [(Atom("no_such_tab"), (b"arr-miss", (1,)), b"b")],
    ]
    with pytest.raises(TableNotFound):
        await client.transaction(
            ExportFun("lists", "zipwith", 3), [apply, [ok_write, ok_write], recs]
        )
    assert await client.read((b"arr-miss", (0,))) is None


async def test_50_concurrent_writers_lose_nothing(
    client: MnesiaClient, cluster3: LocalCluster
) -> None:
    async def writer(w: int) -> None:
        for i in range(10):
            await client.write((b"arr-conc", (w, i)), f"{w}:{i}".encode())

    await asyncio.gather(*(writer(w) for w in range(50)))
    keys = await client.keys_under(b"arr-conc")
    assert len(keys) == 500 and set(keys) == {(w, i) for w in range(50) for i in range(10)}
    values = await client.read_many([(b"arr-conc", k) for k in sorted(keys)], consistent=True)
    assert values == [f"{w}:{i}".encode() for w, i in sorted(keys)]


async def test_concurrent_insert_if_absent_exactly_one_wins(
    client: MnesiaClient, cluster3: LocalCluster
) -> None:
    # contenders through all three coordinators at once
    clients = [MnesiaClient(client.node, TAB, n) for n in cluster3.nodes]
    key = (b"arr-race", Atom("metadata"))
    results = await asyncio.gather(
        *(clients[i % 3].insert_if_absent(key, f"w{i}".encode()) for i in range(30))
    )
    assert results.count(True) == 1
    winner = results.index(True)
    assert await client.read(key) == f"w{winner}".encode()


async def test_compare_and_set(client: MnesiaClient) -> None:
    key = (b"arr-cas", (0,))
    assert await client.compare_and_set(key, None, b"one")
    assert not await client.compare_and_set(key, None, b"two")
    assert not await client.compare_and_set(key, b"zzz", b"two")
    assert await client.compare_and_set(key, b"one", b"two")
    assert await client.read(key) == b"two"
    assert await client.compare_and_set(key, b"two", None)
    assert await client.read(key) is None


async def test_concurrent_compare_and_set_counter(client: MnesiaClient) -> None:
    """Read-modify-write with CAS retries: 20 increments, none lost."""
    key = (b"arr-counter", (0,))
    await client.write(key, b"0")

    async def incr() -> None:
        while True:
            cur = await client.read(key)
            assert cur is not None
            if await client.compare_and_set(key, cur, str(int(cur) + 1).encode()):
                return

    await asyncio.gather(*(incr() for _ in range(20)))
    assert await client.read(key) == b"20"


async def test_sizes_and_ranges_on_the_server(client: MnesiaClient) -> None:
    key = (b"arr-range", (0, 0))
    data = bytes(range(100))
    await client.write(key, data)
    assert await client.size(key) == 100
    assert await client.size((b"arr-range", (5, 5))) is None
    assert await client.read_range(key, 10, 5) == data[10:15]
    assert await client.read_range(key, 95, 50) == data[95:]
    assert await client.read_range(key, 150, 5) == b""
    assert await client.read_range(key, 40, None) == data[40:]
    assert await client.read_range(key, 400, None) == b""
    assert await client.read_suffix(key, 7) == data[-7:]
    assert await client.read_suffix(key, 700) == data
    assert await client.read_range((b"arr-range", (1, 1)), 0, 1) is None
    assert await client.sizes_under(b"arr-range") == [((0, 0), 100)]
    with pytest.raises(ValueError):
        await client.read_range(key, -1, 5)


async def test_listing_one_array_among_100(client: MnesiaClient) -> None:
    await client.write_many(
        ((f"arr-{a:03d}".encode(), (i, j)), b"x")
        for a in range(100)
        for i in range(3)
        for j in range(2)
    )
    await client.write((b"arr-042", Atom("metadata")), b"{}")
    await client.write((b"arr-042", b"zarr.json"), b"{}")
    keys = await client.keys_under(b"arr-042")
    expected = {(i, j) for i in range(3) for j in range(2)} | {Atom("metadata"), b"zarr.json"}
    assert len(keys) == len(expected) and set(keys) == expected
    assert await client.delete_under(b"arr-042") == len(expected)
    assert await client.keys_under(b"arr-042") == []
    assert len(await client.keys_under(b"arr-043")) == 6


async def test_durable_write(cluster3_node: Node, cluster3: LocalCluster) -> None:
    await ensure_table(cluster3_node, cluster3.nodes, TAB)
    c = MnesiaClient(cluster3_node, TAB, cluster3.nodes[1], durable=True)
    await c.write((b"arr-durable", (0,)), b"safe")
    await c.batch([Write((b"arr-durable", (1,)), b"safe too")])
    assert await c.read_many([(b"arr-durable", (0,)), (b"arr-durable", (1,))]) == [
        b"safe",
        b"safe too",
    ]


SYNC_COMMITS: list[MFA] = [("mnesia", "sync_transaction", a) for a in (1, 2, 3)]
ASYNC_COMMITS: list[MFA] = [("mnesia", "transaction", a) for a in (1, 2, 3)]
SYNC_LOG: MFA = ("mnesia", "sync_log", 0)


def every_write(c: MnesiaClient, tag: bytes) -> dict[str, Callable[[], Awaitable[Any]]]:
    """One call of each write API of ``c``, on records of array ``tag``."""

    def k(i: int) -> tuple[bytes, tuple[int]]:
        return (tag, (i,))

    return {
        "write": lambda: c.write(k(0), b"a"),
        "delete": lambda: c.delete(k(0)),
        "write_many": lambda: c.write_many([(k(1), b"b"), (k(2), b"c")]),
        "batch": lambda: c.batch([Write(k(3), b"d"), Delete(k(1))]),
        "checked_batch": lambda: c.checked_batch([(k(3), md5(b"d").digest())], [Write(k(3), b"e")]),
        "insert_if_absent": lambda: c.insert_if_absent(k(4), b"f"),
        "compare_and_set": lambda: c.compare_and_set(k(4), b"f", b"g"),
    }


async def calls_per_op(
    ops: dict[str, Callable[[], Awaitable[Any]]], counters: list[CallCounts]
) -> dict[str, list[dict[MFA, int]]]:
    """For each op, the calls it made of each counted function, node by node."""
    async with contextlib.AsyncExitStack() as stack:
        for counter in counters:
            await stack.enter_async_context(counter)
        seen = {}
        for name, op in ops.items():
            before = [await counter.counts() for counter in counters]
            await op()
            after = [await counter.counts() for counter in counters]
            seen[name] = [
                {mfa: a[mfa] - b[mfa] for mfa in a} for a, b in zip(after, before, strict=True)
            ]
        return seen


async def test_every_write_commits_with_sync_transaction(
    client: MnesiaClient, cluster3_node: Node, cluster3: LocalCluster
) -> None:
    """The commit kind itself, counted on the coordinator: each write is one
    ``mnesia:sync_transaction`` and no ``mnesia:transaction``, which would acknowledge
    before the other replicas have the write (test_netns_faults shows the difference)."""
    ops = every_write(client, b"arr-kind")
    counter = CallCounts(cluster3_node, client.coordinator, [*SYNC_COMMITS, *ASYNC_COMMITS])
    seen = await calls_per_op(ops, [counter])
    kinds = {
        name: (sum(calls[m] for m in SYNC_COMMITS), sum(calls[m] for m in ASYNC_COMMITS))
        for name, [calls] in seen.items()
    }
    assert kinds == dict.fromkeys(ops, (1, 0))


async def test_durable_commit_forces_the_log_on_every_replica(
    cluster3_node: Node, cluster3: LocalCluster
) -> None:
    """``durable=True``: each write commits with ``sync_transaction``, then has
    ``mnesia:sync_log()`` run on every disc replica before it is acknowledged. (A skipped
    sync_log loses nothing while the nodes live: only a kill -9 of them all shows it.)"""
    await ensure_table(cluster3_node, cluster3.nodes, TAB)
    c = MnesiaClient(cluster3_node, TAB, cluster3.nodes[1], durable=True)
    ops = every_write(c, b"arr-durable-log")
    counters = [CallCounts(cluster3_node, n, [SYNC_LOG, *SYNC_COMMITS]) for n in cluster3.nodes]
    seen = await calls_per_op(ops, counters)
    done = {
        name: ([calls[SYNC_LOG] for calls in per_node], sum(per_node[1][m] for m in SYNC_COMMITS))
        for name, per_node in seen.items()
    }
    assert done == dict.fromkeys(ops, ([1, 1, 1], 1))


async def test_incompatible_table_is_refused(cluster3_node: Node, cluster3: LocalCluster) -> None:
    await ensure_table(cluster3_node, cluster3.nodes, TAB)
    out = cluster3.erl_eval(
        0, "mnesia:create_table(pz_other, [{attributes, [a, b, c]}, {ram_copies, [node()]}])."
    )
    assert "atomic" in out
    with pytest.raises(IncompatibleTable, match="pz_other"):
        await ensure_table(cluster3_node, cluster3.nodes, "pz_other")


async def test_bad_setup_arguments(cluster3_node: Node) -> None:
    with pytest.raises(ValueError):
        await ensure_table(cluster3_node, [], TAB)
    with pytest.raises(ValueError):
        await ensure_table(cluster3_node, ["nohost"], TAB)
    with pytest.raises(ValueError):
        await ensure_table(cluster3_node, ["a@b"], TAB, table_type="bag")
    with pytest.raises(ValueError):
        await ensure_table(cluster3_node, ["a@b"], "schema")


async def test_setup_on_cluster_already_running_mnesia_and_restart() -> None:
    """Mnesia already up with a foreign table and only 2 of 3 nodes: we add ours, touch
    nothing else, bring in the third node, twice; a disc table survives a node restart."""
    with LocalCluster(n=3) as c:
        n0, n1, n2 = c.nodes
        setup = (
            f"ok = rpc:call('{n0}', mnesia, create_schema, [['{n0}', '{n1}']]),"
            f" [ok, ok] = [rpc:call(N, mnesia, start, []) || N <- ['{n0}', '{n1}']],"
            f" rpc:call('{n0}', mnesia, create_table, [app_table, [{{disc_copies, ['{n0}']}}]])."
        )
        assert "atomic" in c.erl_eval(0, setup)
        async with Node(cookie=c.cookie) as node:
            for _ in range(2):
                info = await ensure_table(node, c.nodes, TAB)
                assert set(info.replicas) == set(c.nodes) and info.storage == "disc_copies"
            app = await node.rpc(
                n0, "mnesia", "table_info", [Atom("app_table"), Atom("disc_copies")]
            )
            assert app == [Atom(n0)]  # untouched
            client = MnesiaClient(node, TAB, n0)
            await client.write((b"arr-restart", (0,)), b"persisted")
            await node.rpc(n2, "mnesia", "sync_log", [])
            c.restart(2)
            await ensure_table(node, c.nodes, TAB)  # starts Mnesia on the restarted node
            got = await node.rpc(n2, "mnesia", "dirty_read", [Atom(TAB), (b"arr-restart", (0,))])
            assert got == [(Atom(TAB), (b"arr-restart", (0,)), b"persisted")]
