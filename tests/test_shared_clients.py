"""One array, several clients: store objects, processes and nodes see the same array.

Every scenario here used to fail silently: a store that had looked at the array before
another client created or re-created it read fill values, wrote under keys nobody read,
listed duplicates, and overwrite left old chunks behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
import zarr.core.sync
from zarr.core.buffer import cpu, default_buffer_prototype
from zarr.errors import ArrayNotFoundError

import pyrlang_zarr as pz
from pyrlang_zarr import Atom, MnesiaStore
from pyrlang_zarr.erldist.node_registry import shared_node
from pyrlang_zarr.mnesia import MnesiaClient, ensure_table
from pyrlang_zarr.testing.cluster import LocalCluster

pytestmark = pytest.mark.erlang

TABLE = "zarr_storage"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def table(cluster: LocalCluster) -> str:
    zarr.core.sync.sync(ensure_table(shared_node(cluster.cookie), cluster.nodes, TABLE))
    return TABLE


def two_stores(cluster: LocalCluster, aid: str) -> tuple[MnesiaStore, MnesiaStore]:
    """Two clients of the same array, each talking to another replica."""
    return (
        MnesiaStore(aid, node=cluster.nodes[0], cookie=cluster.cookie, table_name=TABLE),
        MnesiaStore(aid, node=cluster.nodes[1], cookie=cluster.cookie, table_name=TABLE),
    )


async def raw_keys(cluster: LocalCluster, aid: str) -> set[Any]:
    spec: list[Any] = [((Atom(TABLE), (aid.encode(), Atom("$1")), Atom("_")), [], [Atom("$1")])]
    node = shared_node(cluster.cookie)
    return set(await node.rpc(cluster.nodes[0], "mnesia", "dirty_select", [Atom(TABLE), spec]))


async def listing(store: MnesiaStore) -> list[str]:
    return sorted([k async for k in store.list()])


async def test_open_or_create_by_another_store(cluster: LocalCluster, table: str) -> None:
    """The everyday pattern: try to open; if absent, create. Another store created it."""
    aid = f"ooc-{uuid.uuid4().hex[:8]}"
    a, b = two_stores(cluster, aid)
    with pytest.raises(ArrayNotFoundError):
        await zarr.api.asynchronous.open_array(store=a)
    created = await zarr.api.asynchronous.create_array(b, shape=(4,), chunks=(2,), dtype="i4")
    await created.setitem(slice(None), np.array([1, 2, 3, 4], "i4"))
    seen = await zarr.api.asynchronous.open_array(store=a)
    assert np.asarray(await seen.getitem(slice(None))).tolist() == [1, 2, 3, 4]
    await seen.setitem(slice(None), np.array([5, 6, 7, 8], "i4"))
    assert np.asarray(await created.getitem(slice(None))).tolist() == [5, 6, 7, 8]
    assert await listing(a) == await listing(b) == ["c/0", "c/1", "zarr.json"]


@pytest.mark.parametrize(
    "again",
    [
        {"shape": (2, 3), "chunks": (1, 2)},  # another rank
        {
            "shape": (6,),
            "chunks": (4,),
            "chunk_key_encoding": {"name": "default", "separator": "."},
        },
        {"shape": (6,), "chunks": (4,), "chunk_key_encoding": {"name": "v2", "separator": "."}},
        {"shape": (2, 3), "chunks": (2, 2), "zarr_format": 2},
    ],
    ids=["rank", "separator", "v2-encoding", "zarr-v2"],
)
async def test_recreate_seen_by_an_older_store(
    cluster: LocalCluster, table: str, again: dict[str, Any]
) -> None:
    aid = f"re-{uuid.uuid4().hex[:8]}"
    a, b = two_stores(cluster, aid)
    first = await zarr.api.asynchronous.create_array(a, shape=(6,), chunks=(2,), dtype="i4")
    await first.setitem(slice(None), np.arange(6, dtype="i4") + 1)
    assert await listing(a) == ["c/0", "c/1", "c/2", "zarr.json"]
    # b re-creates the array (overwrite); a has seen the old one
    second = await zarr.api.asynchronous.create_array(b, dtype="i4", overwrite=True, **again)
    values = np.arange(6, dtype="i4").reshape(second.shape) + 10
    await second.setitem(slice(None), values)
    mem = zarr.storage.MemoryStore()
    ref = await zarr.api.asynchronous.create_array(mem, dtype="i4", **again)
    await ref.setitem(slice(None), values)
    expected = sorted([k async for k in mem.list()])
    assert await listing(a) == await listing(b) == expected  # no duplicates, no leftovers
    seen = await zarr.api.asynchronous.open_array(store=a)
    assert np.array_equal(await seen.getitem(slice(None)), values)
    await seen.setitem(slice(None), values * 2)  # a's writes land where b reads
    assert np.array_equal(await second.getitem(slice(None)), values * 2)
    assert len(await raw_keys(cluster, aid)) == len(expected)  # one record a key, no more


async def test_overwrite_leaves_no_old_chunk(cluster: LocalCluster, table: str) -> None:
    """b looked before a created the array; b's create(overwrite=True) removes all of it."""
    aid = f"ow-{uuid.uuid4().hex[:8]}"
    a, b = two_stores(cluster, aid)
    assert not await b.exists("zarr.json")
    old = await zarr.api.asynchronous.create_array(a, shape=(4, 4, 4), chunks=(2, 2, 2), dtype="u1")
    await old.setitem(slice(None), np.ones((4, 4, 4), "u1"))
    new = await zarr.api.asynchronous.create_array(
        b, shape=(3,), chunks=(3,), dtype="u1", overwrite=True
    )
    await new.setitem(slice(None), np.array([7, 8, 9], "u1"))
    assert await raw_keys(cluster, aid) == {Atom("metadata"), (Atom("chunk"), (0,))}
    assert await listing(a) == ["c/0", "zarr.json"]
    # and when the old array had chunks of a rank nobody can name any more
    await zarr.api.asynchronous.create_array(
        a, shape=(2, 2), chunks=(1, 1), dtype="u1", overwrite=True
    )
    z = await zarr.api.asynchronous.open_array(store=a)
    await z.setitem(slice(None), np.ones((2, 2), "u1"))
    got = await a.get("zarr.json", default_buffer_prototype())
    assert got is not None
    doc = json.loads(got.to_bytes())
    doc["shape"] = [4]  # now rank 1: the (i, j) chunk records cannot be named
    await a.set("zarr.json", cpu.Buffer.from_bytes(json.dumps(doc).encode()))
    assert await listing(a) == ["zarr.json"] and len(await raw_keys(cluster, aid)) == 5
    await zarr.api.asynchronous.create_array(b, shape=(1,), chunks=(1,), dtype="u1", overwrite=True)
    assert await raw_keys(cluster, aid) == {Atom("metadata")}


