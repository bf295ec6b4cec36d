"""Fragmented tables (mnesia_frag) on real nodes: records spread over the fragments and
replicated ``frag_copies`` times as Erlang sees them, reads and writes, listing, live growth
under load, a node killed during writes, and reads that go to the fragments' owners."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
import zarr.api.asynchronous
from zarr.abc.store import RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import Buffer, default_buffer_prototype

import pyrlang_zarr as pz
import pyrlang_zarr.sync as pzs
from pyrlang_zarr import Atom, ExportFun, Node
from pyrlang_zarr.errors import IncompatibleTable, PyrlangZarrError
from pyrlang_zarr.mnesia import MnesiaClient, add_fragments, add_pool_nodes, ensure_table
from pyrlang_zarr.mnesia import client as client_module
from pyrlang_zarr.mnesia.expr import parse
from pyrlang_zarr.mnesia.fragments import frag_text
from pyrlang_zarr.mnesia.setup import frag_properties, fragment_names
from pyrlang_zarr.settings import StoreSettings
from pyrlang_zarr.testing.cluster import LocalCluster
from tests.erl import CallCounts, restarts, spawn_eval, wait_for_lock_conflict
from tests.faults import REPORT, FaultRun
from tests.test_cli import cli as run_cli

pytestmark = pytest.mark.erlang


def cli(c: LocalCluster, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    """``pyrlang-zarr ARGS`` in a process of its own, the cluster's cookie in its
    environment (a HOME of its own, as in test_cli)."""
    return run_cli(Path(tempfile.mkdtemp(prefix="pz-frag-cli-")), *args, cookie=c.cookie, code=code)


TAB = "pz_frag"


@pytest.fixture(scope="module")
def cluster4() -> Iterator[LocalCluster]:
    """Four real nodes of this module's own: three in the first pool, one added live."""
    with LocalCluster(n=4) as c:
        yield c


@pytest.fixture
async def node4(cluster4: LocalCluster) -> AsyncIterator[Node]:
    async with Node(cookie=cluster4.cookie) as n:
        yield n


def fragment_census(c: LocalCluster, i: int, table: str, array_id: str) -> dict[str, Any]:
    """From the Erlang side (node ``i``): for each fragment of ``table``, how many records
    of ``array_id`` it holds and on which nodes it has copies."""
    expr = f"""
        Names = mnesia:activity(async_dirty, fun mnesia:table_info/2,
                                [{table}, frag_names], mnesia_frag),
        [{{F, length(mnesia:dirty_select(F, [{{{{{table}, {{<<"{array_id}">>, '_'}}, '_'}},
                                             [], [true]}}])),
          lists:sort(mnesia:table_info(F, disc_copies) ++ mnesia:table_info(F, ram_copies))}}
         || F <- Names].
    """
    out = c.erl_eval(i, expr)
    census: dict[str, Any] = {}
    for name, count, nodes in re.findall(r"\{(\w+),(\d+),\[([^\]]*)\]\}", out.replace(" ", "")):
        census[name] = (int(count), [n.strip("'") for n in nodes.split(",") if n])
    assert census, out
    return census


def test_frag_text_rewrites_transactions_only() -> None:
    text = "begin R = mnesia:sync_transaction(F, A), {R, mnesia:table_info(Tab, disc_copies)} end."
    out = frag_text(text)
    # the function runs after a read lock on the schema table, through mnesia_frag
    locked = (
        "{atomic, mnesia:activity(sync_transaction, fun(PzCall__) -> "
        "mnesia:lock({table, schema}, read), (fun([PzFun__]) -> apply(PzFun__, []); "
        "([PzFun__, PzArgs__]) -> apply(PzFun__, PzArgs__) end)(PzCall__) end, [[%s]], "
        "mnesia_frag)}"
    )
    assert out == f"begin R = {locked % 'F, A'}, {{R, mnesia:table_info(Tab, disc_copies)}} end."
    # a fun whose body has commas and a nested transaction is kept whole
    nested = frag_text("mnesia:sync_transaction(fun() -> a, mnesia:sync_transaction(G) end).")
    assert nested == locked % ("fun() -> a, " + locked % "G" + " end") + "."


def test_every_transaction_text_of_the_client_parses_once_rewritten() -> None:
    """Each text transaction the client sends to a fragmented table, rewritten, is one our
    own Erlang parser accepts (it is parsed here, never on the cluster), with each of its
    transactions behind the schema lock."""
    texts = {
        name: value
        for name, value in vars(client_module).items()
        if isinstance(value, str) and "mnesia:sync_transaction(" in value
    }
    assert len(texts) >= 10, sorted(texts)
    for name, text in texts.items():
        out = frag_text(text)
        assert out.count("mnesia:lock({table, schema}, read)") == text.count(
            "mnesia:sync_transaction("
        ), name
        assert "mnesia:sync_transaction(" not in out, name
        parse(out)


