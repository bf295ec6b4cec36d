"""Notebook-friendly summaries of the async ``MnesiaArray``, the same as the blocking twin's."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from zarr.core._info import ArrayInfo

import pyrlang_zarr as pz
import pyrlang_zarr.sync as pzs
from pyrlang_zarr.testing.cluster import LocalCluster

pytestmark = pytest.mark.erlang


async def test_info_and_html_of_an_async_array(cluster: LocalCluster) -> None:
    aid = f"info-{uuid.uuid4().hex[:8]}"
    arr = await pz.create(
        aid,
        shape=(300, 200),
        chunks=(100, 100),
        dtype="float32",
        node=cluster.nodes[0],
        cookie=cluster.cookie,
        nodes=cluster.nodes,
    )
    await arr.set_slice(np.ones((100, 100)), start=(0, 0), stop=(100, 100))

    info = arr.info
    assert isinstance(info, ArrayInfo)
    text = str(info)
    assert "MnesiaStore" in text and "(300, 200)" in text and "float32" in text.lower()
    complete = await arr.info_complete()
    assert "Chunks Initialized : 1" in str(complete)

    html = arr._repr_html_()
    url = f"mnesia://{cluster.nodes[0]}/zarr_storage/{aid}"
    assert html.startswith("<table><caption>pyrlang_zarr.MnesiaArray</caption>")
    for shown in (url, "(300, 200)", "(100, 100)", "float32", "234.4 KiB uncompressed"):
        assert shown in html
    assert ", ".join(cluster.nodes) in html  # the replicas

    # the blocking twin shows the same, under its own name
    twin = pzs.Array(arr)
    assert twin._repr_html_() == html.replace("pyrlang_zarr.MnesiaArray", "pyrlang_zarr.sync.Array")
    assert str(twin.info) == text


async def test_html_escapes_what_it_shows(cluster: LocalCluster) -> None:
    arr = await pz.create(
        f"<b>{uuid.uuid4().hex[:6]}&",
        shape=(2,),
        chunks=(2,),
        node=cluster.nodes[0],
        cookie=cluster.cookie,
        nodes=cluster.nodes,
    )
    html = arr._repr_html_()
    assert "<b>" not in html
