"""Faults on separate hosts (network namespaces): kill -9 during writes, a partition.

The Python hidden node runs in the client namespace (tests/scenarios/netns_client.py) and
asks this process, which owns the harness, for each fault at the right moment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyrlang_zarr.testing.netns import NetnsCluster, available
from tests.faults import NO_OVERLAP_PREVENTION, REPORT, TABLE_DIGEST, FaultRun

pytestmark = [pytest.mark.erlang, pytest.mark.netns, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def hosts() -> Iterator[NetnsCluster]:
    reason = available()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the multi-host tests: {reason}")
        pytest.skip(reason)
    with NetnsCluster(n=3, ticktime=4, extra_args=NO_OVERLAP_PREVENTION) as c:
        yield c


def run_scenario(c: NetnsCluster, name: str, timeout: float = 240) -> dict[str, Any]:
    """Run the client scenario, performing the faults it asks for; return its result."""
    cfg = json.dumps({"nodes": c.nodes, "cookie": c.cookie})
    argv = c.ns_argv("client", [sys.executable, "-m", "tests.scenarios.netns_client", name, cfg])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    result: dict[str, Any] | None = None
    try:
        for line in proc.stdout:
            if line.startswith("RESULT "):
                result = json.loads(line[7:])
            elif line.startswith("@"):
                perform(c, line[1:].split())
                proc.stdin.write("ok\n")
                proc.stdin.flush()
        proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and result is not None, f"scenario {name} failed"
    return result


def perform(c: NetnsCluster, request: list[str]) -> None:
    what, *args = request
    if what == "kill":
        c.kill(int(args[0]))
    elif what == "cut":
        c.cut(int(args[0]))
    elif what == "heal":
        c.heal(int(args[0]))
    elif what == "connect":
        i, j = int(args[0]), int(args[1])
        out = c.erl_eval(i, f"net_kernel:connect_node('{c.nodes[j]}').")
        assert "true" in out, out
    elif what == "minority-write":
        i = int(args[0])
        expr = (
            "mnesia:transaction(fun() -> "
            'mnesia:write({zarr_storage, {<<"split">>, {0}}, <<"minority">>}) end).'
        )
        out = c.erl_eval(i, expr)
        assert "no_majority" in out, out  # the isolated side refuses
    else:
        raise AssertionError(f"unknown request {request}")


def test_kill_connected_replica_during_64_writes_across_hosts(hosts: NetnsCluster) -> None:
    r = run_scenario(hosts, "kill_during_writes")
    REPORT.append(
        FaultRun(
            "3 hosts (netns)",
            "kill -9 of the connected node",
            64,
            r["acked"],
            r["refused"],
            len(r["lost"]),
            f"now via {r['coordinator']}",
        )
    )
    assert r["lost"] == []
    assert r["acked"] >= 60
    assert r["coordinator"] != hosts.nodes[0]


def test_partition_of_one_host_with_majority_tables(hosts: NetnsCluster) -> None:
    r = run_scenario(hosts, "partition")
    digests = {hosts.erl_eval(i, TABLE_DIGEST) for i in range(3)}
    REPORT.append(
        FaultRun(
            "3 hosts (netns), majority",
            "cut host3 off, heal, recover",
            48,
            r["acked"],
            1,
            len(r["lost"]),
            f"{len(digests)} distinct replica digests",
        )
    )
    assert r["event"][0] == "running_partitioned_network"
    assert r["lost"] == [] and r["acked"] == 48
    assert len(digests) == 1  # every replica holds the same records
