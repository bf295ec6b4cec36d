"""Arrays that cross between ExZarr (Elixir) and Python, both ways.

ExZarr's side is played by Erlang code on the cluster that writes records exactly as
ExZarr's Mnesia backend does (``ExZarr.Storage.Backend.Mnesia``, 1.0.1): one
``mnesia:transaction`` per chunk at ``{Id, {chunk, Idx}}``, the metadata text
``ExZarr.save/2`` writes (Jason, pretty) at ``{Id, metadata}``, chunk bytes as ExZarr
compresses them (zstd frames at level 3 for v2 / the configured level for v3, byte-identical
to numcodecs'; zlib by Erlang's own ``zlib:compress/1``). Python-written arrays are read back
the way ExZarr's read path does, by Erlang code alone (``LocalCluster.erl_eval`` runs it from
a throwaway ``erl`` node): ``{Id, {chunk, Idx}}`` look-ups in transactions, the listing
``select`` ExZarr uses, ``zlib:uncompress/1`` and binary pattern matching of the floats.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import numcodecs  # type: ignore[import-untyped]
import numpy as np
import pytest
import xarray as xr
import zarr
import zarr.core.sync
from zarr.core.buffer import cpu, default_buffer_prototype

import pyrlang_zarr as pz
from pyrlang_zarr import Atom, MnesiaStore, Node
from pyrlang_zarr.erldist.node_registry import shared_node
from pyrlang_zarr.exzarr import erlang_float, jason_pretty, zarr_json_text, zarray_text
from pyrlang_zarr.mnesia import ensure_mnesia
from pyrlang_zarr.testing.cluster import LocalCluster
from tests.erl import parse

pytestmark = pytest.mark.erlang

TAB = "exzarr_storage"  # made the way ExZarr makes it: a set, attributes [key, data]

# ExZarr.Storage.Backend.Mnesia, as Erlang
EX_CREATE_TABLE = "mnesia:create_table(Tab, [{attributes, [key, data]}, {disc_copies, Nodes}])."
EX_WRITE_CHUNK = "mnesia:transaction(fun() -> mnesia:write({Tab, {Id, {chunk, Idx}}, Data}) end)."
EX_WRITE_METADATA = "mnesia:transaction(fun() -> mnesia:write({Tab, {Id, metadata}, Json}) end)."
EX_LIST_CHUNKS = (
    "mnesia:transaction(fun() -> "
    "mnesia:select(Tab, [{{Tab, {Id, {chunk, '$1'}}, '_'}, [], ['$1']}]) end)."
)


async def erl(node: Node, peer: str, expr: str, **bindings: Any) -> Any:
    """``expr`` evaluated on ``peer`` by ``erl_eval`` with Erlang variables ``bindings``."""
    exprs = await parse(node, peer, expr)
    binds = sorted((Atom(k), v) for k, v in bindings.items())
    value = await node.rpc(peer, "erl_eval", "exprs", [exprs, binds])
    assert value[0] == Atom("value"), value
    return value[1]


@pytest.fixture(scope="module")
def table(cluster: LocalCluster) -> Iterator[str]:
    async def setup() -> None:
        node = shared_node(cluster.cookie)
        await ensure_mnesia(node, cluster.nodes)
        nodes = [Atom(n) for n in cluster.nodes]
        created = await erl(node, cluster.nodes[0], EX_CREATE_TABLE, Tab=Atom(TAB), Nodes=nodes)
        assert created in ((Atom("atomic"), Atom("ok")),) or created[1][0] == Atom("already_exists")
        waited = await node.rpc(cluster.nodes[1], "mnesia", "wait_for_tables", [[Atom(TAB)], 10000])
        assert waited == Atom("ok")

    zarr.core.sync.sync(setup())
    yield TAB


def opts(cluster: LocalCluster) -> dict[str, Any]:
    return {"node": cluster.nodes[0], "cookie": cluster.cookie, "table_name": TAB}


def chunk_blocks(data: np.ndarray, chunks: tuple[int, ...]) -> dict[tuple[int, ...], bytes]:
    """Every chunk of ``data``, full size (edges padded with 0), C order, little-endian."""
    grid = [range(-(-n // c)) for n, c in zip(data.shape, chunks, strict=True)]
    out = {}
    for idx in np.ndindex(*(len(g) for g in grid)):
        block = np.zeros(chunks, dtype=data.dtype.newbyteorder("<"))
        region = tuple(slice(i * c, (i + 1) * c) for i, c in zip(idx, chunks, strict=True))
        part = data[region]
        block[tuple(slice(0, n) for n in part.shape)] = part
        out[idx] = block.tobytes()
    return out


async def exzarr_writes(
    cluster: LocalCluster,
    array_id: Any,
    data: np.ndarray,
    chunks: tuple[int, ...],
    *,
    version: int = 2,
    compressor: str | None = "zstd",
    skip: tuple[tuple[int, ...], ...] = (),
) -> None:
    """Write ``data`` as ExZarr does: each chunk in its own transaction, then
    ``ExZarr.save/2``'s metadata. Chunks in ``skip`` are never written."""
    node = shared_node(cluster.cookie)
    peer = cluster.nodes[1]
    ident = array_id if isinstance(array_id, Atom) else array_id.encode()
    for idx, raw in chunk_blocks(data, chunks).items():
        if idx in skip:
            continue
        if compressor == "zlib":  # ExZarr calls Erlang's zlib: let Erlang compress
            written = await erl(
                node,
                peer,
                "mnesia:transaction(fun() -> "
                "mnesia:write({Tab, {Id, {chunk, Idx}}, zlib:compress(Raw)}) end).",
                Tab=Atom(TAB),
                Id=ident,
                Idx=idx,
                Raw=raw,
            )
        else:
            level = 3 if version == 2 else 5  # v2: level 3 whatever the metadata says
            payload = raw if compressor is None else numcodecs.Zstd(level=level).encode(raw)
            written = await erl(
                node, peer, EX_WRITE_CHUNK, Tab=Atom(TAB), Id=ident, Idx=idx, Data=bytes(payload)
            )
        assert written == (Atom("atomic"), Atom("ok"))
    name = data.dtype.name
    if version == 2:
        text = zarray_text(data.shape, chunks, name, compressor=compressor)
    else:
        text = zarr_json_text(data.shape, chunks, name, codec=compressor)
    saved = await erl(node, peer, EX_WRITE_METADATA, Tab=Atom(TAB), Id=ident, Json=text)
    assert saved == (Atom("atomic"), Atom("ok"))


