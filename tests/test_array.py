"""The ExZarr-style array API on a real 3-node cluster: the seed's example and its promises."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any, TypedDict

import numpy as np
import pytest
import zarr
import zarr.codecs
from zarr.abc.store import RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import cpu, default_buffer_prototype

import pyrlang_zarr as pz
from pyrlang_zarr import Atom, Node
from pyrlang_zarr.erldist.node_registry import shared_node
from pyrlang_zarr.errors import NotFound, TableNotFound, TransactionError
from pyrlang_zarr.mnesia.client import _CHECKED, Conflict, MnesiaClient
from pyrlang_zarr.overlay import Snapshot, WriteBuffer
from pyrlang_zarr.testing.cluster import LocalCluster
from tests.erl import restarts, spawn_eval, wait_for_lock_conflict

pytestmark = pytest.mark.erlang

TAB = "zarr_storage"


@pytest.fixture(scope="module")
def cluster3() -> Iterator[LocalCluster]:
    """Three real nodes of this module's own, for replicas on every node."""
    with LocalCluster(n=3) as c:
        yield c


class Where(TypedDict):
    """The node ``create`` and ``open`` connect to, and its cookie."""

    node: str
    cookie: str


def opts(c: LocalCluster, **kw: Any) -> dict[str, Any]:
    return {"node": c.nodes[0], "cookie": c.cookie, "nodes": c.nodes, **kw}


async def raw_records(c: LocalCluster, peer: str, array_id: str) -> list[Any]:
    node = shared_node(c.cookie)
    spec: list[Any] = [((Atom(TAB), (array_id.encode(), Atom("$1")), Atom("_")), [], [Atom("$_")])]
    return await node.rpc(peer, "mnesia", "dirty_select", [Atom(TAB), spec])


async def test_seed_example_round_trips_and_opens_on_another_replica(
    cluster3: LocalCluster,
) -> None:
    arr = await pz.create(
        array_id="experiment_001",
        shape=(1000, 1000),
        chunks=(100, 100),
        dtype="float64",
        overwrite=True,
        **opts(cluster3),
    )
    data = np.random.default_rng(1).random((1000, 1000))
    await arr.set_slice(data, start=(0, 0), stop=(1000, 1000))
    block = await arr.get_slice(start=(0, 0), stop=(100, 100))
    assert np.array_equal(block, data[:100, :100])
    assert np.array_equal(await arr.get_slice(start=(0, 0), stop=(1000, 1000)), data)
    other = await pz.open(array_id="experiment_001", node=cluster3.nodes[2], cookie=cluster3.cookie)
    assert other.shape == (1000, 1000) and other.chunks == (100, 100)
    assert other.dtype == np.float64
    assert np.array_equal(await other.get_slice(start=(0, 0), stop=(1000, 1000)), data)


async def test_records_follow_the_seed_schema_on_every_replica(cluster3: LocalCluster) -> None:
    aid = f"schema-{uuid.uuid4().hex[:8]}"
    arr = await pz.create(array_id=aid, shape=(20, 30), chunks=(10, 10), **opts(cluster3))
    await arr.set_slice(np.ones((20, 30)), start=(0, 0), stop=(20, 30))
    for peer in cluster3.nodes:
        records = await raw_records(cluster3, peer, aid)
        keys = {r[1][1] for r in records}  # ExZarr's forms: {Id, metadata}, {Id, {chunk, Idx}}
        assert keys == {Atom("metadata")} | {
            (Atom("chunk"), (i, j)) for i in range(2) for j in range(3)
        }
        for tab, (array_id, index), data in records:
            assert tab == Atom(TAB) and array_id == aid.encode() and isinstance(data, bytes)
            if index == Atom("metadata"):
                meta = json.loads(data)
                assert meta["shape"] == [20, 30] and meta["zarr_format"] == 3
            else:
                assert index[0] == Atom("chunk") and all(isinstance(i, int) for i in index[1])
    # and the same seen by Erlang code alone, on the last replica
    out = cluster3.erl_eval(
        2,
        f"[element(2, element(2, R)) || R <- ets:tab2list({TAB}), "
        f'element(1, element(2, R)) =:= <<"{aid}">>].',
    )
    assert "metadata" in out and "{1,2}" in out.replace(" ", "")


