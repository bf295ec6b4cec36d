"""Faults on separate hosts (network namespaces): kill -9 during writes, a partition.

The Python hidden node runs in the client namespace (tests/scenarios/netns_client.py) and
asks this process, which owns the harness, for each fault at the right moment.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyrlang_zarr.testing.netns import NetnsCluster
from tests.faults import NO_OVERLAP_PREVENTION, REPORT, TABLE_DIGEST, FaultRun
from tests.scenarios.netns_client import BIG
from tests.test_netns import require_netns

pytestmark = [pytest.mark.erlang, pytest.mark.netns, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def hosts() -> Iterator[NetnsCluster]:
    require_netns()
    with NetnsCluster(n=3, ticktime=4, extra_args=NO_OVERLAP_PREVENTION) as c:
        yield c


def run_scenario(c: NetnsCluster, name: str, timeout: float = 240) -> dict[str, Any]:
    """Run the client scenario, performing the faults it asks for; return its result."""
    cfg = json.dumps({"nodes": c.nodes})  # the cookie goes in the environment, never argv
    argv = c.ns_argv("client", [sys.executable, "-m", "tests.scenarios.netns_client", name, cfg])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ERLANG_COOKIE": c.cookie}
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


def tc(c: NetnsCluster, i: int, command: str) -> str:
    """``tc`` in host ``i``'s namespace; ``command`` is split on spaces."""
    argv = ["ip", "netns", "exec", c.host_namespaces[i], "tc", *command.split()]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"tc {command}: {done.stderr}"
    return done.stdout


def slow_link(c: NetnsCluster, i: int, j: int) -> None:
    """Slow what host ``i`` sends to host ``j``, and nothing else (the kernel has no netem):
    an htb root whose default class is not shaped, and a class for ``j``'s address under a
    tbf of 16 kbit/s. Once a 2 KiB commit has drained the bucket, each later packet to
    ``j`` waits its turn: ``j`` gets the end of a plain ``mnesia:transaction`` about half a
    second after the coordinator acknowledged it (measured), while a read from the client,
    whose own packets to ``j`` do not pass there, takes a millisecond. Ticks still flow
    well within the tick time."""
    tc(c, i, "qdisc add dev eth0 root handle 1: htb default 1")
    tc(c, i, "class add dev eth0 parent 1: classid 1:1 htb rate 10gbit")
    tc(c, i, "class add dev eth0 parent 1: classid 1:2 htb rate 10gbit")
    tc(c, i, "qdisc add dev eth0 parent 1:2 handle 20: tbf rate 16kbit burst 2kb latency 20s")
    match = f"u32 match ip dst {c.addresses[c.hosts[j]]}/32"
    tc(c, i, f"filter add dev eth0 parent 1: protocol ip prio 1 {match} flowid 1:2")


def slowed_bytes(c: NetnsCluster, i: int) -> int:
    """Bytes that went through host ``i``'s slowed class."""
    stats = tc(c, i, "-s qdisc show dev eth0 parent 1:2")
    found = re.search(r"Sent (\d+) bytes", stats)
    assert found is not None, stats
    return int(found.group(1))


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
    elif what == "slow":
        slow_link(c, int(args[0]), int(args[1]))
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
    # promised: the write in flight is applied again on another host, none refused or lost
    assert r["lost"] == [] and r["refused"] == 0 and r["acked"] == 64
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


def test_write_acknowledged_is_readable_on_a_slow_replica(hosts: NetnsCluster) -> None:
    """sync_transaction's promise made observable: host1 -> host3 crawls, and a dirty read
    of host3's own copy right after each acknowledgement must see the write."""
    r = run_scenario(hosts, "read_after_write")
    assert slowed_bytes(hosts, 0) > 8 * BIG  # the commits to host3 did go the slow way
    assert r["control_misses"] == r["control"]  # plain transaction: host3 lags, visibly
    assert r["seen"] == dict.fromkeys(r["seen"], True), r["seen"]
