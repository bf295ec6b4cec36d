"""zarr's own store test suite, run against MnesiaStore on real Erlang nodes."""

from __future__ import annotations

import pickle
import uuid
from typing import Any

import numpy as np
import pytest
import zarr
import zarr.core.sync
from zarr.core.buffer import Buffer, cpu, default_buffer_prototype
from zarr.testing.store import StoreTests

from pyrlang_zarr import Atom, ExportFun, MnesiaStore
from pyrlang_zarr.erldist.node_registry import shared_node
from pyrlang_zarr.keys import (
    CHUNK,
    METADATA,
    METADATA_NAMES,
    KeyLayout,
    Root,
    metadata_plan,
    other_metadata_name,
)
from pyrlang_zarr.mnesia import ensure_table
from pyrlang_zarr.settings import StoreSettings
from pyrlang_zarr.testing.cluster import LocalCluster

pytestmark = pytest.mark.erlang

TABLE = "zarr_storage"
FRAG_TABLE = "zarr_storage_frag"  # the same suite on a table in 4 fragments
_FRAG_READ = ExportFun("mnesia", "read", 2)


@pytest.fixture(scope="module")
def table(cluster: LocalCluster) -> str:
    zarr.core.sync.sync(ensure_table(shared_node(cluster.cookie), cluster.nodes, TABLE))
    return TABLE


async def raw_records(store: MnesiaStore, key: Any) -> list[Any]:
    """The records under ``key`` as Erlang reads them, through ``mnesia_frag`` (a plain
    read of a fragmented table sees its first fragment only; other tables pass through)."""
    node = shared_node(store.settings.cookie)
    table = Atom(store.settings.table_name)
    args = [Atom("async_dirty"), _FRAG_READ, [table, key], Atom("mnesia_frag")]
    recs = await node.rpc(store.node, "mnesia", "activity", args)
    assert isinstance(recs, list)
    return recs


async def raw_read(store: MnesiaStore, x: Any) -> bytes | None:
    recs = await raw_records(store, (store.array_id.encode(), x))
    return bytes(recs[0][2]) if recs else None


async def raw_root(store: MnesiaStore) -> Root:
    """The records the key mapping depends on, read raw, not by the store."""
    return Root(await raw_read(store, METADATA), await raw_read(store, b".zarray"))


async def raw_layout(store: MnesiaStore) -> KeyLayout:
    """The key layout computed from the raw metadata records, not by the store."""
    return KeyLayout(await raw_root(store))


async def raw_key(store: MnesiaStore, key: str) -> Any:
    """The record holding ``key`` (the first present candidate; else the one a write uses)."""
    aid = store.array_id.encode()
    root = await raw_root(store)
    if key in METADATA_NAMES:
        return (aid, root.serves(key))
    for x in root.candidates(key):
        if await raw_read(store, x) is not None:
            return (aid, x)
    return (aid, root.primary(key))