# -- the bytes ExZarr writes ----------------------------------------------------------------


def test_jason_pretty_is_jasons_formatter() -> None:
    # Jason.Formatter's own documented example, and its handling of empty containers
    assert (
        jason_pretty({"a": {"b": [1, 2]}})
        == '{\n  "a": {\n    "b": [\n      1,\n      2\n    ]\n  }\n}'
    )
    assert (
        jason_pretty({"a": {}, "b": [], "c": None}) == '{\n  "a": {},\n  "b": [],\n  "c": null\n}'
    )
    # what ExZarr.save/2 wrote for ExZarr.create(shape: {4, 4}, chunks: {2, 2}) (float64,
    # the defaults): map keys sorted as Erlang sorts atoms, compressor level 5
    assert zarray_text((4, 4), (2, 2), "float64") == (
        b'{\n  "chunks": [\n    2,\n    2\n  ],\n  "compressor": {\n    "id": "zstd",\n'
        b'    "level": 5\n  },\n  "dtype": "<f8",\n  "fill_value": 0,\n  "filters": null,\n'
        b'  "order": "C",\n  "shape": [\n    4,\n    4\n  ],\n  "zarr_format": 2\n}'
    )
    v3 = json.loads(zarr_json_text((4,), (2,), "int32"))
    assert list(v3) == sorted(v3) and v3["chunk_key_encoding"] == {"name": "default"}
    assert v3["codecs"] == [
        {"configuration": {}, "name": "bytes"},
        {"configuration": {"level": 5}, "name": "zstd"},
    ]


