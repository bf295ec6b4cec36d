"""zarr's hypothesis state machines driving MnesiaStore against a MemoryStore model."""

from __future__ import annotations

import os
import uuid

import pytest
import zarr.core.sync
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
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