class TestMnesiaStore(StoreTests[MnesiaStore, cpu.Buffer]):
    store_cls = MnesiaStore
    buffer_cls = cpu.Buffer

    async def set(self, store: MnesiaStore, key: str, value: Buffer) -> None:
        node = shared_node(store.settings.cookie)
        aid = store.array_id.encode()
        write = ExportFun("mnesia", "write", 1)
        delete = ExportFun("mnesia", "delete", 1)
        if key in METADATA_NAMES:  # as the store places a metadata document
            root = await raw_root(store)
            other = await raw_read(store, other_metadata_name(key).encode())
            ops = metadata_plan(key, value.to_bytes(), root.m, other)
        else:
            ops = [("write", (await raw_root(store)).primary(key), value.to_bytes())]
        table = Atom(store.settings.table_name)
        for op, x, data in ops:
            fun, arg = (
                (write, (table, (aid, x), data)) if op == "write" else (delete, (table, (aid, x)))
            )
            args = [Atom("sync_transaction"), fun, [arg], Atom("mnesia_frag")]
            assert await node.rpc(store.node, "mnesia", "activity", args) == Atom("ok")

    async def get(self, store: MnesiaStore, key: str) -> Buffer:
        recs = await raw_records(store, await raw_key(store, key))
        assert recs, f"no record for {key}"
        return self.buffer_cls.from_bytes(recs[0][2])

    @pytest.fixture
    def store_kwargs(self, cluster: LocalCluster, table: str) -> dict[str, Any]:
        return {
            "array_id": f"suite-{uuid.uuid4().hex}",
            "node": cluster.nodes[0],
            "cookie": cluster.cookie,
            "table_name": table,
        }

    def test_store_repr(self, store: MnesiaStore) -> None:
        text = repr(store)
        assert text.startswith("MnesiaStore(array_id='suite-") and store.node in text
        cookie = store.settings.cookie
        assert cookie and cookie not in text and cookie not in str(store)

    def test_store_supports_writes(self, store: MnesiaStore) -> None:
        assert store.supports_writes

    def test_store_supports_listing(self, store: MnesiaStore) -> None:
        assert store.supports_listing


@pytest.fixture(scope="module")
def frag_table(cluster: LocalCluster) -> str:
    node = shared_node(cluster.cookie)
    zarr.core.sync.sync(ensure_table(node, cluster.nodes, FRAG_TABLE, fragments=4))
    return FRAG_TABLE


class TestMnesiaStoreFragmented(TestMnesiaStore):
    """zarr's suite again, on a table split in 4 fragments over the nodes (``mnesia_frag``):
    every access goes another way there (activities through ``mnesia_frag``, reads spread
    to the fragments' nodes, the schema lock)."""

    @pytest.fixture
    def table(self, frag_table: str) -> str:
        return frag_table

    async def test_store_is_on_the_fragmented_table(self, store: MnesiaStore) -> None:
        client = await store.client()
        assert store.settings.table_name == FRAG_TABLE and await client.fragmented()


@pytest.fixture
def kwargs(cluster: LocalCluster, table: str) -> dict[str, Any]:
    return {
        "array_id": f"t-{uuid.uuid4().hex}",
        "node": cluster.nodes[0],
        "cookie": cluster.cookie,
        "table_name": table,
    }


@pytest.mark.parametrize(
    "create",
    [
        {"zarr_format": 3},
        {"zarr_format": 3, "chunk_key_encoding": {"name": "default", "separator": "."}},
        {"zarr_format": 3, "chunk_key_encoding": {"name": "v2", "separator": "/"}},
        {"zarr_format": 3, "chunk_key_encoding": {"name": "v2", "separator": "."}},
        {"zarr_format": 2},
        {"zarr_format": 2, "chunk_key_encoding": {"name": "v2", "separator": "/"}},
    ],
    ids=["v3", "v3-dot", "v3-v2enc-slash", "v3-v2enc-dot", "v2", "v2-slash"],
)
async def test_listing_is_lossless_and_chunks_are_tuples(
    kwargs: dict[str, Any], cluster: LocalCluster, create: dict[str, Any]
) -> None:
    store = MnesiaStore(**kwargs)
    arr = await zarr.api.asynchronous.create_array(
        store, shape=(4, 6), chunks=(2, 3), dtype="int32", fill_value=-1, **create
    )
    await arr.setitem(slice(None), np.arange(24, dtype="int32").reshape(4, 6))
    await arr.setitem((0, 0), 100)
    listed = sorted([k async for k in store.list()])
    # the same array in a MemoryStore lists the same keys
    mem = zarr.storage.MemoryStore()
    ref = await zarr.api.asynchronous.create_array(
        mem, shape=(4, 6), chunks=(2, 3), dtype="int32", fill_value=-1, **create
    )
    await ref.setitem(slice(None), np.arange(24, dtype="int32").reshape(4, 6))
    assert listed == sorted([k async for k in mem.list()])
    # chunk records are integer tuples in Mnesia, from the Erlang side
    out = cluster.erl_eval(
        1,
        f"lists:sort(mnesia:dirty_select({TABLE}, "
        f"[{{{{{TABLE}, {{<<\"{store.array_id}\">>, '$1'}}, '_'}}, [], ['$1']}}])).",
    )
    for i in range(2):
        for j in range(2):
            assert f"{{{i},{j}}}" in out.replace(" ", "")
    again = await zarr.api.asynchronous.open_array(store=MnesiaStore(**kwargs))
    expected = np.arange(24, dtype="int32").reshape(4, 6)
    expected[0, 0] = 100
    assert np.array_equal(await again.getitem(slice(None)), expected)