async def test_partial_writes_keep_neighbours(cluster3: LocalCluster) -> None:
    arr = await pz.create(
        array_id=f"part-{uuid.uuid4().hex[:8]}", shape=(10, 10), chunks=(4, 4), **opts(cluster3)
    )
    expected = np.zeros((10, 10))
    rng = np.random.default_rng(2)
    for _ in range(10):
        a = rng.integers(0, 9, 2)
        b = a + rng.integers(1, 4, 2)
        b = np.minimum(b, 10)
        block = rng.random(tuple(b - a))
        await arr.set_slice(block, start=tuple(a), stop=tuple(b))
        expected[a[0] : b[0], a[1] : b[1]] = block
    assert np.array_equal(await arr.get_slice(), expected)


async def test_set_slice_is_all_or_nothing(
    cluster3: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Make the commit fail after its chunk writes: none of them may land."""
    aid = f"atomic-{uuid.uuid4().hex[:8]}"
    arr = await pz.create(array_id=aid, shape=(40, 40), chunks=(10, 10), **opts(cluster3))
    await arr.set_slice(np.full((40, 40), 1.0), start=(0, 0), stop=(40, 40))
    before = await raw_records(cluster3, cluster3.nodes[1], aid)
    seen: list[int] = []

    async def commit_then_fail(self: MnesiaClient, reads: Any, ops: Any) -> None:
        """The real commit expression, plus one write to a missing table after all chunks."""
        seen.append(len(ops))
        text = _CHECKED.replace(
            "end, Ops);", "end, Ops), mnesia:write({pz_no_such_table, x, <<>>});"
        )
        assert text != _CHECKED
        terms = [(Atom("write"), op.key, op.data) for op in ops]
        bindings = {"Tab": self._tab, "Reads": [], "Ops": terms}
        self._unwrap(await self._eval(text, bindings, "test"), "test")

    monkeypatch.setattr(MnesiaClient, "checked_batch", commit_then_fail)
    with pytest.raises(TableNotFound):
        await arr.set_slice(np.full((40, 40), 2.0), start=(0, 0), stop=(40, 40))
    monkeypatch.undo()
    assert seen == [16]  # all 16 chunks were in the failed transaction
    after = await raw_records(cluster3, cluster3.nodes[1], aid)
    assert set(before) == set(after) and len(before) == len(after)
    assert np.array_equal(await arr.get_slice(), np.full((40, 40), 1.0))


async def test_concurrent_set_slices_lose_no_update(cluster3: LocalCluster) -> None:
    """Writers to disjoint halves of the same chunks: every write survives."""
    arr = await pz.create(
        array_id=f"conc-{uuid.uuid4().hex[:8]}", shape=(8, 8), chunks=(8, 8), **opts(cluster3)
    )
    writes = [((r, 0), (r + 1, 8), float(r + 1)) for r in range(8)]
    await asyncio.gather(
        *(arr.set_slice(np.full((1, 8), v), start=a, stop=b) for a, b, v in writes)
    )
    got = await arr.get_slice()
    assert np.array_equal(got, np.repeat(np.arange(1.0, 9.0)[:, None], 8, axis=1))


async def test_get_slice_never_sees_half_a_set_slice(
    cluster3: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, bool]] = []
    real = MnesiaClient.read_many

    async def spy(self: MnesiaClient, keys: Any, *, consistent: bool = False, **kw: Any) -> Any:
        calls.append((len(keys), consistent))
        return await real(self, keys, consistent=consistent, **kw)

    monkeypatch.setattr(MnesiaClient, "read_many", spy)
    arr = await pz.create(
        array_id=f"cons-{uuid.uuid4().hex[:8]}", shape=(4, 40), chunks=(4, 10), **opts(cluster3)
    )
    await arr.set_slice(np.zeros((4, 40)), start=(0, 0), stop=(4, 40))

    async def writer() -> None:
        for v in range(1, 15):
            await arr.set_slice(np.full((4, 40), float(v)), start=(0, 0), stop=(4, 40))

    async def reader() -> list[set[float]]:
        seen = []
        for _ in range(25):
            seen.append(set(np.unique(await arr.get_slice()).tolist()))
        return seen

    _, seen = await asyncio.gather(writer(), reader())
    assert all(len(values) == 1 for values in seen)  # one version at a time, never a mix
    assert len(set().union(*seen)) > 1  # and the reads did overlap the writes
    # get_slice reads the array's 2 root records and its 4 chunks at once
    slice_reads = [c for c in calls if c[0] == 6]
    assert len(slice_reads) == 25 and all(consistent for _, consistent in slice_reads)


async def test_get_slice_is_one_transaction_with_the_root(
    cluster3: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The root records the chunks were mapped with are read in the chunks' transaction:
    one round trip, and the root seen is the one those chunks were committed under."""
    arr = await pz.create(
        array_id=f"one-{uuid.uuid4().hex[:8]}", shape=(4, 40), chunks=(4, 10), **opts(cluster3)
    )
    data = np.arange(160.0).reshape(4, 40)
    await arr.set_slice(data, start=(0, 0), stop=(4, 40))
    await arr.get_slice()
    calls: list[tuple[str, str]] = []
    real = Node.rpc

    async def spy(self: Node, peer: str, module: str, function: str, *a: Any, **kw: Any) -> Any:
        calls.append((module, function))
        return await real(self, peer, module, function, *a, **kw)

    monkeypatch.setattr(Node, "rpc", spy)
    np.testing.assert_array_equal(await arr.get_slice(), data)
    assert calls == [("mnesia", "sync_transaction")]


# An Erlang transaction that writes Records and keeps their locks until told to commit.
WRITE_AND_HOLD = """
Result = mnesia:transaction(fun() ->
    [mnesia:write({zarr_storage, K, V}) || {K, V} <- Records],
    Py ! {locked, self()},
    receive commit -> ok end
end),
Py ! Result.
"""


@pytest.mark.parametrize("reader", ["get_slice", "read_many"])
async def test_consistent_read_waits_for_a_transaction_holding_its_chunks(
    cluster3: LocalCluster, reader: str
) -> None:
    """A server-side transaction has written new values into both chunks and holds their
    locks. ``get_slice`` (and ``read_many(consistent=True)`` under it) must wait for it and
    return both new values; a dirty read would return the old ones at once."""
    aid = f"hold-{uuid.uuid4().hex[:8]}"
    arr = await pz.create(
        array_id=aid, shape=(16,), chunks=(8,), compressors=None, **opts(cluster3)
    )  # no compressor: a chunk's record is its float64 values as they are
    await arr.set_slice(np.full(16, 1.0), start=(0,), stop=(16,))
    keys = [(aid.encode(), (Atom("chunk"), (i,))) for i in (0, 1)]  # ExZarr's chunk records
    new = np.full(8, 2.0).astype("<f8").tobytes()
    node = shared_node(cluster3.cookie)
    py = node.process()
    coordinator = cluster3.nodes[0]
    await spawn_eval(node, coordinator, WRITE_AND_HOLD, Records=[(k, new) for k in keys], Py=py.pid)
    locked, holder = await py.receive(10)
    assert locked == Atom("locked")
    before = await restarts(node, coordinator)
    client = await arr.store.client()
    read: asyncio.Future[Any] = asyncio.ensure_future(
        arr.get_slice() if reader == "get_slice" else client.read_many(keys, consistent=True)
    )
    await wait_for_lock_conflict(node, coordinator, before, read)
    await py.send(holder, Atom("commit"))
    assert await py.receive(10) == (Atom("atomic"), Atom("ok"))
    got = await read
    if reader == "get_slice":
        assert np.array_equal(got, np.full(16, 2.0))
    else:
        assert [bytes(x) for x in got] == [new, new]


async def test_zarr_v2_and_codecs(cluster3: LocalCluster) -> None:
    v2 = await pz.create(
        array_id=f"v2-{uuid.uuid4().hex[:8]}",
        shape=(30,),
        chunks=(7,),
        dtype="int16",
        zarr_format=2,
        **opts(cluster3),
    )
    await v2.set_slice(np.arange(30, dtype="int16"), start=(0,), stop=(30,))
    assert np.array_equal(await v2.get_slice(start=(3,), stop=(25,)), np.arange(3, 25))
    keys = sorted([k async for k in v2.store.list()])
    assert ".zarray" in keys and "0" in keys and "4" in keys
    gz = await pz.create(
        array_id=f"gz-{uuid.uuid4().hex[:8]}",
        shape=(64, 64),
        chunks=(16, 16),
        dtype="float32",
        compressors=[zarr.codecs.GzipCodec(level=3)],
        **opts(cluster3),
    )
    data = np.linspace(0, 1, 64 * 64, dtype="float32").reshape(64, 64)
    await gz.set_slice(data, start=(0, 0), stop=(64, 64))
    assert np.array_equal(await gz.get_slice(), data)
    sharded = await pz.create(
        array_id=f"sh-{uuid.uuid4().hex[:8]}",
        shape=(64, 64),
        chunks=(8, 8),
        shards=(32, 32),
        dtype="uint8",
        **opts(cluster3),
    )
    img = (np.arange(64 * 64) % 251).astype("uint8").reshape(64, 64)
    await sharded.set_slice(img, start=(0, 0), stop=(64, 64))
    await sharded.set_slice(np.zeros((5, 5), "uint8"), start=(30, 30), stop=(35, 35))
    img[30:35, 30:35] = 0
    assert np.array_equal(await sharded.get_slice(start=(20, 20), stop=(50, 50)), img[20:50, 20:50])
    # plain zarr on the same store reads through byte ranges of the shards
    z = zarr.open_array(
        pz.MnesiaStore(sharded.array_id, node=cluster3.nodes[1], cookie=cluster3.cookie), mode="r"
    )
    assert np.array_equal(z[:], img)


async def test_bad_inputs_raise_before_anything_is_written(cluster3: LocalCluster) -> None:
    aid = f"bad-{uuid.uuid4().hex[:8]}"
    arr = await pz.create(array_id=aid, shape=(10, 10), chunks=(5, 5), **opts(cluster3))
    await arr.set_slice(np.ones((10, 10)), start=(0, 0), stop=(10, 10))
    before = set(await raw_records(cluster3, cluster3.nodes[0], aid))
    cases: list[tuple[type[Exception], Any, Any, Any]] = [
        (IndexError, np.ones((5, 11)), (5, 0), (10, 11)),  # stop beyond shape
        (ValueError, np.ones((0, 0)), (6, 6), (5, 5)),  # start after stop
        (ValueError, np.ones(10), (0,), (10,)),  # wrong number of dimensions
        (ValueError, np.ones((3, 3)), (0, 0), (2, 2)),  # data shape does not fit
        (TypeError, np.full((2, 2), 1 + 2j), (0, 0), (2, 2)),  # complex into float64
        (TypeError, np.array([["a", "b"], ["c", "d"]]), (0, 0), (2, 2)),  # strings
        (IndexError, np.ones((2, 2)), (-1, 0), (1, 2)),  # negative index
        (TypeError, np.ones((2, 2)), (0.5, 0), (2, 2)),  # not an integer
    ]
    for error, data, start, stop in cases:
        with pytest.raises(error):
            await arr.set_slice(data, start=start, stop=stop)
    with pytest.raises(IndexError):
        await arr.get_slice(start=(0, 0), stop=(11, 10))
    assert set(await raw_records(cluster3, cluster3.nodes[0], aid)) == before


async def test_bad_create_and_open_arguments(cluster3: LocalCluster) -> None:
    base: Where = {"node": cluster3.nodes[0], "cookie": cluster3.cookie}
    with pytest.raises(ValueError, match="array_id"):
        await pz.create(array_id="", shape=(2,), chunks=(1,), **base)
    with pytest.raises(TypeError, match="array_id"):
        await pz.create(array_id=7, shape=(2,), chunks=(1,), **base)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dimensions"):
        await pz.create(array_id="x", shape=(2, 2), chunks=(1,), **base)
    with pytest.raises(ValueError, match="positive"):
        await pz.create(array_id="x", shape=(2,), chunks=(0,), **base)
    with pytest.raises(TypeError, match="dtype"):
        await pz.create(array_id="x", shape=(2,), chunks=(1,), dtype="notatype", **base)
    with pytest.raises(NotFound, match="not_found"):
        await pz.open(array_id=f"missing-{uuid.uuid4().hex}", **base)
    with pytest.raises(TableNotFound, match="table_not_found"):
        await pz.open(array_id="x", table_name="pz_no_such_table", **base)
    nothing = await raw_records(cluster3, cluster3.nodes[0], "x")
    assert nothing == []


async def test_ram_copies_and_own_table(cluster3: LocalCluster) -> None:
    arr = await pz.create(
        array_id="ram-array",
        shape=(4,),
        chunks=(2,),
        dtype="u1",
        ram_copies=True,
        table_name="pz_ram_arrays",
        overwrite=True,
        **opts(cluster3),
    )
    await arr.set_slice(np.array([1, 2, 3, 4], "u1"), start=(0,), stop=(4,))
    node = shared_node(cluster3.cookie)
    ram = await node.rpc(
        cluster3.nodes[1], "mnesia", "table_info", [Atom("pz_ram_arrays"), Atom("ram_copies")]
    )
    assert sorted(map(str, ram)) == sorted(cluster3.nodes)
    recs = await node.rpc(
        cluster3.nodes[1],
        "mnesia",
        "dirty_read",
        [Atom("pz_ram_arrays"), (b"ram-array", (Atom("chunk"), (1,)))],
    )
    assert recs and recs[0][0] == Atom("pz_ram_arrays")  # record name = table name
    again = await pz.open(
        array_id="ram-array",
        table_name="pz_ram_arrays",
        node=cluster3.nodes[2],
        cookie=cluster3.cookie,
    )
    assert np.array_equal(await again.get_slice(), [1, 2, 3, 4])


async def test_read_only_open_refuses_writes(cluster3: LocalCluster) -> None:
    aid = f"ro-{uuid.uuid4().hex[:8]}"
    await pz.create(array_id=aid, shape=(2,), chunks=(2,), **opts(cluster3))
    ro = await pz.open(array_id=aid, node=cluster3.nodes[0], cookie=cluster3.cookie, read_only=True)
    with pytest.raises(ValueError, match="read-only"):
        await ro.set_slice(np.ones(2), start=(0,), stop=(2,))


async def test_conflicts_exhausted_is_a_transaction_error(
    cluster3: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    arr = await pz.create(
        array_id=f"cf-{uuid.uuid4().hex[:8]}", shape=(4,), chunks=(4,), **opts(cluster3)
    )

    async def always_conflict(self: Any, reads: Any, ops: Any) -> None:
        raise Conflict([b"k"])

    monkeypatch.setattr(MnesiaClient, "checked_batch", always_conflict)
    with pytest.raises(TransactionError, match="conflicting"):
        await arr.set_slice(np.ones(2), start=(0,), stop=(2,))


async def test_zero_dimensional_and_empty_arrays(cluster3: LocalCluster) -> None:
    scalar = await pz.create(
        array_id=f"scalar-{uuid.uuid4().hex[:6]}",
        shape=(),
        chunks=(),
        dtype="int64",
        **opts(cluster3),
    )
    await scalar.set_slice(np.array(42), start=(), stop=())
    assert await scalar.get_slice(start=(), stop=()) == 42
    assert sorted([k async for k in scalar.store.list()]) == ["c", "zarr.json"]
    records = await raw_records(cluster3, cluster3.nodes[1], scalar.array_id)
    # the 0-d chunk is {Id, {chunk, {}}}
    assert {r[1][1] for r in records} == {Atom("metadata"), (Atom("chunk"), ())}
    empty = await pz.create(
        array_id=f"empty-{uuid.uuid4().hex[:6]}", shape=(0, 5), chunks=(2, 2), **opts(cluster3)
    )
    assert (await empty.get_slice()).shape == (0, 5)
    await empty.set_slice(np.zeros((0, 5)), start=(0, 0), stop=(0, 5))  # nothing to write


@pytest.mark.parametrize("zarr_format", [2, 3])
async def test_nan_fill_value(cluster3: LocalCluster, zarr_format: int) -> None:
    """A NaN fill value is the same metadata after a round trip through the records (it once
    made ``create`` report a concurrent re-creation, comparing NaN with NaN)."""
    arr = await pz.create(
        array_id=f"nan-{uuid.uuid4().hex[:6]}",
        shape=(4,),
        chunks=(2,),
        dtype="float64",
        fill_value=float("nan"),
        zarr_format=zarr_format,
        **opts(cluster3),
    )
    await arr.set_slice(np.array([1.0, 2.0]), start=(0,), stop=(2,))
    got = await arr.get_slice()
    np.testing.assert_array_equal(got, [1.0, 2.0, np.nan, np.nan])
    reopened = await pz.open(array_id=arr.array_id, **opts(cluster3))
    np.testing.assert_array_equal(await reopened.get_slice(), got)


async def test_slice_views_keep_writes_until_the_checked_commit(cluster3: LocalCluster) -> None:
    arr = await pz.create(
        array_id=f"views-{uuid.uuid4().hex[:6]}", shape=(4,), chunks=(2,), **opts(cluster3)
    )
    store, proto = arr.store, default_buffer_prototype()
    await store.set("c/0", cpu.Buffer.from_bytes(b"old0"))
    await store.set("c/1", cpu.Buffer.from_bytes(b"old1"))
    client = await store.client()
    buffer = WriteBuffer(store, client)
    await buffer.set("c/0", cpu.Buffer.from_bytes(b"new0"))
    await buffer.delete("c/1")
    got = await buffer.get("c/0", proto, RangeByteRequest(1, 3))
    assert got is not None and got.to_bytes() == b"ew"  # its own writes, not sent yet
    assert not await buffer.exists("c/1")
    old = await store.get("c/0", proto)
    assert old is not None and old.to_bytes() == b"old0"
    with pytest.raises(NotImplementedError, match="list"):
        buffer.list()
    await buffer.commit()
    assert sorted([k async for k in store.list()]) == ["c/0", "zarr.json"]
    # a chunk read by the buffer and changed before its commit: nothing is written
    stale = WriteBuffer(store, client)
    assert await stale.get("c/0", proto) is not None
    await stale.set("c/0", cpu.Buffer.from_bytes(b"lost"))
    await stale.set("c/1", cpu.Buffer.from_bytes(b"lost"))
    await store.set("c/0", cpu.Buffer.from_bytes(b"meanwhile"))
    with pytest.raises(Conflict):
        await stale.commit()
    assert sorted([k async for k in store.list()]) == ["c/0", "zarr.json"]
    # a snapshot serves what one read saw, and writes nothing
    snapshot = await Snapshot.read(store, client, ["c/0", "c/1"])
    await store.set("c/0", cpu.Buffer.from_bytes(b"later"))
    got = await snapshot.get("c/0", proto, SuffixByteRequest(5))
    assert got is not None and got.to_bytes() == b"while"
    assert not await snapshot.exists("c/1")
    with pytest.raises(ValueError, match="read-only"):
        await snapshot.set("c/1", cpu.Buffer.from_bytes(b"x"))
    with pytest.raises(ValueError, match="read-only"):
        await snapshot.delete("c/0")
    assert (
        snapshot == snapshot
        and snapshot != Snapshot(store, {}, snapshot.root_now)
        and buffer != stale
    )
