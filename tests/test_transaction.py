"""Transactions across arrays: several arrays (same or different tables) change together or
not at all, under concurrent writers; several regions read in one transaction."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import numpy as np
import pytest
from zarr.codecs import BytesCodec

import pyrlang_zarr as pz
import pyrlang_zarr.sync as pzs
from pyrlang_zarr import Atom
from pyrlang_zarr.overlay import WriteBuffer
from pyrlang_zarr.testing.cluster import LocalCluster

pytestmark = pytest.mark.erlang

OTHER_TABLE = "zarr_tx_other"


def new_id() -> str:
    return f"tx-{uuid.uuid4().hex[:8]}"


async def two_arrays(c: LocalCluster) -> tuple[pz.MnesiaArray, pz.MnesiaArray]:
    """One array in the default table, one in another table: a transaction spans both."""
    opts: dict[str, Any] = {"node": c.nodes[0], "cookie": c.cookie, "nodes": c.nodes}
    a = await pz.create(new_id(), shape=(20,), chunks=(10,), dtype="int64", **opts)
    b = await pz.create(
        new_id(), shape=(4, 4), chunks=(2, 2), dtype="float64", table_name=OTHER_TABLE, **opts
    )
    return a, b


async def erlang_keys(arr: pz.MnesiaArray, peer: str) -> list[Any]:
    """The record keys of ``arr``, as a node of the cluster lists them."""
    client = await arr.store.client()
    keys = await client.node.rpc(
        peer, "mnesia", "dirty_all_keys", [Atom(arr.store.table_name)], timeout=10
    )
    aid = arr.store.mnesia_key(None)[0]
    return sorted((k for k in keys if k[0] == aid), key=repr)


async def test_a_transaction_over_two_tables_commits_both(cluster: LocalCluster) -> None:
    a, b = await two_arrays(cluster)
    async with pz.transaction() as tx:
        await tx.set_slice(a, np.arange(5), (3,), (8,))  # part of a chunk: read, merged
        await tx.set_slice(b, np.ones((4, 2)), (0, 1), (4, 3))
        await tx.set_slice(a, np.full(2, 9), (12,), (14,))
    assert tx.committed
    want_a = np.zeros(20, dtype=np.int64)
    want_a[3:8] = np.arange(5)
    want_a[12:14] = 9
    want_b = np.zeros((4, 4))
    want_b[:, 1:3] = 1
    got_a, got_b = await pz.get_slices([(a, None, None), (b, None, None)])
    assert np.array_equal(got_a, want_a) and np.array_equal(got_b, want_b)
    # the records are ExZarr's, as a node of the cluster sees them, in both tables
    chunk = Atom("chunk")
    assert [k[1] for k in await erlang_keys(a, cluster.nodes[1])] == [
        (chunk, (0,)),
        (chunk, (1,)),
        Atom("metadata"),
    ]
    b_chunks = [k[1] for k in await erlang_keys(b, cluster.nodes[1]) if k[1] != Atom("metadata")]
    assert sorted(b_chunks) == sorted((chunk, (i, j)) for i in (0, 1) for j in (0, 1))


async def test_an_exception_in_the_block_writes_nothing(cluster: LocalCluster) -> None:
    a, b = await two_arrays(cluster)
    await a.set_slice(np.full(20, 7), (0,), (20,))
    before_a = await erlang_keys(a, cluster.nodes[1])
    before_b = await erlang_keys(b, cluster.nodes[1])
    with pytest.raises(RuntimeError, match="changed my mind"):
        async with pz.transaction() as tx:
            await tx.set_slice(a, np.zeros(20, dtype=np.int64), (0,), (20,))
            await tx.set_slice(b, np.ones((4, 4)), (0, 0), (4, 4))
            raise RuntimeError("changed my mind")
    assert not tx.committed
    assert await erlang_keys(a, cluster.nodes[1]) == before_a
    assert await erlang_keys(b, cluster.nodes[1]) == before_b
    got_a, got_b = await pz.get_slices([(a, None, None), (b, None, None)])
    assert np.array_equal(got_a, np.full(20, 7)) and not got_b.any()


async def test_bad_input_raises_in_the_block_before_anything_is_written(
    cluster: LocalCluster,
) -> None:
    a, b = await two_arrays(cluster)
    with pytest.raises(ValueError, match="shape"):
        async with pz.transaction() as tx:
            await tx.set_slice(b, np.ones((4, 4)), (0, 0), (4, 4))
            await tx.set_slice(a, np.ones(3, dtype=np.int64), (0,), (5,))
    with pytest.raises(IndexError, match="beyond"):
        async with pz.transaction() as tx:
            await tx.set_slice(a, np.ones(5, dtype=np.int64), (18,), (23,))
    with pytest.raises(TypeError, match="MnesiaArray"):
        async with pz.transaction() as tx:
            await tx.set_slice(a.store, np.ones(5), (0,), (5,))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="triples"):
        await pz.get_slices([(a, None)])  # type: ignore[list-item]
    assert not (await b.get_slice()).any()


async def test_a_concurrent_writer_to_one_array_is_not_lost(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the transaction's read of a partial chunk and its commit, another client
    writes the rest of that chunk: the commit finds the chunk changed on the server, reads
    again and retries, so both writes survive and the other array changes once."""
    a, b = await two_arrays(cluster)
    other = await pz.open(a.array_id, node=cluster.nodes[1], cookie=cluster.cookie)
    plans = 0
    real_plan = WriteBuffer.plan

    async def plan_with_a_concurrent_write(self: WriteBuffer) -> Any:
        nonlocal plans
        plans += 1
        if plans == 1:  # the first attempt has read chunk 0 of a: change it under it
            await other.set_slice(np.full(5, 2), (5,), (10,))
        return await real_plan(self)

    monkeypatch.setattr(WriteBuffer, "plan", plan_with_a_concurrent_write)
    async with pz.transaction() as tx:
        await tx.set_slice(a, np.full(5, 1), (0,), (5,))
        await tx.set_slice(b, np.full((2, 2), 3.0), (0, 0), (2, 2))
    assert plans == 4  # two buffers per attempt, two attempts
    got_a, got_b = await pz.get_slices([(a, None, None), (b, None, None)])
    assert list(got_a[:10]) == [1] * 5 + [2] * 5
    assert got_b[:2, :2].tolist() == [[3.0, 3.0], [3.0, 3.0]] and got_b.sum() == 12.0


