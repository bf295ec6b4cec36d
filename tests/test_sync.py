"""pyrlang_zarr.sync: the blocking twin of create/open, numpy-style indexing, progress."""

from __future__ import annotations

import inspect
import itertools
import uuid
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import pyrlang_zarr as pz
import pyrlang_zarr.sync as pzs
from pyrlang_zarr.progress import Progress, slice_parts
from pyrlang_zarr.sync import _Box
from pyrlang_zarr.testing.cluster import LocalCluster

pytestmark = pytest.mark.erlang


def opts(c: LocalCluster) -> dict[str, Any]:
    return {"node": c.nodes[0], "cookie": c.cookie, "nodes": c.nodes}


def new_id() -> str:
    return f"sync-{uuid.uuid4().hex[:8]}"


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_an_index_reads_as_numpy_reads_it(data: st.DataObject) -> None:
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))
    index = data.draw(hnp.basic_indices(shape, allow_newaxis=False, allow_ellipsis=True))
    ref = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    box = _Box(index, shape)
    block = ref[tuple(slice(a, b) for a, b in zip(box.start, box.stop, strict=True))]
    assert np.array_equal(block[box.post], ref[index])
    assert block.shape == box.box_shape


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_slice_parts_cover_the_region_once(data: st.DataObject) -> None:
    ndim = data.draw(st.integers(1, 3))
    shape = data.draw(st.lists(st.integers(1, 12), min_size=ndim, max_size=ndim))
    grid = data.draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim))
    start = [data.draw(st.integers(0, n)) for n in shape]
    stop = [data.draw(st.integers(a, n)) for a, n in zip(start, shape, strict=True)]
    budget = data.draw(st.integers(1, 10))
    seen = np.zeros(shape, dtype=int)
    for a, b in slice_parts(start, stop, grid, budget):
        seen[tuple(slice(x, y) for x, y in zip(a, b, strict=True))] += 1
        chunks = np.prod([-(-y // c) - x // c for x, y, c in zip(a, b, grid, strict=True)])
        assert chunks <= budget
    want = np.zeros(shape, dtype=int)
    want[tuple(slice(a, b) for a, b in zip(start, stop, strict=True))] = 1
    assert np.array_equal(seen, want)


def test_create_and_open_take_the_async_arguments() -> None:
    assert inspect.signature(pzs.create) == inspect.signature(pz.create)
    assert inspect.signature(pzs.open) == inspect.signature(pz.open)
    assert "Blocking" in (pzs.create.__doc__ or "")


def test_blocking_round_trip_and_indexing(cluster: LocalCluster) -> None:
    aid = new_id()
    arr = pzs.create(aid, shape=(40, 30), chunks=(8, 7), dtype="int32", **opts(cluster))
    assert isinstance(arr, pzs.Array)
    assert (arr.shape, arr.chunks, arr.ndim, len(arr)) == ((40, 30), (8, 7), 2, 40)
    assert arr.dtype == np.dtype("int32")
    ref = np.arange(1200, dtype="int32").reshape(40, 30)
    arr[:] = ref
    writes: list[tuple[Any, Any]] = [
        ((slice(3, 9), 4), 7),
        (-1, -1),
        ((slice(None, None, -1), 0), np.arange(40)),
        ((Ellipsis, slice(28, None)), np.array([5, 6])),
        ((slice(10, 12), slice(10, 12)), np.full((2, 2), 9)),
    ]
    for key, value in writes:
        arr[key] = value
        ref[key] = value
    reads: list[Any] = [
        (slice(None), slice(None)),
        (5,),
        (-3, slice(2, 25, 4)),
        (slice(None, None, -3), Ellipsis),
        (Ellipsis, 29),
        (slice(7, 7), slice(None)),
        (39, -30),
    ]
    for key in reads:
        assert np.array_equal(arr[key], ref[key]), key
    again = pzs.open(aid, node=cluster.nodes[1], cookie=cluster.cookie)
    assert np.array_equal(np.asarray(again), ref)
    assert np.array_equal(again.get_slice((0, 0), (2, 3)), ref[:2, :3])
    again.set_slice(np.zeros((2, 3), dtype="int32"), (0, 0), (2, 3))
    assert not arr[0:2, 0:3].any()
    assert np.array_equal(arr.zarr[5:7, 5:7], ref[5:7, 5:7])


def test_indexing_errors_are_numpy_like(cluster: LocalCluster) -> None:
    arr = pzs.create(new_id(), shape=(10, 10), chunks=(5, 5), dtype="float64", **opts(cluster))
    with pytest.raises(IndexError, match="out of bounds"):
        arr[10]
    with pytest.raises(IndexError, match="too many indices"):
        arr[0, 0, 0]
    with pytest.raises(TypeError, match="fancy indexing"):
        arr[[1, 2]]
    with pytest.raises(ValueError, match="contiguous"):
        arr[::2] = 1.0
    with pytest.raises(ValueError, match="broadcast"):
        arr[0:2, 0:2] = np.ones(3)
    with pytest.raises(TypeError, match="does not fit"):
        arr[0, 0] = "text"
    assert not np.asarray(arr).any()  # nothing was written by the refused calls


async def test_works_inside_a_running_event_loop(cluster: LocalCluster) -> None:
    # as in a notebook: a loop is running in this thread and the blocking API is called
    arr = pzs.create(new_id(), shape=(4,), chunks=(2,), dtype="int64", **opts(cluster))
    arr[1:3] = [5, 6]
    assert arr[:].tolist() == [0, 5, 6, 0]


def test_progress_reports_parts_and_keeps_values(cluster: LocalCluster) -> None:
    arr = pzs.create(new_id(), shape=(60, 50), chunks=(10, 10), dtype="float32", **opts(cluster))
    data = np.random.default_rng(3).random((60, 50)).astype("float32")
    seen: list[Progress] = []
    arr.set_slice(data, progress=seen.append, part_chunks=4)
    assert seen[0].chunks_done == 0 and seen[-1].finished
    assert seen[-1].chunks_done == seen[-1].chunks_total == 30
    # 12 parts, 4 of each row's 5 chunks and then 1, done in any order
    steps = [b.chunks_done - a.chunks_done for a, b in itertools.pairwise(seen[:-1])]
    assert sorted(steps) == [1] * 6 + [4] * 6
    assert seen[-1].bytes_done == data.nbytes == seen[-1].bytes_total
    got: list[Progress] = []
    assert np.array_equal(arr.get_slice((5, 5), (55, 45), progress=got.append), data[5:55, 5:45])
    assert got[-1].finished and got[-1].chunks_done == got[-1].chunks_total


def test_reprs(cluster: LocalCluster) -> None:
    arr = pzs.create(new_id(), shape=(8, 8), chunks=(4, 4), dtype="uint8", **opts(cluster))
    arr[:4, :4] = 1
    assert arr.url in repr(arr) and arr.url.startswith(f"mnesia://{cluster.nodes[0]}/")
    assert "MnesiaStore" in str(arr.info)
    assert "Chunks Initialized : 1" in str(arr.info_complete())
    html = arr._repr_html_()
    assert arr.url in html and "Replicas" in html
