"""Stores and nodes across processes: a forked child, and a store pickled into a new one."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import uuid

import numpy as np
import pytest
import zarr

import pyrlang_zarr as pz
from pyrlang_zarr import Atom
from pyrlang_zarr.erldist.node_registry import shared_node
from pyrlang_zarr.testing.cluster import LocalCluster

pytestmark = pytest.mark.erlang


def _set_cookie(cookie: str) -> None:
    os.environ["ERLANG_COOKIE"] = cookie


def _read_sum(store: pz.MnesiaStore) -> float:
    return float(np.asarray(zarr.open_array(store, mode="r")[:]).sum())


def _child_rpc(cookie: str, peer: str, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    async def call() -> str:
        return str(await shared_node(cookie).rpc(peer, "erlang", "node", []))

    queue.put((asyncio.run(call()), shared_node(cookie).name))


async def test_forked_child_gets_its_own_node(cluster: LocalCluster) -> None:
    parent = shared_node(cluster.cookie)
    peer = cluster.nodes[0]
    assert await parent.rpc(peer, "erlang", "node", []) == Atom(peer)  # parent connected
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_rpc, args=(cluster.cookie, peer, queue))
    child.start()
    result, child_name = await asyncio.to_thread(queue.get, True, 60)
    await asyncio.to_thread(child.join, 30)
    assert child.exitcode == 0 and result == peer
    assert child_name != parent.name  # a new node name: the parent's connection is untouched
    assert await parent.rpc(peer, "erlang", "node", []) == Atom(peer)


def test_pickled_store_in_spawned_and_forked_processes(cluster: LocalCluster) -> None:
    aid = f"mp-{uuid.uuid4().hex[:6]}"
    created = pz.create(
        array_id=aid,
        shape=(10, 10),
        chunks=(5, 5),
        node=cluster.nodes[0],
        cookie=cluster.cookie,
        nodes=cluster.nodes,
    )
    asyncio.run(created)
    store = pz.MnesiaStore(aid, node=cluster.nodes[1], cookie=cluster.cookie)
    zarr.open_array(store, mode="r+")[:] = np.ones((10, 10))
    # the pickled store holds no cookie: the workers find it as erl would, in their
    # environment (a dask worker's, a batch job's)
    for method in ("spawn", "fork"):
        ctx = mp.get_context(method)
        with ctx.Pool(2, _set_cookie, (cluster.cookie,)) as pool:
            assert pool.map(_read_sum, [store, store]) == [100.0, 100.0]
