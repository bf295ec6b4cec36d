"""Hypothesis state machines driving MnesiaStore against a MemoryStore model: zarr's own,
and two clients of one array taking turns."""

from __future__ import annotations

import os
import uuid
from typing import Any

import hypothesis.strategies as st
import numpy as np
import pytest
import zarr
import zarr.core.sync
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)
from zarr.testing.stateful import ZarrHierarchyStateMachine, ZarrStoreStateMachine

from pyrlang_zarr import MnesiaStore
from pyrlang_zarr.erldist.node_registry import shared_node
from pyrlang_zarr.mnesia import ensure_table
from pyrlang_zarr.testing.cluster import LocalCluster

pytestmark = [pytest.mark.erlang, pytest.mark.slow]

# Enough steps to cover every rule many times; PZ_STATEFUL_EXAMPLES raises it for soak runs.
EXAMPLES = int(os.environ.get("PZ_STATEFUL_EXAMPLES", "25"))
SETTINGS = settings(
    deadline=None,
    max_examples=EXAMPLES,
    stateful_step_count=30,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.fixture
def store(cluster: LocalCluster) -> MnesiaStore:
    zarr.core.sync.sync(ensure_table(shared_node(cluster.cookie), cluster.nodes, "zarr_storage"))
    return MnesiaStore(f"stateful-{uuid.uuid4().hex}", node=cluster.nodes[0], cookie=cluster.cookie)


def test_zarr_store_state_machine(store: MnesiaStore) -> None:
    run_state_machine_as_test(lambda: ZarrStoreStateMachine(store), settings=SETTINGS)


def test_zarr_hierarchy_state_machine(store: MnesiaStore) -> None:
    run_state_machine_as_test(lambda: ZarrHierarchyStateMachine(store), settings=SETTINGS)


class TwoClients(RuleBasedStateMachine):
    """Two store objects of one root array, on different replicas, taking turns: creating
    and re-creating the array (any rank, chunk key spelling, zarr format), writing, reading
    and listing through zarr, against the same calls on a MemoryStore."""

    def __init__(self, stores: tuple[MnesiaStore, MnesiaStore]) -> None:
        super().__init__()
        self.stores = stores
        self.model = zarr.storage.MemoryStore()
        self.created = False

    @initialize()
    def start(self) -> None:
        zarr.core.sync.sync(self.stores[0].clear())

    def _store(self, data: st.DataObject) -> MnesiaStore:
        return self.stores[data.draw(st.integers(0, 1), label="client")]

    @rule(data=st.data())
    def create(self, data: st.DataObject) -> None:
        ndim = data.draw(st.integers(1, 3), label="rank")
        shape = data.draw(st.tuples(*[st.integers(1, 4)] * ndim), label="shape")
        chunks = tuple(data.draw(st.integers(1, n), label="chunk") for n in shape)
        zarr_format = data.draw(st.sampled_from([2, 3]), label="zarr_format")
        encoding = data.draw(
            st.sampled_from(
                [{"name": "v2", "separator": "."}, {"name": "v2", "separator": "/"}]
                + ([{"name": "default", "separator": s} for s in "/."] if zarr_format == 3 else [])
            ),
            label="chunk_key_encoding",
        )
        options: dict[str, Any] = {
            "shape": shape,
            "chunks": chunks,
            "dtype": "i2",
            "fill_value": -1,
            "zarr_format": zarr_format,
            "chunk_key_encoding": encoding,
            "overwrite": True,
        }
        zarr.create_array(self._store(data), **options)
        zarr.create_array(self.model, **options)
        self.created = True

    @precondition(lambda self: self.created)
    @rule(data=st.data())
    def write(self, data: st.DataObject) -> None:
        ref = zarr.open_array(self.model, mode="r+")
        region = tuple(
            slice(a, a + data.draw(st.integers(1, n - a)))
            for a, n in ((data.draw(st.integers(0, n - 1)), n) for n in ref.shape)
        )
        value = np.int16(data.draw(st.integers(0, 99), label="value"))
        zarr.open_array(self._store(data), mode="r+")[region] = value
        ref[region] = value

    @precondition(lambda self: self.created)
    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        got = zarr.open_array(self._store(data), mode="r")[...]
        assert np.array_equal(got, zarr.open_array(self.model, mode="r")[...])

    @rule(data=st.data())
    def list_keys(self, data: st.DataObject) -> None:
        store = self._store(data)
        listed = zarr.core.sync.sync(_sorted_keys(store))
        assert listed == zarr.core.sync.sync(_sorted_keys(self.model))


async def _sorted_keys(store: Any) -> list[str]:
    return sorted([k async for k in store.list()])


def test_two_clients_on_two_replicas(cluster: LocalCluster) -> None:
    zarr.core.sync.sync(ensure_table(shared_node(cluster.cookie), cluster.nodes, "zarr_storage"))

    def two_clients() -> TwoClients:  # new store objects and a new array for each example
        aid = f"two-{uuid.uuid4().hex}"
        return TwoClients(
            (
                MnesiaStore(aid, node=cluster.nodes[0], cookie=cluster.cookie),
                MnesiaStore(aid, node=cluster.nodes[1], cookie=cluster.cookie),
            )
        )

    run_state_machine_as_test(
        two_clients,
        settings=settings(SETTINGS, max_examples=max(EXAMPLES // 2, 5), stateful_step_count=15),
    )