def test_bad_fragment_options_fail_before_anything_is_sent() -> None:
    nodes = ["a@h", "b@h"]
    with pytest.raises(ValueError, match="frag_copies=3 needs at least 3 nodes"):
        StoreSettings("x", nodes=nodes, fragments=4, frag_copies=3)
    with pytest.raises(ValueError, match="fragments must be at least 1"):
        StoreSettings("x", nodes=nodes, fragments=0)
    with pytest.raises(TypeError, match="fragments must be an int"):
        StoreSettings("x", nodes=nodes, fragments="4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="frag_copies needs fragments"):
        StoreSettings("x", nodes=nodes, frag_copies=2)
    with pytest.raises(ValueError, match="not both"):
        StoreSettings("x", nodes=nodes, ram_copies=True, disc_only_copies=True)
    with pytest.raises(ValueError, match="ExZarr reads with plain mnesia:read"):
        pzs.create("x", (4,), (2,), nodes=nodes, fragments=2, exzarr=True)


async def test_fragmented_array_spread_and_replicated_seen_from_erlang(
    cluster4: LocalCluster, node4: Node
) -> None:
    pool = cluster4.nodes[:3]
    aid = f"frag-{uuid.uuid4().hex[:6]}"
    arr = await pz.create(
        array_id=aid,
        shape=(64, 64),
        chunks=(8, 8),
        dtype="int32",
        node=pool[0],
        cookie=cluster4.cookie,
        nodes=pool,
        fragments=6,
        frag_copies=2,
        table_name=TAB,
    )
    data = np.arange(64 * 64, dtype="int32").reshape(64, 64)
    await arr.set_slice(data, start=(0, 0), stop=(64, 64))
    census = fragment_census(cluster4, 1, TAB, aid)
    assert len(census) == 6
    # 64 chunks + the metadata record, spread over every fragment, each on 2 of the pool
    assert sum(count for count, _ in census.values()) == 65
    assert all(count > 0 for count, _ in census.values()), census
    assert all(len(nodes) == 2 and set(nodes) <= set(pool) for _, nodes in census.values())
    # a plain mnesia:read (what ExZarr does) sees the first fragment only
    plain = cluster4.erl_eval(0, f"length(mnesia:dirty_select({TAB}, [{{'_', [], [true]}}])).")
    assert int(plain) == census[TAB][0] < 65
    # read back every way: one transaction, dirty and spread, and through another node
    assert np.array_equal(await arr.get_slice(), data)
    assert np.array_equal(await arr.get_slice(consistent=False), data)
    other = await pz.open(array_id=aid, node=pool[2], cookie=cluster4.cookie, table_name=TAB)
    assert np.array_equal(await other.get_slice((8, 8), (30, 50)), data[8:30, 8:50])
    # listing one array merges the fragments: every chunk key, once
    store = pz.MnesiaStore(array_id=aid, node=pool[1], cookie=cluster4.cookie, table_name=TAB)
    keys = sorted([k async for k in store.list()])
    assert len(keys) == 65 and keys[-1] == "zarr.json"
    z = zarr.open_array(store=store, mode="r")
    assert np.array_equal(z[5:9, 60:64], data[5:9, 60:64])
    # a partial write, read-modify-write of chunks in several fragments, all or nothing
    await arr.set_slice(np.full((10, 10), -1, dtype="int32"), start=(3, 3), stop=(13, 13))
    data[3:13, 3:13] = -1
    assert np.array_equal(await other.get_slice(), data)


async def test_setup_options_and_existing_tables(cluster4: LocalCluster, node4: Node) -> None:
    pool = cluster4.nodes[:2]
    info = await ensure_table(node4, pool, "pz_frag_setup", fragments=3, ram_copies=True)
    assert (info.fragments, info.storage, info.pool) == (3, "ram_copies", tuple(sorted(pool)))
    again = await ensure_table(node4, pool, "pz_frag_setup")  # recognised, kept
    assert again.fragments == 3 and not again.created
    props = cluster4.erl_eval(0, "mnesia:table_info(pz_frag_setup, frag_properties).")
    assert "{n_fragments,3}" in props.replace(" ", "")
    await ensure_table(node4, pool, "pz_plain_setup")
    with pytest.raises(IncompatibleTable, match="not fragmented"):
        await ensure_table(node4, pool, "pz_plain_setup", fragments=2)
    with pytest.raises(IncompatibleTable, match="not fragmented"):
        await add_fragments(node4, pool[0], "pz_plain_setup")
    for bad in (0, -1, True, 1.5):  # refused before anything is sent
        with pytest.raises(ValueError, match="count must be a positive int"):
            await add_fragments(node4, pool[0], "pz_frag_setup", bad)  # type: ignore[arg-type]
    refused = cli(cluster4, "frag", pool[0], "--table", "pz_plain_setup", "--add", "1", code=1)
    assert "is not fragmented: nothing to add to" in refused.stderr
    shown = cli(cluster4, "frag", pool[0], "--table", "pz_plain_setup").stdout
    assert "pz_plain_setup is not fragmented" in shown
    plain = cluster4.erl_eval(0, "mnesia:table_info(pz_plain_setup, frag_properties).")
    assert plain == "[]"  # nothing changed on the cluster
    disc_only = await ensure_table(
        node4, pool, "pz_frag_dets", fragments=2, frag_copies=2, disc_only_copies=True
    )
    assert (disc_only.storage, disc_only.type) == ("disc_only_copies", "set")
    kinds = cluster4.erl_eval(1, "mnesia:table_info(pz_frag_dets_frag2, storage_type).")
    assert kinds == "disc_only_copies"
    client = MnesiaClient(node4, "pz_frag_dets", pool[0])
    await client.write_many([((b"d", i), bytes([i]) * 100) for i in range(20)])
    assert await client.read_many([(b"d", i) for i in range(20)]) == [
        bytes([i]) * 100 for i in range(20)
    ]
    # durable commits force the log of every node of the pool, through mnesia_frag too
    durable = MnesiaClient(node4, "pz_frag_setup", pool[1], durable=True)
    await durable.write_many([((b"u", i), b"v") for i in range(10)])
    assert await durable.insert_if_absent((b"u", 99), b"w")
    assert not await durable.insert_if_absent((b"u", 99), b"z")
    assert await durable.compare_and_set((b"u", 99), b"w", None)
    assert sorted(await durable.keys_under(b"u")) == list(range(10))


async def test_concurrent_partial_writes_lose_no_update(
    cluster4: LocalCluster, node4: Node
) -> None:
    """set_slice's check that merged chunks are unchanged works across fragments: two
    writers of different cells of the same chunks, each retried on conflict."""
    pool = cluster4.nodes[:3]
    opts: dict[str, Any] = {"cookie": cluster4.cookie, "table_name": TAB}
    aid = f"race-{uuid.uuid4().hex[:6]}"
    a = await pz.create(aid, (8, 8), (4, 4), "int32", node=pool[0], nodes=pool, fragments=6, **opts)
    b = await pz.open(aid, node=pool[1], **opts)

    async def fill(arr: pz.MnesiaArray, row: int) -> None:
        for col in range(8):
            await arr.set_slice(
                np.array([[row * 10 + col]], "int32"), (row, col), (row + 1, col + 1)
            )

    await asyncio.gather(fill(a, 0), fill(b, 1), fill(a, 2), fill(b, 3))
    got = await a.get_slice()
    assert [list(got[r]) for r in range(4)] == [[r * 10 + c for c in range(8)] for r in range(4)]


async def listed(store: pz.MnesiaStore) -> list[str]:
    return sorted([key async for key in store.list()])


HOLD_SCHEMA = """
Result = mnesia:transaction(fun() ->
    mnesia:lock({table, schema}, write),
    Py ! {locked, self()},
    receive commit -> ok after 30000 -> ok end
end),
Py ! Result.
"""


@pytest.mark.parametrize(
    "call", ["set_slice", "get_slice", "get_slice_dirty", "zarr_get_missing", "zarr_list"]
)
async def test_calls_wait_for_a_split_in_progress(
    cluster4: LocalCluster, node4: Node, call: str
) -> None:
    """``add_frag`` holds a write lock on the schema table on every node until that node has
    applied the split; ``mnesia_frag`` picks a key's fragment before it locks the record. A
    transaction that did not wait for the split wrote to the fragment the record was moving
    out of (the write acknowledged and lost, a second copy left behind: seen under live
    growth). Each transaction, the check that ends a spread read, and the check a read
    through zarr that found nothing or a listing makes (a record may have been looked for
    where it had just left), must wait for it."""
    pool = cluster4.nodes[:3]
    table = "pz_frag_hold"
    aid = f"hold-{uuid.uuid4().hex[:8]}"
    opts: dict[str, Any] = {"cookie": cluster4.cookie, "table_name": table}
    arr = await pz.create(
        array_id=aid,
        shape=(320,),  # the last chunk is never written
        chunks=(64,),
        dtype="float64",
        node=pool[0],
        nodes=pool,
        fragments=2,
        **opts,
    )
    await arr.set_slice(np.full(256, 1.0), start=(0,), stop=(256,))
    await arr.get_slice(consistent=False)  # the layout is known
    py = node4.process()
    await spawn_eval(node4, pool[0], HOLD_SCHEMA, Py=py.pid)
    locked, holder = await py.receive(10)
    assert locked == Atom("locked")
    calls = {
        "set_slice": lambda: arr.set_slice(np.full(256, 2.0), start=(0,), stop=(256,)),
        "get_slice": lambda: arr.get_slice(start=(0,), stop=(256,)),
        "get_slice_dirty": lambda: arr.get_slice(start=(0,), stop=(256,), consistent=False),
        "zarr_get_missing": lambda: arr.store.get("c/4", default_buffer_prototype()),
        "zarr_list": lambda: listed(arr.store),
    }
    try:
        if call == "zarr_get_missing":  # a chunk found needs no second look: read at once
            present = arr.store.get("c/0", default_buffer_prototype())
            assert await asyncio.wait_for(present, 10) is not None
        before = await restarts(node4, pool[0])
        task: asyncio.Future[Any] = asyncio.ensure_future(calls[call]())
        await wait_for_lock_conflict(node4, pool[0], before, task)
        await asyncio.sleep(0.2)
        assert not task.done(), "the call did not wait for the schema lock"
    finally:  # the holder lets the schema go whatever happened (later tests need it)
        await py.send(holder, Atom("commit"))
    assert await py.receive(10) == (Atom("atomic"), Atom("ok"))
    got = await task
    if call == "set_slice":
        got = await arr.get_slice(start=(0,), stop=(256,))
        assert np.array_equal(got, np.full(256, 2.0))
    elif call == "zarr_get_missing":
        assert got is None
    elif call == "zarr_list":
        assert got == ["c/0", "c/1", "c/2", "c/3", "zarr.json"]
    else:
        assert np.array_equal(got, np.full(256, 1.0))


async def arange_array(
    c: LocalCluster, pool: list[str], table: str, aid: str, n: int
) -> pz.MnesiaArray:
    """``0.0 .. n - 1`` in an uncompressed array (a chunk's record is its 16 values' bytes)
    on ``table``, in 2 fragments over ``pool`` (kept as it is if it exists)."""
    arr = await pz.create(
        array_id=aid,
        shape=(n,),
        chunks=(16,),
        dtype="float64",
        compressors=None,
        node=pool[0],
        nodes=pool,
        fragments=2,
        cookie=c.cookie,
        table_name=table,
    )
    await arr.set_slice(np.arange(float(n)), start=(0,), stop=(n,))
    return arr


async def test_reads_wait_for_a_fragment_with_no_readable_copy_yet(
    cluster4: LocalCluster, node4: Node
) -> None:
    """A new fragment has, for a moment while fragments are added, no copy the connected
    node can read: ``mnesia_frag``'s dirty select aborts with ``{error, {node_not_running,
    nowhere}}`` (seen under live growth: a read through zarr failed with it), a dirty read
    or a transaction with ``{no_exists, Fragment}``. Each is retried as a fragment not
    there yet is; here the only copy's node restarts Mnesia meanwhile."""
    pool = cluster4.nodes[:2]
    table = "pz_frag_nowhere"
    await ensure_table(node4, pool, table, fragments=2)

    def fragment_of(keys: str) -> list[int]:
        """The fragment number of each key of the Erlang list ``keys``."""
        out = cluster4.erl_eval(
            0,
            f"{{_, _, _, M, S}} = mnesia:table_info({table}, frag_hash), "
            f"[M:key_to_frag_number(S, K) || K <- {keys}].",
        )
        return [int(n) for n in re.findall(r"\d+", out)]

    # an array whose root records are in the first fragment, and a chunk in the second: a
    # read of that chunk meets the second fragment first in a select
    aid = next(
        a
        for a in (f"nowhere-{uuid.uuid4().hex[:8]}" for _ in range(100))
        if fragment_of(f'[{{<<"{a}">>, metadata}}, {{<<"{a}">>, <<".zarray">>}}]') == [1, 1]
    )
    numbers = fragment_of(f'[{{<<"{aid}">>, {{chunk, {{I}}}}}} || I <- lists:seq(0, 15)]')
    index = numbers.index(2)
    opts: dict[str, Any] = {"cookie": cluster4.cookie, "table_name": table}
    await arange_array(cluster4, pool, table, aid, 256)
    census = fragment_census(cluster4, 0, table, aid)
    (holder,) = census[f"{table}_frag2"][1]  # its only copy
    down = cluster4.nodes.index(holder)
    up = next(n for n in pool if n != holder)
    reader = await pz.open(array_id=aid, node=up, **opts)
    keys = await listed(reader.store)
    assert len(keys) == 17
    cluster4.erl_eval(down, "stopped = mnesia:stop().")
    try:
        where = f"mnesia:table_info({table}_frag2, where_to_read)."
        for _ in range(100):  # until the reading node knows no copy is left to read
            if cluster4.erl_eval(cluster4.nodes.index(up), where) == "nowhere":
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"{up} still reads {table}_frag2 somewhere")
        tasks = [
            asyncio.ensure_future(listed(reader.store)),
            asyncio.ensure_future(reader.store.get(f"c/{index}", default_buffer_prototype())),
        ]
        await asyncio.sleep(0.5)
        for task in tasks:
            assert not task.done(), task.exception() if task.done() else None
    finally:
        started = (
            "ok = mnesia:start(), mnesia:wait_for_tables(mnesia:system_info(local_tables), 20000)."
        )
        assert cluster4.erl_eval(down, started) == "ok"
    got_keys, chunk = await asyncio.wait_for(asyncio.gather(*tasks), 20)
    assert got_keys == keys
    assert isinstance(chunk, Buffer)
    assert np.array_equal(np.frombuffer(chunk.to_bytes(), "<f8"), np.arange(16.0) + 16 * index)