async def test_arrays_of_two_clients_follow_each_other(cluster: LocalCluster, table: str) -> None:
    """pz arrays: an attributes-only change is followed; a re-creation is an error, not a
    write with the old layout and codecs."""
    aid = f"arr-{uuid.uuid4().hex[:8]}"
    base: dict[str, Any] = {"cookie": cluster.cookie, "table_name": TABLE}
    a = await pz.create(aid, shape=(4,), chunks=(2,), dtype="f8", node=cluster.nodes[0], **base)
    b = await pz.open(aid, node=cluster.nodes[1], **base)
    await a.set_slice(np.arange(4.0))
    zb = await zarr.api.asynchronous.open_array(store=b.store)
    await zb.update_attributes({"owner": "b"})  # rewrites zarr.json: same array
    await a.set_slice(np.full(2, 9.0), start=(0,), stop=(2,))
    assert (await b.get_slice()).tolist() == [9.0, 9.0, 2.0, 3.0]
    await pz.create(
        aid, shape=(4,), chunks=(4,), dtype="i2", node=cluster.nodes[1], overwrite=True, **base
    )
    with pytest.raises(pz.TransactionError, match="re-created"):
        await a.set_slice(np.ones(4))
    with pytest.raises(pz.TransactionError, match="re-created"):
        await a.get_slice()
    fresh = await pz.open(aid, node=cluster.nodes[0], **base)
    assert (await fresh.get_slice()).tolist() == [0, 0, 0, 0] and fresh.dtype == np.int16


CHILD = """
import asyncio, json, sys
import numpy as np, zarr
from pyrlang_zarr import MnesiaStore
args = json.loads(sys.argv[1])
async def main():
    store = MnesiaStore(args["aid"], node=args["node"], cookie=args["cookie"])
    if args["op"] == "create":
        arr = await zarr.api.asynchronous.create_array(
            store, dtype="i4", overwrite=True, **args["create"])
        await arr.setitem(slice(None), np.array(args["values"], "i4").reshape(arr.shape))
    arr = await zarr.api.asynchronous.open_array(store=store)
    print(json.dumps((await arr.getitem(slice(None))).tolist()))
asyncio.run(main())
"""


def child(cluster: LocalCluster, **args: Any) -> Any:
    """Run one client in another process; what it read."""
    payload = json.dumps({"node": cluster.nodes[1], "cookie": cluster.cookie, **args})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, payload], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