async def test_metadata_change_renames_chunks_and_moves_no_record(kwargs: dict[str, Any]) -> None:
    """Chunk records follow the root metadata: with another separator they are spelt the new
    way; without metadata they cannot be named. No record is moved or re-keyed (an ExZarr
    reader keeps its chunks), and none is deleted."""
    store = MnesiaStore(**kwargs)
    arr = await zarr.api.asynchronous.create_array(store, shape=(4,), chunks=(2,), dtype="u1")
    await arr.setitem(slice(None), np.arange(4, dtype="u1"))
    before = sorted([k async for k in store.list()])
    assert before == ["c/0", "c/1", "zarr.json"]
    got = await store.get("zarr.json", default_buffer_prototype())
    assert got is not None
    doc = got.to_bytes()
    dotted = doc.replace(b'"separator": "/"', b'"separator": "."')
    assert dotted != doc
    await store.set("zarr.json", cpu.Buffer.from_bytes(dotted))
    assert sorted([k async for k in store.list()]) == ["c.0", "c.1", "zarr.json"]
    assert await raw_key(store, "c.1") == (store.array_id.encode(), (CHUNK, (1,)))
    again = await zarr.api.asynchronous.open_array(store=MnesiaStore(**kwargs))
    assert np.array_equal(await again.getitem(slice(None)), np.arange(4, dtype="u1"))
    await store.delete("zarr.json")
    assert sorted([k async for k in store.list()]) == []
    fresh = MnesiaStore(**kwargs)
    assert sorted([k async for k in fresh.list()]) == []
    assert await raw_read(store, (CHUNK, (1,))) is not None  # kept, only unnamed
    await fresh.set("zarr.json", cpu.Buffer.from_bytes(doc))  # the metadata comes back
    assert sorted([k async for k in store.list()]) == before


async def test_sync_api_and_pickle(kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    store = MnesiaStore(**kwargs)
    z = zarr.create_array(store, shape=(10, 10), chunks=(5, 5), dtype="f8")
    z[:] = np.ones((10, 10))
    clone = pickle.loads(pickle.dumps(store))  # no cookie in it: found as erl finds it
    assert clone == store and clone.settings.cookie is None
    monkeypatch.setenv("ERLANG_COOKIE", kwargs["cookie"])
    assert np.asarray(zarr.open_array(clone, mode="r")[:]).sum() == 100.0


async def test_read_only_store_cannot_write(kwargs: dict[str, Any]) -> None:
    store = MnesiaStore(**kwargs, read_only=True)
    with pytest.raises(ValueError, match="read-only"):
        await store.set("x", cpu.Buffer.from_bytes(b"1"))
    with pytest.raises(ValueError, match="read-only"):
        await store.clear()


def test_bad_store_arguments() -> None:
    with pytest.raises(ValueError, match="array_id"):
        MnesiaStore("", node="a@b", cookie="c")
    with pytest.raises(TypeError, match="array_id"):
        MnesiaStore(3, node="a@b", cookie="c")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="node"):
        MnesiaStore("x", cookie="c")
    with pytest.raises(ValueError, match="name@host"):
        MnesiaStore("x", node="nohost", cookie="c")
    with pytest.raises(ValueError, match="nodes"):
        MnesiaStore("x", nodes=[], cookie="c")
    with pytest.raises(TypeError, match="node name"):
        MnesiaStore("x", node=3, cookie="c")
    with pytest.raises(ValueError, match="'nohost'"):
        MnesiaStore("x", nodes=["a@b", "nohost"], cookie="c")
    with pytest.raises(ValueError, match="table_name"):
        MnesiaStore("x", node="a@b", table_name="")
    with pytest.raises(ValueError, match="timeout"):
        MnesiaStore("x", node="a@b", timeout=0)
    with pytest.raises(TypeError, match="cookie"):
        MnesiaStore("x", node="a@b", cookie=3)
    with pytest.raises(TypeError, match="unexpected keyword"):
        MnesiaStore("x", node="a@b", colour="red")
    with pytest.raises(TypeError, match="not both"):
        MnesiaStore(StoreSettings("x", node="a@b"), node="c@d")


