"""Records written by earlier versions of this project: still read, and migrated to ExZarr's
forms (idempotently, resumably) on a table that holds both forms."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numcodecs  # type: ignore[import-untyped]
import numpy as np
import pytest
import zarr
import zarr.core.sync
from zarr.core.buffer import default_buffer_prototype

import pyrlang_zarr as pz
from pyrlang_zarr import Atom, ExportFun, MnesiaStore
from pyrlang_zarr.erldist.node_registry import shared_node
from pyrlang_zarr.keys import chunk_keys_from_metadata
from pyrlang_zarr.migrate import migrate, migrate_array
from pyrlang_zarr.mnesia import MnesiaClient, ensure_table
from pyrlang_zarr.testing.cluster import LocalCluster

pytestmark = pytest.mark.erlang

TABLE = "pz_migrate"
CHUNK = Atom("chunk")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def table(cluster: LocalCluster) -> str:
    zarr.core.sync.sync(
        ensure_table(shared_node(cluster.cookie), cluster.nodes, TABLE, table_type="set")
    )
    return TABLE


async def write_raw(cluster: LocalCluster, records: list[tuple[Any, Any]]) -> None:
    node = shared_node(cluster.cookie)
    recs = [(Atom(TABLE), k, d) for k, d in records]
    write = ExportFun("mnesia", "write", 1)
    for rec in recs:
        assert await node.rpc(cluster.nodes[0], "mnesia", "transaction", [write, [rec]]) == (
            Atom("atomic"),
            Atom("ok"),
        )


async def raw(cluster: LocalCluster, aid: str) -> dict[Any, bytes]:
    spec: list[Any] = [
        ((Atom(TABLE), (aid.encode(), Atom("$1")), Atom("$2")), [], [((Atom("$1"), Atom("$2")),)])
    ]
    node = shared_node(cluster.cookie)
    found = await node.rpc(cluster.nodes[0], "mnesia", "dirty_select", [Atom(TABLE), spec])
    return {x: bytes(d) for x, d in found}


async def earlier_array(
    cluster: LocalCluster, aid: str, data: np.ndarray, chunks: tuple[int, ...], **create: Any
) -> None:
    """Records as earlier versions wrote them: zarr.json at {Id, metadata}, the rest under
    path keys, the root array's chunks at {Id, Idx}."""
    mem = zarr.storage.MemoryStore()
    arr = await zarr.api.asynchronous.create_array(
        mem, shape=data.shape, chunks=chunks, dtype=data.dtype, **create
    )
    await arr.setitem(slice(None), data)
    proto = default_buffer_prototype()
    docs = {k: (await mem.get(k, proto)).to_bytes() async for k in mem.list()}  # type: ignore[union-attr]
    layout = chunk_keys_from_metadata("zarr.json", docs.get("zarr.json", b"")) or (
        chunk_keys_from_metadata(".zarray", docs.get(".zarray", b""))
    )
    assert layout is not None
    records = []
    for key, value in docs.items():
        index = layout.parse(key)
        if key == "zarr.json":
            x: Any = Atom("metadata")
        elif index is not None:
            x = index
        else:
            x = key.encode()
        records.append(((aid.encode(), x), value))
    await write_raw(cluster, records)


def opts(cluster: LocalCluster) -> dict[str, Any]:
    return {"node": cluster.nodes[0], "cookie": cluster.cookie, "table_name": TABLE}