async def test_floats_as_jason_writes_them(cluster: LocalCluster, node: Node) -> None:
    values = [
        0.0,
        -0.0,
        1.0,
        1.5,
        -2.25,
        0.1,
        1e-05,
        0.0001,
        123456.0,
        1e10,
        1.2345e21,
        1e22,
        3.141592653589793,
        5e-324,
        1.7976931348623157e308,
        255.0,
        1e15,
        1e16,
        123e-20,
    ]
    ours = [erlang_float(v) for v in values]
    theirs = await erl(
        node, cluster.nodes[0], "[list_to_binary(io_lib_format:fwrite_g(F)) || F <- Fs].", Fs=values
    )
    assert ours == [t.decode() for t in theirs]


# -- ExZarr -> Python -------------------------------------------------------------------------


@pytest.mark.parametrize("compressor", ["zstd", "zlib", None])
async def test_exzarr_v2_array_reads_in_python(
    cluster: LocalCluster, table: str, compressor: str | None
) -> None:
    aid = f"ex2-{uuid.uuid4().hex[:8]}"
    data = np.arange(35, dtype="float64").reshape(5, 7) * 1.5
    await exzarr_writes(cluster, aid, data, (2, 3), compressor=compressor, skip=((2, 2),))
    expected = data.copy()
    expected[4, 6] = 0.0  # chunk (2, 2) never written: ExZarr's fill value, 0
    arr = await pz.open(array_id=aid, **opts(cluster))
    assert arr.shape == (5, 7) and arr.chunks == (2, 3) and arr.zarr.metadata.zarr_format == 2
    assert np.array_equal(await arr.get_slice(), expected)
    store = MnesiaStore(aid, **opts(cluster))
    assert np.array_equal(zarr.open_array(store, mode="r")[:], expected)
    assert xr.DataArray(zarr.open_array(store, mode="r"), dims=("y", "x")).sum() == expected.sum()
    keys = sorted([k async for k in store.list()])
    assert keys == sorted([".zarray", *[f"{i}.{j}" for i in range(3) for j in range(3)][:-1]])
    assert [k async for k in store.list_prefix(".z")] == [".zarray"]


async def test_exzarr_v3_array_reads_in_python(cluster: LocalCluster, table: str) -> None:
    aid = f"ex3-{uuid.uuid4().hex[:8]}"
    data = np.arange(24, dtype="int32").reshape(4, 6) - 7
    await exzarr_writes(cluster, aid, data, (2, 4), version=3)
    arr = await pz.open(array_id=aid, **opts(cluster))
    assert arr.zarr.metadata.zarr_format == 3
    assert np.array_equal(await arr.get_slice(), data)
    store = MnesiaStore(aid, **opts(cluster))
    assert np.array_equal(zarr.open_array(store, mode="r")[:], data)
    assert np.array_equal(xr.DataArray(zarr.open_array(store, mode="r")).values, data)
    keys = sorted([k async for k in store.list()])
    assert keys == ["c/0/0", "c/0/1", "c/1/0", "c/1/1", "zarr.json"]


async def test_exzarr_array_keyed_by_an_atom(cluster: LocalCluster, table: str) -> None:
    aid = Atom(f"ex_atom_{uuid.uuid4().hex[:8]}")
    data = np.arange(6, dtype="uint16")
    await exzarr_writes(cluster, aid, data, (4,))
    arr = await pz.open(array_id=aid, **opts(cluster))
    assert np.array_equal(await arr.get_slice(), data)
    await arr.set_slice(np.array([9, 9], "uint16"), start=(4,), stop=(6,))
    out = cluster.erl_eval(
        0,
        f"{{atomic, [{{_, _, D}}]}} = mnesia:transaction(fun() -> "
        f"mnesia:read({TAB}, {{{aid}, {{chunk, {{1}}}}}}) end), byte_size(D).",
    )
    assert int(out) > 0
    assert MnesiaStore(aid, **opts(cluster)) != MnesiaStore(str(aid), **opts(cluster))