async def test_a_chunk_a_dirty_read_missed_is_read_again_locked_and_cut(
    cluster4: LocalCluster, node4: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a dirty read through zarr missed on a fragmented table (a record moving in a
    split, looked for where it had just left) is read again in a transaction, whole, and cut
    here as the request wants. The miss is made here: the dirty answers lose their chunks."""
    pool = cluster4.nodes[:2]
    aid = f"cut-{uuid.uuid4().hex[:8]}"
    arr = await arange_array(cluster4, pool, "pz_frag_cut", aid, 64)
    client = await arr.store.client()
    real = client.dirty_calls
    kinds: list[bool] = []

    async def missing_when_dirty(calls: Any, what: str, *, locked: bool = False) -> Any:
        found = await real(calls, what, locked=locked)
        kinds.append(locked)
        return found if locked else [*found[:2], *([] for _ in found[2:])]

    monkeypatch.setattr(client, "dirty_calls", missing_when_dirty)
    chunk = np.arange(16.0, 32.0).astype("<f8").tobytes()
    proto = default_buffer_prototype()
    whole = await arr.store.get("c/1", proto)
    part = await arr.store.get("c/1", proto, RangeByteRequest(8, 24))
    tail = await arr.store.get("c/1", proto, SuffixByteRequest(16))
    assert whole is not None and whole.to_bytes() == chunk
    assert part is not None and part.to_bytes() == chunk[8:24]
    assert tail is not None and tail.to_bytes() == chunk[-16:]
    assert await arr.store.getsize("c/1") == len(chunk)
    assert kinds == [False, True] * 4  # each read: missed dirty, found locked


async def test_second_looks_asked_at_once_share_one_transaction(
    cluster4: LocalCluster, node4: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zarr read's missing chunks each ask for a second look at once: those asked for on
    one loop while none runs share one transaction, each getting its own results; a bad
    one fails alone; a runner cancelled leaves no look waiting for ever."""
    pool = cluster4.nodes[:2]
    client = MnesiaClient(node4, "pz_frag_looks", pool[0])
    await ensure_table(node4, pool, "pz_frag_looks", fragments=4)
    await client.write_many([((b"l", i), bytes([i]) * 8) for i in range(0, 12, 2)])
    kinds: list[Atom] = []
    real = client._activity

    async def counted(kind: Atom, *args: Any, **kw: Any) -> Any:
        kinds.append(kind)
        return await real(kind, *args, **kw)

    monkeypatch.setattr(client, "_activity", counted)
    looks = [
        [client.read_call((b"l", i)), client.read_call((b"l", i + 1))] for i in range(0, 12, 2)
    ]
    got = await asyncio.gather(*(client.dirty_calls(c, "read", locked=True) for c in looks))
    assert kinds == [Atom("sync_transaction")]
    for i, (present, absent) in zip(range(0, 12, 2), got, strict=True):
        assert [r[2] for r in present] == [bytes([i]) * 8] and absent == []
    # a bad call among them fails alone: the transaction they shared is made again, one
    # look at a time
    bad = [(ExportFun("mnesia", "read", 2), [Atom("pz_no_such_table"), 1])]
    outcomes: list[Any] = await asyncio.gather(
        client.dirty_calls(looks[0], "read", locked=True),
        client.dirty_calls(bad, "read", locked=True),
        return_exceptions=True,
    )
    good, failed = outcomes
    assert isinstance(failed, PyrlangZarrError), failed
    assert isinstance(good, list) and [r[2] for r in good[0]] == [bytes([0]) * 8]
    # a runner cancelled before it began (a loop closing) cancels its looks, and the next
    # look on the loop runs
    waiting = asyncio.ensure_future(client.dirty_calls(looks[1], "read", locked=True))
    await asyncio.sleep(0)  # the look is queued and its runner made, not yet started
    client._second_look_runs[asyncio.get_running_loop()].cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 10)
    assert len(await asyncio.wait_for(client.dirty_calls(looks[2], "read", locked=True), 10)) == 2