async def test_two_processes_alternating(cluster: LocalCluster, table: str) -> None:
    aid = f"proc-{uuid.uuid4().hex[:8]}"
    store = MnesiaStore(aid, node=cluster.nodes[0], cookie=cluster.cookie)
    assert not await store.exists("zarr.json")
    await asyncio.to_thread(
        child,
        cluster,
        aid=aid,
        op="create",
        create={"shape": (4,), "chunks": (2,)},
        values=[1, 2, 3, 4],
    )
    arr = await zarr.api.asynchronous.open_array(store=store)
    assert np.asarray(await arr.getitem(slice(None))).tolist() == [1, 2, 3, 4]
    create = {"shape": (2, 2), "chunks": (1, 1), "chunk_key_encoding": {"name": "v2"}}
    await asyncio.to_thread(
        child, cluster, aid=aid, op="create", create=create, values=[5, 6, 7, 8]
    )
    arr = await zarr.api.asynchronous.open_array(store=store)
    assert np.asarray(await arr.getitem(slice(None))).tolist() == [[5, 6], [7, 8]]
    await arr.setitem((0, 0), 50)
    assert await asyncio.to_thread(child, cluster, aid=aid, op="read") == [[50, 6], [7, 8]]
    assert await listing(store) == ["0.0", "0.1", "1.0", "1.1", "zarr.json"]


@pytest.mark.parametrize("key", ["zarr.json", ".zarray", "c/0", "attrs/x"])
async def test_set_if_not_exists_is_atomic_for_every_key(
    cluster: LocalCluster, table: str, key: str
) -> None:
    """Eight stores race to set the same absent key: one wins, and every store sees the
    winner's value right after its own call."""
    aid = f"sine-{uuid.uuid4().hex[:8]}"
    array_doc: dict[str, Any] = {
        "zarr_format": 3,
        "node_type": "array",
        "data_type": "uint8",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1]}},
        "chunk_key_encoding": {"name": "default"},
        "fill_value": 0,
        "codecs": [{"name": "bytes"}],
    }
    if key != "zarr.json":  # a v3 root array, so that c/0 is a chunk key
        store = two_stores(cluster, aid)[0]
        doc = json.dumps({**array_doc, "shape": [8]}).encode()
        await store.set("zarr.json", cpu.Buffer.from_bytes(doc))

    def value(i: int) -> bytes:
        if key == "zarr.json":
            return json.dumps({**array_doc, "shape": [i + 1]}).encode()
        if key == ".zarray":
            return json.dumps({"zarr_format": 2, "shape": [i + 1], "chunks": [1]}).encode()
        return b"value %d" % i

    proto = default_buffer_prototype()
    for _round in range(4):
        stores = [two_stores(cluster, aid)[i % 2] for i in range(8)]

        async def race(i: int, stores: list[MnesiaStore] = stores) -> bytes:
            await stores[i].set_if_not_exists(key, cpu.Buffer.from_bytes(value(i)))
            got = await stores[i].get(key, proto)
            assert got is not None
            return got.to_bytes()

        seen = set(await asyncio.gather(*(race(i) for i in range(8))))
        assert len(seen) == 1 and seen <= {value(i) for i in range(8)}
        again = await MnesiaStore(aid, node=cluster.nodes[0], cookie=cluster.cookie).get(key, proto)
        assert again is not None and again.to_bytes() in seen
        await stores[0].delete(key)


async def test_listing_a_prefix_filters_on_the_server(
    cluster: LocalCluster, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    aid = f"lp-{uuid.uuid4().hex[:8]}"
    store = MnesiaStore(aid, node=cluster.nodes[0], cookie=cluster.cookie)
    arr = await zarr.api.asynchronous.create_array(
        store, shape=(2000,), chunks=(1,), dtype="u1", fill_value=0, compressors=None
    )
    await arr.setitem(slice(None), np.ones(2000, "u1"))
    await store.set("zarr-notes", cpu.Buffer.from_bytes(b"{}"))
    shipped: list[int] = []
    real = MnesiaClient._select

    async def counting(self: MnesiaClient, spec: Any, what: str, **kw: Any) -> Any:
        found = await real(self, spec, what, **kw)
        shipped.append(len(found))
        return found

    monkeypatch.setattr(MnesiaClient, "_select", counting)
    assert sorted([k async for k in store.list_prefix("zarr")]) == ["zarr-notes", "zarr.json"]
    assert sum(shipped) <= 3  # the metadata and the matching path: not 2000 chunk keys
    shipped.clear()
    assert len([k async for k in store.list_prefix("c/")]) == 2000
    assert sorted([k async for k in store.list_dir("")]) == ["c", "zarr-notes", "zarr.json"]