# -- Python -> ExZarr -------------------------------------------------------------------------

ERLANG_READ_V2 = """
Tab = {tab}, Id = <<"{aid}">>,
{{atomic, [{{Tab, {{Id, metadata}}, Meta}}]}} =
    mnesia:transaction(fun() -> mnesia:read(Tab, {{Id, metadata}}) end),
{{atomic, Indices}} = mnesia:transaction(fun() ->
    mnesia:select(Tab, [{{{{Tab, {{Id, {{chunk, '$1'}}}}, '_'}}, [], ['$1']}}]) end),
Decode = fun(D) -> {decode} end,
Chunks = [{{I, [X || <<X:64/float-little>> <= Decode(D)]}} ||
          I <- lists:sort(Indices),
          {{atomic, [{{_, _, D}}]}} <- [mnesia:transaction(fun() ->
              mnesia:read(Tab, {{Id, {{chunk, I}}}}) end)]],
{{Meta, Chunks}}.
"""


def _erlang_binary_text(out: str) -> str:
    """The first binary in ``out`` (as ``~p`` prints it), as text."""
    found = re.match(r'\{<<("(?:[^"\\]|\\.)*")>>,', out)
    assert found, out[:200]
    return str(json.loads(found.group(1)))


def _erlang_chunks(out: str) -> dict[tuple[int, ...], list[float]]:
    chunks = {}
    for idx, values in re.findall(r"\{\{([\d,]+)\},\[([^\]]*)\]\}", out.replace(" ", "")):
        key = tuple(int(i) for i in idx.split(","))
        chunks[key] = [float(v) for v in values.split(",")] if values else []
    return chunks


@pytest.mark.parametrize("compressor", ["zlib", None])
async def test_python_exzarr_array_reads_in_erlang(
    cluster: LocalCluster, table: str, compressor: str | None
) -> None:
    aid = f"py2-{uuid.uuid4().hex[:8]}"
    arr = await pz.create(
        array_id=aid,
        shape=(3, 5),
        chunks=(2, 2),
        dtype="float64",
        exzarr=True,
        compressor=compressor,
        **opts(cluster),
    )
    data = np.arange(1.0, 16.0).reshape(3, 5) / 4
    await arr.set_slice(data)
    decode = "zlib:uncompress(D)" if compressor == "zlib" else "D"
    out = cluster.erl_eval(1, ERLANG_READ_V2.format(tab=TAB, aid=aid, decode=decode))
    meta = zarray_text((3, 5), (2, 2), "float64", compressor=compressor)
    assert _erlang_binary_text(out) == meta.decode()  # ExZarr.save/2's text, byte for byte
    chunks = _erlang_chunks(out)
    assert sorted(chunks) == [(i, j) for i in range(2) for j in range(3)]
    for idx, raw in chunk_blocks(data, (2, 2)).items():
        assert chunks[idx] == np.frombuffer(raw, "<f8").tolist()


async def test_python_zstd_chunks_are_frames_exzarr_decodes(
    cluster: LocalCluster, table: str, node: Node
) -> None:
    aid = f"pyz-{uuid.uuid4().hex[:8]}"
    arr = await pz.create(
        array_id=aid, shape=(6,), chunks=(4,), dtype="int64", exzarr=True, **opts(cluster)
    )
    data = np.array([1, -2, 3, -4, 5, -6], "int64")
    await arr.set_slice(data)
    listed = await erl(node, cluster.nodes[1], EX_LIST_CHUNKS, Tab=Atom(TAB), Id=aid.encode())
    assert sorted(listed[1]) == [(0,), (1,)]
    for i in range(2):
        found = await erl(
            node,
            cluster.nodes[1],
            "mnesia:transaction(fun() -> mnesia:read(Tab, {Id, {chunk, Idx}}) end).",
            Tab=Atom(TAB),
            Id=aid.encode(),
            Idx=(i,),
        )
        frame = found[1][0][2]
        assert frame[:4] == b"\x28\xb5\x2f\xfd"  # one zstd frame
        assert frame[4] & 0xC0 or frame[4] & 0x20  # with its content size
        block = np.zeros(4, "<i8")
        block[: len(data[4 * i : 4 * i + 4])] = data[4 * i : 4 * i + 4]
        assert numcodecs.Zstd().decode(frame) == block.tobytes()