async def test_grow_live_while_reading_and_writing(cluster4: LocalCluster, node4: Node) -> None:
    pool = cluster4.nodes[:3]
    table = "pz_frag_grow"
    aid = "grow"
    arr = await pz.create(
        array_id=aid,
        shape=(4096,),
        chunks=(64,),
        dtype="float64",
        node=pool[0],
        cookie=cluster4.cookie,
        nodes=pool,
        fragments=2,
        table_name=table,
    )
    # no value is the fill value: every chunk has its record from here on (65 with the root)
    await arr.set_slice(np.full(4096, -1.0), start=(0,), stop=(4096,))
    stop = asyncio.Event()
    written: dict[int, float] = {}
    errors: list[str] = []
    reads = 0

    async def writer() -> None:
        i = 0
        while not stop.is_set():
            k = i % 64
            try:
                await arr.set_slice(np.full(64, i + 1.0), start=(k * 64,), stop=(k * 64 + 64,))
            except PyrlangZarrError as exc:
                errors.append(f"{exc!r} <- {exc.__context__!r}")
            else:
                written[k] = i + 1.0
            i += 1

    async def reading(label: str, read: Callable[[], Awaitable[Any]]) -> None:
        """Reads until the end; each chunk is whole, and none went missing or older than a
        write acknowledged before the read while records moved."""
        nonlocal reads
        while not stop.is_set():
            before = dict(written)
            try:
                got = np.asarray(await read())
            except PyrlangZarrError as exc:
                errors.append(f"{label}: {exc!r} <- {exc.__context__!r}")
            else:
                for k, v in before.items():
                    chunk = got[k * 64 : k * 64 + 64]
                    assert np.all(chunk == chunk[0]) and chunk[0] >= v, (label, k, v, chunk[:3])
                reads += 1

    # the same checks through zarr itself (one dirty read per chunk), by the node the
    # writes go through: a write it acknowledged is never read older there
    za = await zarr.api.asynchronous.open_array(store=arr.store, mode="r")
    readers = {
        "get_slice": lambda: arr.get_slice(consistent=False),
        "zarr": lambda: za.getitem(slice(None)),
    }
    tasks = [asyncio.create_task(writer())]
    tasks += [asyncio.create_task(reading(k, read)) for k, read in readers.items()]
    await asyncio.sleep(0.3)
    # a fourth node joins the pool, and fragments are added (the new ones go to it first)
    pool_now = await add_pool_nodes(node4, pool[0], table, [cluster4.nodes[3]])
    assert cluster4.nodes[3] in pool_now
    assert await add_fragments(node4, pool[0], table, 2) == 4
    await asyncio.sleep(0.2)
    # and one more from the command line, reads and writes still going on
    out = await asyncio.to_thread(cli, cluster4, "frag", pool[1], "--table", table, "--add", "1")
    assert f"{table}: 5 fragments" in out.stdout
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.gather(*tasks)
    assert errors == [] and reads > 0 and len(written) > 0
    census = fragment_census(cluster4, 3, table, aid)
    assert len(census) == 5 and sum(c for c, _ in census.values()) == 65
    assert any(cluster4.nodes[3] in nodes for _, nodes in census.values())
    got = await arr.get_slice()
    for k, v in written.items():
        assert np.all(got[k * 64 : k * 64 + 64] == v)
    props = await frag_properties(node4, pool[1], table)
    assert props["n_fragments"] == 5
    assert len(await fragment_names(node4, pool[1], table)) == 5
    # the command line shows the fragments as Mnesia has them, and ls counts them all
    shown = json.loads(cli(cluster4, "frag", pool[0], "--table", table, "--json").stdout)
    assert shown["pool"] == sorted(cluster4.nodes)
    assert {f["name"]: f["records"] for f in shown["fragments"]} == {
        name: count for name, (count, _) in census.items()
    }
    listed = json.loads(cli(cluster4, "ls", pool[0], "--table", table, "--json").stdout)
    assert [(a["array_id"], a["records"]) for a in listed] == [(aid, 65)]