async def test_migration_of_a_table_holding_both_forms(cluster: LocalCluster, table: str) -> None:
    tag = uuid.uuid4().hex[:6]
    v3, v2, mixed, exz = (f"{n}-{tag}" for n in ("v3", "v2", "mixed", "exz"))
    d3 = np.arange(20, dtype="f8").reshape(4, 5)
    d2 = np.arange(9, dtype="i4").reshape(3, 3) - 4
    await earlier_array(cluster, v3, d3, (2, 2))
    await earlier_array(cluster, v2, d2, (2, 2), zarr_format=2, compressors=None)
    await earlier_array(cluster, mixed, np.arange(6, dtype="u1"), (2,))
    # mixed: chunk 1 also in ExZarr's form, newer (the store reads it), chunk 2 only there
    newer = np.array([7, 7], "u1").tobytes()
    zstd = numcodecs.Zstd(level=0, checksum=True)  # 4 bytes longer than the earlier frames
    await write_raw(
        cluster,
        [
            ((mixed.encode(), (CHUNK, (1,))), zstd.encode(newer)),
            ((mixed.encode(), (CHUNK, (2,))), zstd.encode(np.array([8, 9], "u1").tobytes())),
        ],
    )
    await write_raw(
        cluster, [((mixed.encode(), (2,)), zstd.encode(np.array([0, 0], "u1").tobytes()))]
    )
    # v3: an earlier-form record of another rank, which nothing can name: left alone
    await write_raw(cluster, [((v3.encode(), (0, 0, 0)), b"junk")])
    e = await pz.create(exz, shape=(4,), chunks=(2,), dtype="f8", exzarr=True, **opts(cluster))
    await e.set_slice(np.arange(4.0))
    exz_before = await raw(cluster, exz)
    expected_mixed = np.array([0, 1, 7, 7, 8, 9], "u1")

    async def check_reads() -> None:
        assert np.array_equal(await (await pz.open(v3, **opts(cluster))).get_slice(), d3)
        assert np.array_equal(await (await pz.open(v2, **opts(cluster))).get_slice(), d2)
        got = zarr.open_array(MnesiaStore(mixed, **opts(cluster)), mode="r")[:]
        assert np.array_equal(got, expected_mixed)
        store = MnesiaStore(mixed, **opts(cluster))
        keys = sorted([k async for k in store.list()])
        assert keys == ["c/0", "c/1", "c/2", "zarr.json"]  # each once
        size = len(zstd.encode(newer))  # of the record reads serve, not the earlier one
        assert await store.getsize("c/1") == await store.getsize_prefix("c/1") == size
        v2_keys = sorted([k async for k in MnesiaStore(v2, **opts(cluster)).list()])
        assert v2_keys == [".zarray", ".zattrs", "0.0", "0.1", "1.0", "1.1"]

    await check_reads()  # earlier records keep working before any migration
    reports = {
        r.array_id: r
        for r in await migrate(cluster.nodes[1], cookie=cluster.cookie, table_name=TABLE)
    }
    assert {v3, v2, mixed} <= set(reports) and exz not in reports
    assert reports[v3].chunks_moved == 6 and reports[v3].left_alone == 1
    assert reports[v2].chunks_moved == 4 and reports[v2].metadata_moved
    assert reports[mixed].chunks_moved == 3
    await check_reads()
    for aid, rank in ((v3, 2), (v2, 2), (mixed, 1)):
        records = await raw(cluster, aid)
        assert Atom("metadata") in records
        earlier = [x for x in records if type(x) is tuple and x[:1] != (CHUNK,)]
        assert earlier == ([(0, 0, 0)] if aid == v3 else [])
        assert all(len(x[1]) == rank for x in records if type(x) is tuple and x[:1] == (CHUNK,))
    assert b".zarray" not in await raw(cluster, v2)
    assert (await raw(cluster, mixed))[(CHUNK, (1,))] == zstd.encode(newer)  # the newer kept
    assert await raw(cluster, exz) == exz_before  # ExZarr's records untouched
    # ExZarr's read path finds the v2 array now: metadata and chunks in its forms
    read = (
        "{{atomic, [{{_, _, {var}}}]}} = mnesia:transaction(fun() -> mnesia:read({tab}, {key}) end)"
    )
    meta = read.format(var="M", tab=TABLE, key=f'{{<<"{v2}">>, metadata}}')
    chunk = read.format(var="C", tab=TABLE, key=f'{{<<"{v2}">>, {{chunk, {{1, 1}}}}}}')
    check = '{binary:match(M, <<"zarr_format\\": 2">>) =/= nomatch, [X || <<X:32/little>> <= C]}.'
    out = cluster.erl_eval(1, f"{meta}, {chunk}, {check}")
    assert out.replace(" ", "") == "{true,[4,0,0,0]}"
    # idempotent
    again = {
        r.array_id: r
        for r in await migrate(cluster.nodes[0], cookie=cluster.cookie, table_name=TABLE)
    }
    assert set(again) == {v3}  # only the unnameable record is left in an earlier form
    assert again[v3].chunks_moved == 0 and again[v3].left_alone == 1
    await check_reads()


async def test_migration_resumes_after_an_interruption(
    cluster: LocalCluster, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    aid = f"resume-{uuid.uuid4().hex[:6]}"
    data = np.arange(1, 11, dtype="i8")  # no chunk of fill values: ten chunk records
    await earlier_array(cluster, aid, data, (1,))
    real = MnesiaClient.guarded
    calls = 0

    async def interrupted(self: MnesiaClient, *args: Any, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise pz.NodeDown("the coordinator went away")
        return await real(self, *args, **kw)

    monkeypatch.setattr(MnesiaClient, "guarded", interrupted)
    store = MnesiaStore(aid, **opts(cluster))
    with pytest.raises(pz.NodeDown):
        await migrate_array(store, batch=3)
    monkeypatch.undo()
    records = await raw(cluster, aid)
    moved = [x for x in records if type(x) is tuple and x[0] == CHUNK]
    assert len(moved) == 6 and len(records) == 11  # two batches in, each one whole
    assert np.array_equal(zarr.open_array(store, mode="r")[:], data)  # readable meanwhile
    report = await migrate_array(store, batch=3)
    assert report.chunks_moved == 4
    records = await raw(cluster, aid)
    assert sorted(x for x in records if x != Atom("metadata")) == [(CHUNK, (i,)) for i in range(10)]
    assert np.array_equal(zarr.open_array(store, mode="r")[:], data)


async def test_migration_from_the_command_line(cluster: LocalCluster, table: str) -> None:
    aid = f"cli-{uuid.uuid4().hex[:6]}"
    await earlier_array(cluster, aid, np.arange(4, dtype="u1"), (2,))
    env = {**os.environ, "PYTHONPATH": str(REPO), "ERLANG_COOKIE": cluster.cookie}
    args = ["--node", cluster.nodes[0], "--table", TABLE, "--array", aid, "--batch", "1"]
    out = subprocess.run(
        [sys.executable, "-m", "pyrlang_zarr.migrate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == [
        {"array_id": aid, "chunks_moved": 2, "metadata_moved": False, "left_alone": 0}
    ]
    assert set(await raw(cluster, aid)) == {Atom("metadata"), (CHUNK, (0,)), (CHUNK, (1,))}