@pytest.mark.parametrize("zarr_format", [2, 3])
async def test_python_default_arrays_use_exzarrs_records(
    cluster: LocalCluster, table: str, zarr_format: int
) -> None:
    """Any root array Python makes: the metadata ExZarr reads at {Id, metadata} and the
    chunks at {Id, {chunk, Idx}} (uncompressed here, so Erlang alone decodes them)."""
    aid = f"pyd{zarr_format}-{uuid.uuid4().hex[:8]}"
    compressors: Any = None
    arr = await pz.create(
        array_id=aid,
        shape=(2, 3),
        chunks=(2, 2),
        dtype="<f8",
        zarr_format=zarr_format,
        compressors=compressors,
        **opts(cluster),
    )
    data = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    await arr.set_slice(data)
    out = cluster.erl_eval(0, ERLANG_READ_V2.format(tab=TAB, aid=aid, decode="D"))
    meta = json.loads(_erlang_binary_text(out))
    assert meta["zarr_format"] == zarr_format and meta["shape"] == [2, 3]
    chunks = _erlang_chunks(out)
    assert chunks == {(0, 0): [1.0, 2.0, 4.0, 5.0], (0, 1): [3.0, 0.0, 6.0, 0.0]}


async def test_python_never_moves_an_exzarr_chunk(cluster: LocalCluster, table: str) -> None:
    """Rewriting zarr.json with another chunk key spelling re-keys nothing: ExZarr still
    finds its chunk where it wrote it, and Python spells it the new way."""
    aid = f"keep-{uuid.uuid4().hex[:8]}"
    data = np.arange(4, dtype="float32")
    await exzarr_writes(cluster, aid, data, (4,), version=3)
    store = MnesiaStore(aid, **opts(cluster))
    got = await store.get("zarr.json", default_buffer_prototype())
    assert got is not None
    doc = json.loads(got.to_bytes())
    doc["chunk_key_encoding"] = {"name": "default", "configuration": {"separator": "."}}
    await store.set("zarr.json", cpu.Buffer.from_bytes(json.dumps(doc).encode()))
    assert sorted([k async for k in store.list()]) == ["c.0", "zarr.json"]
    out = cluster.erl_eval(
        1,
        f"{{atomic, Found}} = mnesia:transaction(fun() -> mnesia:read({TAB}, "
        f'{{<<"{aid}">>, {{chunk, {{0}}}}}}) end), length(Found).',
    )
    assert out == "1"
    assert np.array_equal(zarr.open_array(store, mode="r")[:], data)