async def test_spread_read_goes_to_the_fragment_owners(cluster4: LocalCluster, node4: Node) -> None:
    pool = cluster4.nodes[:3]
    table = "pz_frag_spread"
    await ensure_table(node4, pool, table, fragments=3)  # one fragment per node
    client = MnesiaClient(node4, table, pool[0])
    keys = [(b"s", i) for i in range(48)]
    await client.write_many([(k, b"x" * 1000) for k in keys])
    owners = (await client.frag_layout()).readers
    assert sorted(len(r) for r in owners) == [1, 1, 1] and len({r[0] for r in owners}) == 3
    read: list[tuple[str, str, int]] = [("mnesia", "dirty_read", 1)]
    counts = [CallCounts(node4, n, read) for n in pool]
    for cc in counts:
        await cc.__aenter__()
    try:
        assert await client.read_many(keys) == [b"x" * 1000] * 48
        per_node = [(await cc.counts())[read[0]] for cc in counts]
    finally:
        for cc in counts:
            await cc.__aexit__(None, None, None)
    # every owner served its own keys: the reads did not all go through the coordinator
    assert all(n > 0 for n in per_node), per_node
    assert sum(per_node) == 48


@pytest.mark.slow
@pytest.mark.parametrize("victim", [0, 2], ids=["coordinator", "another-holder"])
async def test_kill_a_host_during_writes_with_two_copies(victim: int) -> None:
    with LocalCluster(n=3, ticktime=4) as c:
        arr = await pz.create(
            array_id="kill-frag",
            shape=(64 * 16,),
            chunks=(16,),
            node=c.nodes[0],
            cookie=c.cookie,
            nodes=c.nodes,
            fragments=4,
            frag_copies=2,
            table_name=TAB,
        )
        acked: dict[int, float] = {}
        refused: list[int] = []
        for i in range(64):
            if i == 20:
                c.kill(victim)  # holds a copy of some fragments (and may coordinate)
            try:
                await arr.set_slice(np.full(16, i + 1.0), start=(i * 16,), stop=(i * 16 + 16,))
            except PyrlangZarrError:
                refused.append(i)
            else:
                acked[i] = i + 1.0
        data = await arr.get_slice()
        spread = await arr.get_slice(consistent=False)
        lost = [i for i, v in acked.items() if not np.all(data[i * 16 : i * 16 + 16] == v)]
        lost_spread = [i for i, v in acked.items() if not np.all(spread[i * 16 : i * 16 + 16] == v)]
        # what Erlang holds on the survivors, fragment by fragment
        census = fragment_census(c, 1, TAB, "kill-frag")
        who = "the connected node" if victim == 0 else "another fragment holder"
        REPORT.append(
            FaultRun(
                "3 nodes, 4 fragments x 2 copies",
                f"kill -9 of {who}",
                64,
                len(acked),
                len(refused),
                len(lost),
                f"{sum(n for n, _ in census.values())} records on the survivors",
            )
        )
        assert refused == [] and lost == [] and lost_spread == []
        assert sum(n for n, _ in census.values()) == 65
        client = await arr.store.client()
        running = await client.node.rpc(
            c.nodes[1], "mnesia", "system_info", [Atom("running_db_nodes")]
        )
        assert Atom(c.nodes[victim]) not in running


