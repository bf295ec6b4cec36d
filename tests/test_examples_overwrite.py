"""The examples leave an existing array alone unless told --overwrite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyrlang_zarr.testing.cluster import LocalCluster

pytestmark = pytest.mark.erlang

ROOT = Path(__file__).resolve().parent.parent


def run(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ERLANG_COOKIE": cluster.cookie}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_seed_example_refuses_to_overwrite(cluster: LocalCluster) -> None:
    node = cluster.nodes[0]
    first = run(cluster, "examples/seed_example.py", "--node", node, "--overwrite")
    assert first.returncode == 0, first.stderr
    again = run(cluster, "examples/seed_example.py", "--node", node)
    assert again.returncode == 1
    assert f"experiment_001 already exists on {node}: pass --overwrite" in again.stderr
    assert "Traceback" not in again.stderr


def test_replicated_example_refuses_to_overwrite(cluster: LocalCluster) -> None:
    nodes = [cluster.nodes[0], cluster.nodes[1], cluster.nodes[0]]
    first = run(cluster, "examples/replicated.py", "--nodes", *nodes, "--overwrite")
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("identical = True") == 2
    again = run(cluster, "examples/replicated.py", "--nodes", *nodes)
    assert again.returncode == 1 and "pass --overwrite" in again.stderr