async def test_records_the_store_cannot_name_are_never_touched(
    cluster: LocalCluster, table: str, node: Node
) -> None:
    aid = f"junk-{uuid.uuid4().hex[:8]}"
    arr = await pz.create(array_id=aid, shape=(4, 4), chunks=(2, 2), **opts(cluster))
    await arr.set_slice(np.ones((4, 4)))
    junk = [
        (Atom("chunk"), Atom("foo")),
        (Atom("chunk"), (0, Atom("x"))),
        42,
        (Atom("a"), Atom("b")),
        (Atom("chunk"), (1, 2, 3)),  # another rank: cannot be named while the array is 2-d
        (7, 8, 9),  # the earlier chunk form, another rank
    ]
    for x in junk:
        await node.rpc(
            cluster.nodes[0], "mnesia", "dirty_write", [(Atom(TAB), (aid.encode(), x), b"junk")]
        )
    store = MnesiaStore(aid, **opts(cluster))
    keys = sorted([k async for k in store.list()])
    assert keys == ["c/0/0", "c/0/1", "c/1/0", "c/1/1", "zarr.json"]
    assert await store.getsize_prefix("") == sum([await store.getsize(k) for k in keys])
    await store.delete_dir("c")
    await store.delete("c/1/2/3")
    got = await store.get("zarr.json", default_buffer_prototype())
    assert got is not None
    doc = got.to_bytes()
    await store.set("zarr.json", cpu.Buffer.from_bytes(doc.replace(b'"/"', b'"."')))

    async def left() -> set[Any]:
        spec: list[Any] = [((Atom(TAB), (aid.encode(), Atom("$1")), Atom("_")), [], [Atom("$1")])]
        return set(await node.rpc(cluster.nodes[0], "mnesia", "dirty_select", [Atom(TAB), spec]))

    assert await left() == set(junk) | {Atom("metadata")}
    await store.clear()  # the whole array: chunk records of any rank go too
    assert await left() == set(junk) - {(Atom("chunk"), (1, 2, 3)), (7, 8, 9)}


# -- what an ExZarr-compatible array refuses, before anything is sent -------------------------


async def test_exzarr_create_refuses_what_exzarr_cannot_share(cluster: LocalCluster) -> None:
    never = f"pz_never_{uuid.uuid4().hex[:6]}"
    base: dict[str, Any] = {
        "cookie": cluster.cookie,
        "nodes": cluster.nodes,
        "table_name": never,
        "exzarr": True,
    }
    cases: list[tuple[type[Exception], str, dict[str, Any]]] = [
        (ValueError, "no dtype", {"dtype": "complex128"}),
        (ValueError, "no dtype", {"dtype": "bool"}),
        (ValueError, "big-endian", {"dtype": ">f8"}),
        (ValueError, "not finite", {"fill_value": float("nan")}),
        (ValueError, "not finite", {"fill_value": float("inf")}),
        (TypeError, "finite number", {"fill_value": None}),
        (ValueError, "not an integer", {"dtype": "int32", "fill_value": 1.5}),
        (ValueError, "does not fit", {"dtype": "uint8", "fill_value": 300}),
        (ValueError, "compressor", {"compressor": "lz4"}),
        (ValueError, "zarr v2", {"zarr_format": 3}),
        (ValueError, "no other zarr options", {"filters": [numcodecs.Delta("<f8")]}),
        (ValueError, "positive length", {"shape": (0, 4)}),
        (ValueError, "C order", {"order": "F"}),
    ]
    for error, match, kw in cases:
        args: dict[str, Any] = {"shape": (4, 4), "chunks": (2, 2), **base, **kw}
        with pytest.raises(error, match=match):
            await pz.create(array_id="never", **args)
    tables = await shared_node(cluster.cookie).rpc(
        cluster.nodes[0], "mnesia", "system_info", [Atom("tables")]
    )
    assert Atom(never) not in tables


async def test_create_checks_everything_before_setting_up_a_table(cluster: LocalCluster) -> None:
    never = f"pz_never_{uuid.uuid4().hex[:6]}"
    base: dict[str, Any] = {"cookie": cluster.cookie, "nodes": cluster.nodes, "table_name": never}
    with pytest.raises(ValueError, match="Object"):
        await pz.create(array_id="x", shape=(4,), chunks=(2,), dtype="O", **base)
    with pytest.raises(TypeError, match="abc"):
        await pz.create(array_id="x", shape=(4,), chunks=(2,), fill_value="abc", **base)
    tables = await shared_node(cluster.cookie).rpc(
        cluster.nodes[0], "mnesia", "system_info", [Atom("tables")]
    )
    assert Atom(never) not in tables