def test_url_options_reach_the_store_settings() -> None:
    from pyrlang_zarr.url import MnesiaFileSystem, parse_url

    url = "mnesia://a@h/t/x?nodes=a@h,b@h&fragments=8&frag_copies=2&disc_only_copies=true"
    store = parse_url(url).store()
    assert (store.settings.fragments, store.settings.frag_copies) == (8, 2)
    assert store.settings.disc_only_copies
    with pytest.raises(ValueError, match="fragments='many'"):
        MnesiaFileSystem(fragments="many")
    with pytest.raises(ValueError, match="frag_copies=3 needs at least 3 nodes"):
        parse_url("mnesia://a@h/t/x?nodes=a@h&fragments=2&frag_copies=3").store()


async def test_transaction_and_consistent_read_across_a_fragmented_and_a_plain_table(
    cluster4: LocalCluster, node4: Node
) -> None:
    """A transaction over an array of a fragmented table and one of a plain table writes
    each chunk into the fragment Mnesia's hash names (read back in Erlang through
    ``mnesia_frag``), all or nothing; ``get_slices`` reads both through ``mnesia_frag``."""
    pool = cluster4.nodes[:3]
    common: dict[str, Any] = {"node": pool[0], "cookie": cluster4.cookie, "nodes": pool}
    frag = await pz.create(
        f"txf-{uuid.uuid4().hex[:6]}", (64,), (4,), "int32", fragments=4, table_name=TAB, **common
    )
    plain = await pz.create(
        f"txp-{uuid.uuid4().hex[:6]}", (64,), (4,), "int32", table_name="pz_plain", **common
    )
    data = np.arange(64, dtype="int32")
    async with pz.transaction() as tx:
        await tx.set_slice(frag, data)
        await tx.set_slice(plain, -data)
    census = fragment_census(cluster4, 1, TAB, frag.array_id)
    assert sum(count for count, _ in census.values()) == 17  # 16 chunks + metadata
    assert sum(1 for count, _ in census.values() if count) > 1, census
    # every chunk is where mnesia_frag looks for it
    found = cluster4.erl_eval(
        2,
        f"length([K || K <- lists:seq(0, 15), mnesia:activity(async_dirty, fun mnesia:read/2, "
        f'[{TAB}, {{<<"{frag.array_id}">>, {{chunk, {{K}}}}}}], mnesia_frag) =/= []]).',
    )
    assert int(found) == 16
    a, b = await pz.get_slices([(frag, None, None), (plain, None, None)])
    assert np.array_equal(a, data) and np.array_equal(b, -data)
    with pytest.raises(RuntimeError):
        async with pz.transaction() as tx:
            await tx.set_slice(frag, np.zeros(64, dtype="int32"))
            await tx.set_slice(plain, np.zeros(64, dtype="int32"))
            raise RuntimeError("abandon")
    a, b = await pz.get_slices([(frag, None, None), (plain, None, None)])
    assert np.array_equal(a, data) and np.array_equal(b, -data)


