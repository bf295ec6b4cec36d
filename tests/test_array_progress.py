"""Progress of long slices through the async API (the blocking twin delegates to it)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

import pyrlang_zarr as pz
from pyrlang_zarr.progress import Progress
from pyrlang_zarr.testing.cluster import LocalCluster

pytestmark = pytest.mark.erlang


async def test_async_slices_report_progress_in_parts(cluster: LocalCluster) -> None:
    arr = await pz.create(
        array_id=f"progress-{uuid.uuid4().hex[:8]}",
        shape=(40, 30),
        chunks=(10, 10),
        dtype="float64",
        node=cluster.nodes[0],
        cookie=cluster.cookie,
        nodes=cluster.nodes,
    )
    data = np.random.default_rng(5).random((40, 30))
    wrote: list[Progress] = []
    await arr.set_slice(data, progress=wrote.append, part_chunks=3)
    assert wrote[0].chunks_done == 0 and wrote[-1].finished
    assert wrote[-1].chunks_done == wrote[-1].chunks_total == 12
    assert wrote[-1].bytes_done == data.nbytes
    read: list[Progress] = []
    got = await arr.get_slice((5, 5), (35, 25), progress=read.append, part_chunks=2)
    assert np.array_equal(got, data[5:35, 5:25])
    assert read[-1].finished and read[-1].chunks_done == read[-1].chunks_total > 1
    # without progress: one transaction, no callback
    await arr.set_slice(np.zeros((40, 30)), progress=None)
    assert not np.any(await arr.get_slice())