async def test_get_slices_never_sees_half_a_transaction(cluster: LocalCluster) -> None:
    a, b = await two_arrays(cluster)
    stop = asyncio.Event()

    async def writer() -> int:
        n = 0
        while not stop.is_set():
            n += 1
            async with pz.transaction() as tx:
                await tx.set_slice(a, np.full(20, n), (0,), (20,))
                await tx.set_slice(b, np.full((4, 4), float(n)), (0, 0), (4, 4))
        return n

    task = asyncio.create_task(writer())
    seen = set()
    try:
        for _ in range(40):
            got_a, got_b = await pz.get_slices([(a, (0,), (20,)), (b, (0, 0), (4, 4))])
            assert len(set(got_a.tolist())) == 1 and len(set(got_b.ravel().tolist())) == 1
            assert got_a[0] == got_b[0, 0], (got_a, got_b)
            seen.add(int(got_a[0]))
    finally:
        stop.set()
        writes = await task
    assert writes > 1 and len(seen) > 1  # the reads did overlap the writes


def uncompressed(c: LocalCluster) -> dict[str, Any]:
    """``create``'s options for an array without a compressor on every node of ``c``."""
    return {"node": c.nodes[0], "cookie": c.cookie, "nodes": c.nodes, "compressors": None}


async def refuse(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("zarr's bytes codec ran")


async def test_get_slices_of_uncompressed_arrays_skip_zarrs_pipeline(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As get_slice does: chunks stored as their values' bytes are copied into the result,
    zarr's bytes codec never runs (missing chunks read as the fill value)."""
    opts = uncompressed(cluster)
    a = await pz.create(new_id(), (20,), (10,), dtype="int64", **opts)
    b = await pz.create(new_id(), (6, 6), (3, 3), dtype="float32", fill_value=-1, **opts)
    await a.set_slice(np.arange(20))
    await b.set_slice(np.ones((3, 3), dtype="float32"), (0, 0), (3, 3))

    monkeypatch.setattr(BytesCodec, "_decode_single", refuse)
    got_a, got_b = await pz.get_slices([(a, (5,), (17,)), (b, (1, 1), (6, 5))])
    np.testing.assert_array_equal(got_a, np.arange(5, 17))
    expected = np.full((6, 6), -1, dtype="float32")
    expected[:3, :3] = 1
    np.testing.assert_array_equal(got_b, expected[1:6, 1:5])


async def test_whole_chunks_of_uncompressed_arrays_skip_zarrs_pipeline_in_a_transaction(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As set_slice does: whole chunks are written as their values' bytes (zarr's bytes
    codec never runs); a later write in the same transaction that covers a chunk in part
    merges with what the earlier one wrote."""
    opts = uncompressed(cluster)
    a = await pz.create(new_id(), (20,), (10,), dtype="int64", **opts)
    b = await pz.create(new_id(), (6, 6), (3, 3), dtype="float32", **opts)

    monkeypatch.setattr(BytesCodec, "_encode_single", refuse)
    async with pz.transaction() as tx:
        await tx.set_slice(a, np.arange(20))
        await tx.set_slice(b, np.ones((3, 6), dtype="float32"), (0, 0), (3, 6))
    monkeypatch.undo()
    async with pz.transaction() as tx:
        await tx.set_slice(a, np.arange(100, 120))
        await tx.set_slice(a, np.array([7, 7]), (9,), (11,))  # in part: merged with the above
    got_a, got_b = await pz.get_slices([(a, (0,), (20,)), (b, (0, 0), (6, 6))])
    expected_a = np.arange(100, 120)
    expected_a[9:11] = 7
    np.testing.assert_array_equal(got_a, expected_a)
    expected_b = np.zeros((6, 6), dtype="float32")
    expected_b[:3] = 1
    np.testing.assert_array_equal(got_b, expected_b)


async def test_get_slices_follows_attributes_and_refuses_a_recreated_array(
    cluster: LocalCluster,
) -> None:
    a, b = await two_arrays(cluster)
    other = await pz.open(a.array_id, node=cluster.nodes[1], cookie=cluster.cookie)
    await other.zarr.update_attributes({"note": "changed"})
    got_a, _ = await pz.get_slices([(a, (0,), (5,)), (b, (0, 0), (1, 1))])
    assert got_a.shape == (5,)
    await pz.create(
        a.array_id,
        shape=(30,),
        chunks=(10,),
        node=cluster.nodes[1],
        cookie=cluster.cookie,
        overwrite=True,
    )
    with pytest.raises(pz.TransactionError, match="re-created"):
        await pz.get_slices([(a, (0,), (5,)), (b, (0, 0), (1, 1))])
    with pytest.raises(pz.TransactionError, match="re-created"):
        async with pz.transaction() as tx:
            await tx.set_slice(b, np.ones((1, 1)), (0, 0), (1, 1))
            await tx.set_slice(a, np.ones(5, dtype=np.int64), (0,), (5,))
    assert not (await b.get_slice()).any()


def test_the_blocking_twin(cluster: LocalCluster) -> None:
    opts: dict[str, Any] = {"node": cluster.nodes[0], "cookie": cluster.cookie}
    a = pzs.create(new_id(), shape=(6,), chunks=(3,), dtype="int32", nodes=cluster.nodes, **opts)
    b = pzs.create(new_id(), shape=(6,), chunks=(3,), dtype="int32", **opts)
    with pzs.transaction() as tx:
        tx.set_slice(a, np.arange(4), (1,), (5,))
        tx.set_slice(b.async_array, np.arange(6), (0,), (6,))
    assert tx.committed
    got_a, got_b = pzs.get_slices([(a, None, None), (b, (2,), (4,))])
    assert got_a.tolist() == [0, 0, 1, 2, 3, 0] and got_b.tolist() == [2, 3]
    with pytest.raises(KeyError), pzs.transaction() as tx2:
        tx2.set_slice(a, np.zeros(6, dtype=np.int32), (0,), (6,))
        raise KeyError("nope")
    assert a[:].tolist() == [0, 0, 1, 2, 3, 0]


async def test_a_durable_transaction_forces_the_log_of_every_table(cluster: LocalCluster) -> None:
    """Arrays opened ``durable=True``: the transaction commits, then ``sync_log`` runs on
    the disc replicas of both tables (counted on a node) before it returns."""
    from tests.erl import CallCounts

    a, b = await two_arrays(cluster)
    da = await pz.open(a.array_id, node=cluster.nodes[0], cookie=cluster.cookie, durable=True)
    db = await pz.open(
        b.array_id,
        node=cluster.nodes[0],
        cookie=cluster.cookie,
        table_name=OTHER_TABLE,
        durable=True,
    )
    client = await da.store.client()
    async with CallCounts(client.node, cluster.nodes[1], [("mnesia", "sync_log", 0)]) as calls:
        async with pz.transaction() as tx:
            await tx.set_slice(da, np.full(20, 4), (0,), (20,))
            await tx.set_slice(db, np.full((4, 4), 4.0), (0, 0), (4, 4))
        synced = (await calls.counts())[("mnesia", "sync_log", 0)]
    assert synced == 1  # once per node, for both tables
    got_a, got_b = await pz.get_slices([(a, None, None), (b, None, None)])
    assert (got_a == 4).all() and (got_b == 4.0).all()