def test_settings_are_one_value_without_the_cookie() -> None:
    mine = StoreSettings("x", nodes=["a@b", "c@d", "a@b"], cookie="secret-1")
    theirs = StoreSettings("x", node="a@b", nodes=("a@b", "c@d"), cookie="secret-2")
    assert mine.node == "a@b" and mine.nodes == ("a@b", "c@d")  # first replica, no repeats
    assert mine == theirs and hash(mine) == hash(theirs)
    assert "secret" not in repr(mine)
    with pytest.raises(AttributeError):
        mine.node = "c@d"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(mine)).cookie is None  # a pickle carries no cookie
    carried = StoreSettings("x", nodes=["a@b"], cookie="secret-1", pickle_cookie=True)
    assert pickle.loads(pickle.dumps(carried)).cookie == "secret-1"  # unless asked to
    store = MnesiaStore(mine)
    assert store == MnesiaStore("x", nodes=["a@b", "c@d"], cookie="other")
    assert store.settings is mine and (store.array_id, store.node) == ("x", "a@b")
    clone = pickle.loads(pickle.dumps(store.with_read_only(True)))
    assert clone.settings == mine and clone.settings.cookie is None and clone.read_only
    assert clone != store and clone.with_read_only(False) == store
    assert "secret" not in repr(store) and "secret" not in str(store)


async def test_public_seam(kwargs: dict[str, Any]) -> None:
    """What the array API uses: the client, record keys and the writability check."""
    store = MnesiaStore(**kwargs)
    client = await store.client()
    assert await store.client() is client and client.coordinator == store.node
    await zarr.api.asynchronous.create_array(store, shape=(4,), chunks=(2,), dtype="u1")
    assert await store.record_key("c/1") == await raw_key(store, "c/1")
    assert await store.record_keys(["zarr.json", "c/0", "x/y"]) == [
        (store.array_id.encode(), METADATA),
        (store.array_id.encode(), (CHUNK, (0,))),
        (store.array_id.encode(), b"x/y"),
    ]
    store.check_writable()
    with pytest.raises(ValueError, match="read-only"):
        store.with_read_only(True).check_writable()


async def test_concurrent_metadata_and_other_writes_keep_the_layout(kwargs: dict[str, Any]) -> None:
    """zarr v2 writes .zarray and .zattrs at once: the layout from .zarray must stick."""
    import asyncio
    import json

    store = MnesiaStore(**kwargs)
    zarray = json.dumps(
        {
            "zarr_format": 2,
            "shape": [4],
            "chunks": [2],
            "dtype": "<i4",
            "compressor": None,
            "fill_value": 0,
            "order": "C",
            "filters": None,
        }
    ).encode()
    await store.root()  # read before: the big write below starts with the old layout
    big = cpu.Buffer.from_bytes(bytes(16 * 1024 * 1024))  # its commit ends after .zarray's
    await asyncio.gather(
        store.set(".zattrs", big), store.set(".zarray", cpu.Buffer.from_bytes(zarray))
    )
    await store.set("1", cpu.Buffer.from_bytes(b"chunk"))
    assert (await raw_key(store, "1"))[1] == (CHUNK, (1,))
    assert (await store.layout()).to_mnesia("1") == (CHUNK, (1,))