async def test_watch_sees_every_fragment_and_fragments_added_live(
    cluster4: LocalCluster, node4: Node
) -> None:
    """A watch on a fragmented array reports writes whatever fragment holds the chunk, and
    after a fragment is added it reports a resync, then writes into the new fragment."""
    pool = cluster4.nodes[:3]
    table = f"pz_fragw_{uuid.uuid4().hex[:4]}"
    arr = await pz.create(
        "watched",
        (256,),
        (4,),
        "int32",
        node=pool[0],
        cookie=cluster4.cookie,
        nodes=pool,
        fragments=3,
        table_name=table,
    )

    async def drain(watch: Any, want: int) -> list[Any]:
        events: list[Any] = []
        while len([e for e in events if e.kind == "write"]) < want:
            events.append(await watch.next(timeout=30))
        return events

    async with arr.watch() as watch:
        await arr.set_slice(np.ones(256, dtype="int32"))  # 64 chunks in 3 fragments
        events = await drain(watch, 64)
        assert {e.chunk for e in events if e.kind == "write"} == {(i,) for i in range(64)}
        await add_fragments(node4, pool[0], table, 2)
        resync = await watch.next(timeout=30)
        while resync.kind != "resync":  # moved records may first show as deletes
            assert resync.kind == "delete", resync
            resync = await watch.next(timeout=30)
        assert resync.region == ((0,), (256,))
        census = fragment_census(cluster4, 1, table, "watched")
        assert len(census) == 5 and all(n for n, _ in census.values()), census
        await arr.set_slice(np.full(256, 2, dtype="int32"))
        events = await drain(watch, 64)
        assert {e.chunk for e in events if e.kind == "write"} == {(i,) for i in range(64)}
    # closed: the forwarder and its relays are gone, no fragment has a subscriber anywhere
    subscribers = (
        "lists:append([mnesia:table_info(F, subscribers) || F <- mnesia:activity(async_dirty, "
        f"fun mnesia:table_info/2, [{table}, frag_names], mnesia_frag)])."
    )
    for _ in range(50):
        if all(cluster4.erl_eval(i, subscribers).strip() == "[]" for i in range(3)):
            break
        await asyncio.sleep(0.1)
    assert [cluster4.erl_eval(i, subscribers).strip() for i in range(3)] == ["[]"] * 3


