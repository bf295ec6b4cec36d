"""``create`` over an existing array or group: a clear error that names ``overwrite=True``,
raised before anything is written, whatever zarr format either side has."""

from __future__ import annotations

import uuid
from typing import Any, Literal

import numpy as np
import pytest
import zarr
from zarr.errors import ContainsArrayError, ContainsGroupError

import pyrlang_zarr as pz
import pyrlang_zarr.sync as pzs
from pyrlang_zarr import Atom
from pyrlang_zarr.array import ArrayExists
from pyrlang_zarr.erldist.node_registry import shared_node
from pyrlang_zarr.testing.cluster import LocalCluster

pytestmark = pytest.mark.erlang

TAB = "zarr_storage"

# how the first array is made, and how the second create asks for one
FORMATS: dict[str, dict[str, Any]] = {
    "v3": {},
    "v2": {"zarr_format": 2},
    "exzarr": {"exzarr": True},
}


def opts(c: LocalCluster, **kw: Any) -> dict[str, Any]:
    return {"node": c.nodes[0], "cookie": c.cookie, "nodes": c.nodes, **kw}


def new_id() -> str:
    return f"exists-{uuid.uuid4().hex[:8]}"


async def records(c: LocalCluster, array_id: str) -> list[Any]:
    """Every record of ``array_id``, raw, in key order."""
    spec: list[Any] = [((Atom(TAB), (array_id.encode(), Atom("$1")), Atom("_")), [], [Atom("$_")])]
    found = await shared_node(c.cookie).rpc(c.nodes[0], "mnesia", "dirty_select", [Atom(TAB), spec])
    return sorted(found, key=repr)


@pytest.mark.parametrize("second", sorted(FORMATS))
@pytest.mark.parametrize("first", sorted(FORMATS))
async def test_create_over_an_array_names_overwrite_and_writes_nothing(
    cluster: LocalCluster, first: str, second: str
) -> None:
    aid = new_id()
    arr = await pz.create(
        aid, shape=(6, 4), chunks=(3, 2), dtype="int32", **FORMATS[first], **opts(cluster)
    )
    data = np.arange(24, dtype="int32").reshape(6, 4)
    await arr.set_slice(data)
    before = await records(cluster, aid)

    with pytest.raises(ArrayExists, match="overwrite=True") as caught:
        await pz.create(
            aid, shape=(10,), chunks=(5,), dtype="float64", **FORMATS[second], **opts(cluster)
        )
    message = str(caught.value)
    assert f"already an array {aid!r}" in message and "nothing was written" in message
    # what zarr raises in its place, and a ValueError: code catching those keeps working
    for kind in (ContainsArrayError, ValueError, pz.PyrlangZarrError):
        assert isinstance(caught.value, kind)

    assert await records(cluster, aid) == before
    again = await pz.open(aid, node=cluster.nodes[1], cookie=cluster.cookie)
    assert again.shape == (6, 4) and np.array_equal(await again.get_slice(), data)


@pytest.mark.parametrize("zarr_format", [2, 3])
async def test_create_over_a_group_says_it_is_a_group(
    cluster: LocalCluster, zarr_format: Literal[2, 3]
) -> None:
    aid = new_id()
    store = pz.MnesiaStore(aid, **opts(cluster))
    await zarr.api.asynchronous.open_group(store=store, mode="w", zarr_format=zarr_format)
    before = await records(cluster, aid)
    assert before
    for fmt in FORMATS.values():
        with pytest.raises(ArrayExists, match=f"already a group {aid!r}.*overwrite=True") as caught:
            await pz.create(aid, shape=(4,), chunks=(2,), **fmt, **opts(cluster))
        assert isinstance(caught.value, ContainsGroupError)
        assert await records(cluster, aid) == before


async def test_overwrite_still_replaces(cluster: LocalCluster) -> None:
    aid = new_id()
    first = await pz.create(aid, shape=(4,), chunks=(2,), dtype="int8", **opts(cluster))
    await first.set_slice(np.ones(4, dtype="int8"))
    second = await pz.create(
        aid, shape=(3,), chunks=(3,), dtype="int8", overwrite=True, **opts(cluster)
    )
    assert second.shape == (3,) and not (await second.get_slice()).any()


def test_the_blocking_twin_raises_it_too(cluster: LocalCluster) -> None:
    aid = new_id()
    pzs.create(aid, shape=(4,), chunks=(2,), **opts(cluster))
    with pytest.raises(ArrayExists, match="overwrite=True"):
        pzs.create(aid, shape=(4,), chunks=(2,), **opts(cluster))
