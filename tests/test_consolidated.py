"""Consolidated metadata: supported (zarr.consolidate_metadata, xarray), never served stale."""

from __future__ import annotations

import logging
import uuid
import warnings
from typing import Any, Literal

import numpy as np
import pytest
import xarray as xr
import zarr
import zarr.core.sync

from pyrlang_zarr import MnesiaStore
from pyrlang_zarr.erldist.node_registry import shared_node
from pyrlang_zarr.mnesia import ensure_table
from pyrlang_zarr.testing.cluster import LocalCluster

pytestmark = [
    pytest.mark.erlang,
    pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning"),
]


@pytest.fixture(scope="module")
def table(cluster: LocalCluster) -> str:
    zarr.core.sync.sync(ensure_table(shared_node(cluster.cookie), cluster.nodes, "zarr_storage"))
    return "zarr_storage"


def stores(cluster: LocalCluster) -> tuple[MnesiaStore, MnesiaStore]:
    aid = f"cons-{uuid.uuid4().hex[:8]}"
    return (
        MnesiaStore(aid, node=cluster.nodes[0], cookie=cluster.cookie),
        MnesiaStore(aid, node=cluster.nodes[1], cookie=cluster.cookie),
    )


def members(store: MnesiaStore, **kw: Any) -> dict[str, Any]:
    group = zarr.open_group(store, mode="r", **kw)
    return {name: dict(node.attrs) for name, node in group.members(max_depth=None)}


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_consolidated_metadata_is_used_and_never_stale(
    cluster: LocalCluster, table: str, zarr_format: Literal[2, 3], caplog: pytest.LogCaptureFixture
) -> None:
    mine, theirs = stores(cluster)
    root = zarr.group(store=mine, zarr_format=zarr_format, attributes={"r": 1})
    root.create_array("a", shape=(4,), dtype="i4", attributes={"v": 1})
    root.create_group("sub").create_array("b", shape=(2,), dtype="f8")
    zarr.consolidate_metadata(mine)
    group = zarr.open_group(theirs, mode="r", use_consolidated=True)
    assert group.metadata.consolidated_metadata is not None
    assert members(theirs, use_consolidated=True)["a"] == {"v": 1}
    # another client changes a node without consolidating again
    zarr.open_array(theirs, path="a", mode="r+").attrs["v"] = 2
    with caplog.at_level(logging.WARNING, logger="pyrlang_zarr.store"):
        seen = members(mine)
    assert seen["a"] == {"v": 2}  # not the copy's {"v": 1}
    assert "out of date" in caplog.text
    with pytest.raises((ValueError, FileNotFoundError)):  # asked for: none fit to serve
        zarr.open_group(mine, mode="r", use_consolidated=True)
    # a node added or removed is a change too
    zarr.consolidate_metadata(theirs)
    assert members(mine, use_consolidated=True)["a"] == {"v": 2}
    zarr.open_group(theirs, mode="r+").create_array("c", shape=(1,), dtype="u1")
    assert "c" in members(mine)
    zarr.consolidate_metadata(theirs)
    del zarr.open_group(theirs, mode="r+")["c"]
    assert "c" not in members(mine)


def test_xarray_consolidates_and_sees_changes(cluster: LocalCluster, table: str) -> None:
    mine, theirs = stores(cluster)
    ds = xr.Dataset(
        {"t": (("x", "y"), np.arange(12.0).reshape(3, 4))},
        coords={"x": [10, 20, 30]},
        attrs={"title": "first"},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # xarray warns if it falls back
        ds.to_zarr(mine, mode="w", consolidated=True)
        back = xr.open_zarr(theirs, consolidated=True)
    assert back.attrs == {"title": "first"} and float(back["t"].sum()) == 66.0
    zarr.open_group(theirs, mode="r+").attrs["title"] = "second"  # the copy stays right
    assert xr.open_zarr(mine, consolidated=True).attrs["title"] == "second"
    zarr.open_array(theirs, path="t", mode="r+").attrs["units"] = "K"  # not consolidated again
    with pytest.warns(RuntimeWarning, match="non-consolidated"):  # xarray says it fell back
        assert xr.open_zarr(mine)["t"].attrs["units"] == "K"
    with pytest.raises((ValueError, FileNotFoundError)):
        xr.open_zarr(mine, consolidated=True)