async def test_durable_commits_force_the_log_of_every_node_holding_the_records(
    cluster4: LocalCluster, node4: Node
) -> None:
    """``durable=True`` syncs the log of every node of a fragmented table's pool (also for
    a transaction across arrays), and of a ``disc_only_copies`` table's replicas: counted
    on each node."""
    pool = cluster4.nodes[:3]
    sync: tuple[str, str, int] = ("mnesia", "sync_log", 0)
    frag = await pz.create(
        f"dur-{uuid.uuid4().hex[:6]}",
        (64,),
        (4,),
        "int32",
        node=pool[0],
        cookie=cluster4.cookie,
        nodes=pool,
        fragments=3,
        table_name="pz_frag_durable",
        durable=True,
    )
    dets = MnesiaClient(node4, "pz_dets_durable", pool[0], durable=True)
    await ensure_table(node4, pool[:2], "pz_dets_durable", disc_only_copies=True)
    counters = [CallCounts(node4, peer, [sync]) for peer in pool]
    for counter in counters:
        await counter.__aenter__()
    try:
        async with pz.transaction() as tx:
            await tx.set_slice(frag, np.arange(64, dtype="int32"))
        across = [(await c.counts())[sync] for c in counters]
        await dets.write((b"k", 1), b"v")
        on_dets = [(await c.counts())[sync] - n for c, n in zip(counters, across, strict=True)]
    finally:
        for counter in counters:
            await counter.__aexit__()
    assert across == [1, 1, 1]  # every node of the pool, not only the first fragment's
    assert on_dets == [1, 1, 0]  # the two dets replicas


async def test_a_watch_that_loses_the_only_copy_of_a_fragment_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With one copy per fragment, killing the node that holds one ends the watch's relay
    there; no other node can take it over, so the watch fails with a ``WatchError`` (after
    trying the replicas) instead of going on without that fragment's events."""
    from pyrlang_zarr import watch as watch_module
    from pyrlang_zarr.watch import WatchError

    monkeypatch.setattr(watch_module, "FAILOVER_TIMEOUT", 3.0)
    with LocalCluster(n=3, ticktime=4) as c:
        arr = await pz.create(
            "lost-frag",
            (48,),
            (4,),
            "int32",
            node=c.nodes[0],
            cookie=c.cookie,
            nodes=c.nodes,
            fragments=3,
            table_name="pz_frag_lost",
        )
        census = fragment_census(c, 0, "pz_frag_lost", "lost-frag")
        assert any(nodes == [c.nodes[2]] for _, nodes in census.values()), census
        async with arr.watch() as watch:
            await arr.set_slice(np.ones(48, dtype="int32"))
            seen: set[Any] = set()
            while len(seen) < 12:
                seen.add((await watch.next(timeout=30)).chunk)
            c.kill(2)
            with pytest.raises(WatchError, match="lost-frag"):
                for _ in range(100):  # a resync may come first
                    await watch.next(timeout=60)


async def test_a_client_that_cannot_tell_whether_the_table_is_fragmented_writes_nothing(
    cluster4: LocalCluster, node4: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If no replica answers whether the table is fragmented (timeouts, say), the call
    fails: it never guesses "plain table" and writes a record into the first fragment
    where mnesia_frag would not look for it."""
    from pyrlang_zarr.errors import RpcTimeout

    pool = cluster4.nodes[:3]
    await ensure_table(node4, pool, "pz_frag_unsure", fragments=4)
    client = MnesiaClient(node4, "pz_frag_unsure", pool[0], replicas=pool)

    async def timeout(peer: str) -> None:
        raise RpcTimeout(f"{peer} did not answer")

    monkeypatch.setattr(client, "_detect_on", timeout)
    with pytest.raises(RpcTimeout):
        await client.write((b"unsure", 1), b"v")
    count = cluster4.erl_eval(0, "mnesia:table_info(pz_frag_unsure, size).")
    assert count.strip() == "0"


async def test_ls_shows_a_fragmented_tables_whole_pool(cluster4: LocalCluster, node4: Node) -> None:
    """``ls``/``info`` describe a fragmented table by its node pool, not by the copies of
    its first fragment."""
    from pyrlang_zarr.admin import table_replicas

    pool = cluster4.nodes[:3]
    await ensure_table(node4, pool, "pz_frag_ls", fragments=3)
    described = await table_replicas(node4, pool[0], "pz_frag_ls")
    assert described.replicas == tuple(sorted(pool))
    assert described.running == tuple(sorted(pool))