def _v3_doc(separator: str = "/") -> bytes:
    import json

    return json.dumps(
        {
            "zarr_format": 3,
            "node_type": "array",
            "shape": [4],
            "data_type": "uint8",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2]}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": separator}},
            "fill_value": 0,
            "codecs": [{"name": "bytes"}],
        }
    ).encode()


async def test_path_record_becomes_a_chunk_record_when_metadata_arrives(
    kwargs: dict[str, Any],
) -> None:
    store = MnesiaStore(**kwargs)
    await store.set("c/0", cpu.Buffer.from_bytes(b"early"))  # no metadata yet: a path record
    await store.set("zarr.json", cpu.Buffer.from_bytes(_v3_doc()))
    assert (await raw_key(store, "c/0"))[1] == (CHUNK, (0,))  # moved to the chunk record
    got = await store.get("c/0", default_buffer_prototype())
    assert got is not None and got.to_bytes() == b"early"
    await store.set("c/0", cpu.Buffer.from_bytes(b"again"))
    assert sorted([k async for k in store.list()]) == ["c/0", "zarr.json"]  # once, not twice


async def test_deleting_both_metadata_documents_at_once(kwargs: dict[str, Any]) -> None:
    store = MnesiaStore(**kwargs)
    await store.set("zarr.json", cpu.Buffer.from_bytes(_v3_doc()))
    await store.set(".zarray", cpu.Buffer.from_bytes(b"{}"))
    await store.set("c/1", cpu.Buffer.from_bytes(b"x"))
    await store.delete_dir("")
    assert [k async for k in store.list()] == []
    await store.set("c/0", cpu.Buffer.from_bytes(b"y"))  # no metadata left: a path record
    fresh = MnesiaStore(**kwargs)
    assert [k async for k in fresh.list()] == ["c/0"]
    got = await fresh.get("c/0", default_buffer_prototype())
    assert got is not None and got.to_bytes() == b"y"


async def test_overwriting_an_array_does_not_read_its_chunks(
    kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyrlang_zarr.mnesia import MnesiaClient

    store = MnesiaStore(**kwargs)
    z = await zarr.api.asynchronous.create_array(store, shape=(40,), chunks=(4,), dtype="u1")
    await z.setitem(slice(None), np.arange(40, dtype="u1"))
    read: list[int] = []
    real = MnesiaClient.read_many

    async def counting(self: MnesiaClient, keys: Any, **kw: Any) -> Any:
        read.append(len(keys))
        return await real(self, keys, **kw)

    monkeypatch.setattr(MnesiaClient, "read_many", counting)
    await zarr.api.asynchronous.create_array(
        store, shape=(8,), chunks=(8,), dtype="u1", overwrite=True
    )
    assert max(read) <= 2  # the metadata documents only, never the 10 chunks being deleted
    assert sorted([k async for k in store.list()]) == ["zarr.json"]


async def test_durable_store_writes_through_the_checked_transactions(
    kwargs: dict[str, Any],
) -> None:
    """Chunk writes (guarded), metadata writes, set_if_not_exists and delete_dir, durable."""
    store = MnesiaStore(**kwargs, durable=True)
    z = await zarr.api.asynchronous.create_array(store, shape=(6,), chunks=(2,), dtype="u1")
    await z.setitem(slice(None), np.arange(6, dtype="u1") + 1)
    await store.set_if_not_exists("c/0", cpu.Buffer.from_bytes(b"not written"))
    await store.set_if_not_exists("x/y", cpu.Buffer.from_bytes(b"written"))
    again = await zarr.api.asynchronous.open_array(store=MnesiaStore(**kwargs))
    assert np.asarray(await again.getitem(slice(None))).tolist() == [1, 2, 3, 4, 5, 6]
    await store.delete_dir("c")
    assert sorted([k async for k in store.list()]) == ["x/y", "zarr.json"]
