"""Uncompressed arrays: set_slice and get_slice without zarr's codec pipeline.

Whole chunks of an array whose only codec is ``bytes`` are written as the values' bytes and
read by copying them into the result (``rawchunks.py``). These tests hold that path to what
zarr would have stored and returned: the same record bytes (checked on the Erlang side),
edge chunks padded with the fill value, chunks all of the fill value deleted, missing
chunks read as the fill value, the byte order of the codec kept; and that it really skips
the pipeline (zarr's ``bytes`` codec made to fail still lets whole-chunk slices through).
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.codecs import BytesCodec

import pyrlang_zarr as pz
from pyrlang_zarr import Atom
from pyrlang_zarr.erldist.node_registry import shared_node
from pyrlang_zarr.testing.cluster import LocalCluster

pytestmark = pytest.mark.erlang

TAB = "zarr_storage"


async def chunk_record(c: LocalCluster, array_id: str, idx: tuple[int, ...]) -> bytes | None:
    """The bytes of chunk ``idx`` as Mnesia holds them (ExZarr's record), read in Erlang."""
    node = shared_node(c.cookie)
    key = (array_id.encode(), (Atom("chunk"), idx))
    found = await node.rpc(c.nodes[1], "mnesia", "dirty_read", [Atom(TAB), key])
    return None if not found else bytes(found[0][2])


async def make(c: LocalCluster, shape: tuple[int, ...], chunks: tuple[int, ...], **kw: Any) -> Any:
    return await pz.create(
        array_id=f"raw-{uuid.uuid4().hex[:8]}",
        shape=shape,
        chunks=chunks,
        node=c.nodes[0],
        cookie=c.cookie,
        nodes=c.nodes,
        compressors=None,
        **kw,
    )


async def test_whole_chunks_are_stored_as_zarr_stores_them(cluster: LocalCluster) -> None:
    arr = await make(cluster, (10, 7), (4, 4), dtype="float64", fill_value=-1.0)
    data = np.random.default_rng(3).random((10, 7))
    await arr.set_slice(data)  # every chunk whole; the last row and column of chunks are edges
    assert await chunk_record(cluster, arr.array_id, (0, 0)) == data[:4, :4].tobytes()
    edge = np.full((4, 4), -1.0)
    edge[:2, :3] = data[8:, 4:]
    assert await chunk_record(cluster, arr.array_id, (2, 1)) == edge.tobytes()
    # zarr itself, through the store, reads what we wrote; and we read it back
    store = pz.MnesiaStore(arr.array_id, node=cluster.nodes[1], cookie=cluster.cookie)
    assert np.array_equal(zarr.open_array(store, mode="r")[:], data)
    assert np.array_equal(await arr.get_slice(), data)
    assert np.array_equal(await arr.get_slice((3, 2), (9, 6)), data[3:9, 2:6])


async def test_chunks_of_the_fill_value_are_deleted_not_written(cluster: LocalCluster) -> None:
    arr = await make(cluster, (8, 12), (4, 4), dtype="float32", fill_value=0.0)
    data = np.arange(1, 97, dtype="float32").reshape(8, 12)
    await arr.set_slice(data)
    assert await chunk_record(cluster, arr.array_id, (1, 1)) is not None
    block = np.zeros((4, 12), dtype="float32")
    block[3, 7] = 5.0  # chunk (1, 1) starts with the fill value but is not all of it
    block[:, 8:] = -0.0  # chunk (1, 2): -0.0 is not the fill value 0.0 for zarr (bit patterns)
    await arr.set_slice(block, start=(4, 0), stop=(8, 12))
    assert await chunk_record(cluster, arr.array_id, (1, 0)) is None  # all fill: deleted
    assert await chunk_record(cluster, arr.array_id, (1, 1)) == block[:, 4:8].tobytes()
    assert await chunk_record(cluster, arr.array_id, (1, 2)) == block[:, 8:].tobytes()
    got = await arr.get_slice()
    assert np.array_equal(got[:4], data[:4]) and np.array_equal(got[4:], block)
    assert np.signbit(got[4:, 8:]).all()


async def test_missing_chunks_read_as_the_fill_value_and_byte_order_is_kept(
    cluster: LocalCluster,
) -> None:
    arr = await make(
        cluster,
        (6, 6),
        (3, 3),
        dtype="int32",
        fill_value=7,
        serializer=BytesCodec(endian="big"),
    )
    data = np.arange(9, dtype="int32").reshape(3, 3) + 100
    await arr.set_slice(data, start=(3, 3), stop=(6, 6))
    assert await chunk_record(cluster, arr.array_id, (1, 1)) == data.astype(">i4").tobytes()
    expected = np.full((6, 6), 7, dtype="int32")
    expected[3:, 3:] = data
    got = await arr.get_slice()
    assert got.dtype == np.dtype("int32") and np.array_equal(got, expected)
    store = pz.MnesiaStore(arr.array_id, node=cluster.nodes[0], cookie=cluster.cookie)
    assert np.array_equal(zarr.open_array(store, mode="r")[:], expected)


async def test_whole_chunks_skip_zarrs_codec_pipeline(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    arr = await make(cluster, (8, 4), (4, 4), dtype="uint16")
    data = np.arange(32, dtype="uint16").reshape(8, 4)

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("zarr's bytes codec ran")

    monkeypatch.setattr(BytesCodec, "_encode_single", refuse)
    monkeypatch.setattr(BytesCodec, "_decode_single", refuse)
    await arr.set_slice(data)
    assert np.array_equal(await arr.get_slice(), data)
    assert np.array_equal(await arr.get_slice((1, 1), (7, 3)), data[1:7, 1:3])
    with pytest.raises(AssertionError, match="bytes codec ran"):  # a partial chunk merges
        await arr.set_slice(data[:2], start=(0, 0), stop=(2, 4))
    monkeypatch.undo()
    await arr.set_slice(data[:2] + 1, start=(0, 0), stop=(2, 4))  # through zarr, as before
    expected = data.copy()
    expected[:2] += 1
    assert np.array_equal(await arr.get_slice(), expected)
    assert await chunk_record(cluster, arr.array_id, (0, 0)) == expected[:4].tobytes()


async def test_whole_rows_of_chunks_are_received_straight_into_the_result(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk that is whole in the region and full rows of the result lands in it from the
    socket; every other chunk is copied as before; the values are what Mnesia holds."""
    from pyrlang_zarr.rawchunks import SliceLanding

    landed: list[int] = []
    real = SliceLanding.place

    def counting(self: SliceLanding, index: int, nbytes: int) -> memoryview | None:
        view = real(self, index, nbytes)
        landed.append(view is not None)
        return view

    monkeypatch.setattr(SliceLanding, "place", counting)
    arr = await make(cluster, (64, 4096), (16, 4096), dtype="float64", fill_value=-1.0)
    data = np.random.default_rng(5).random((64, 4096))
    await arr.set_slice(data[:48], start=(0, 0), stop=(48, 4096))  # chunk 3 stays missing
    # chunk 1 rewritten from the Erlang side, as another client would
    theirs = np.full((16, 4096), 2.5)
    node = shared_node(cluster.cookie)
    key = (arr.array_id.encode(), (Atom("chunk"), (1, 0)))
    await node.rpc(cluster.nodes[-1], "mnesia", "dirty_write", [(Atom(TAB), key, theirs.tobytes())])
    expected = data.copy()
    expected[16:32] = theirs
    expected[48:] = -1.0

    got = await arr.get_slice()
    assert np.array_equal(got, expected) and got.flags.c_contiguous
    assert sum(landed) == 3  # chunks 0-2 landed; the missing one is filled
    for i in range(3):
        assert (
            await chunk_record(cluster, arr.array_id, (i, 0))
            == got[16 * i : 16 * (i + 1)].tobytes()
        )
    landed.clear()
    assert np.array_equal(await arr.get_slice((8, 0), (40, 4096)), expected[8:40])
    assert sum(landed) == 1  # chunk 1 whole; 0 and 2 in part: copied
    landed.clear()
    assert np.array_equal(await arr.get_slice((0, 5), (64, 4000)), expected[:, 5:4000])
    assert landed == []  # not full rows: nothing offered a place
