"""NetnsCluster: real Erlang nodes on separate network namespaces, partitioned and healed.

Needs root, iproute2 and Erlang: skipped when missing, except in CI, where it must fail.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pyrlang_zarr.testing.netns import RECORD_DIR, NetnsCluster, available, cleanup_stale

pytestmark = [pytest.mark.erlang, pytest.mark.netns]

TICKTIME = 4  # seconds: a cut host is taken for down within ~TICKTIME


def require_netns() -> None:
    reason = available()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the network namespace tests: {reason}")
    pytest.skip(reason)


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def netns_list() -> set[str]:
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in done.stdout.splitlines() if line.strip()}


def eventually(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


def assert_gone(prefix: str, namespaces: list[str], pids: list[int], base: Path) -> None:
    assert not {ns for ns in netns_list() if ns.startswith(prefix + "-")}
    assert [pid for pid in pids if running(pid)] == []
    assert [ns for ns in namespaces if (Path("/etc/netns") / ns).exists()] == []
    assert not base.exists()
    assert not (RECORD_DIR / f"{prefix}.json").exists()


@pytest.fixture(scope="module")
def net() -> Iterator[NetnsCluster]:
    require_netns()
    started = time.monotonic()
    with NetnsCluster(n=3, ticktime=TICKTIME) as c:
        print(f"\n3 hosts started in {time.monotonic() - started:.2f} s")
        yield c


def test_names_and_addresses(net: NetnsCluster) -> None:
    assert net.nodes == ["node1@host1", "node2@host2", "node3@host3"]
    assert net.hosts == ["host1", "host2", "host3"]
    subnet = ipaddress.IPv4Network(net.subnet)
    assert subnet.subnet_of(ipaddress.IPv4Network("10.0.0.0/8"))
    addresses = [net.addresses[h] for h in net.hosts]
    assert len(set(addresses)) == 3
    assert all(ipaddress.ip_address(a) in subnet for a in addresses)
    for i, host in enumerate(net.hosts):
        assert net.erl_eval(i, "{node(), inet:gethostname()}.") == (
            f'{{node{i + 1}@{host},{{ok,"{host}"}}}}'
        )
    # Another host resolves host3 by name, through its own /etc/hosts.
    assert net.erl_eval(0, "inet:getaddr(host3, inet).") == (
        "{ok,{" + net.addresses["host3"].replace(".", ",") + "}}"
    )


def test_nodes_see_each_other(net: NetnsCluster) -> None:
    assert net.erl_eval(0, "[net_adm:ping(N) || N <- ['node2@host2', 'node3@host3']].") == (
        "[pong,pong]"
    )
    assert net.erl_eval(0, "lists:sort(nodes()).") == "[node2@host2,node3@host3]"
    # -connect_all: node2 and node3 got connected to each other as well.
    eventually(lambda: net.erl_eval(2, "lists:sort(nodes()).") == "[node1@host1,node2@host2]")


CLIENT = """
import asyncio
from pyrlang_zarr import Node

async def main():
    async with Node() as node:  # the cookie from ERLANG_COOKIE (run_client sets it)
        print("rpc:", await node.rpc("node2@host2", "erlang", "node", []))
        print("name:", node.name)

asyncio.run(main())
"""


def test_python_node_from_client_namespace(net: NetnsCluster) -> None:
    done = net.run_client([sys.executable, "-c", CLIENT], timeout=30)  # no cookie on argv
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "rpc: node2@host2" in lines
    # The client namespace has its own hostname, which the hosts can resolve.
    assert any(line.startswith("name: pz-") and line.endswith("@client") for line in lines)


PROBE = """
import socket, sys
for host in sys.argv[1:]:
    try:
        socket.create_connection((host, 4369), timeout=1).close()
        print(host, "up")
    except OSError:
        print(host, "down")
"""


@pytest.mark.slow
def test_cut_and_heal(net: NetnsCluster) -> None:
    assert net.erl_eval(0, "net_adm:ping('node3@host3').") == "pong"
    net.cut(2)
    try:
        started = time.monotonic()
        assert net.erl_eval(0, "net_adm:ping('node3@host3').") == "pang"
        # how long it took is printed, not asserted (no test asserts on time)
        print(f"\ncut host seen as down after {time.monotonic() - started:.2f} s")
        # The cut host's node keeps running, alone.
        eventually(lambda: net.erl_eval(2, "nodes().") == "[]")
        assert net.erl_eval(0, "lists:sort(nodes()).") == "[node2@host2]"
        # The client is partitioned from it too, not from the others.
        done = net.run_client([sys.executable, "-c", PROBE, "host3", "host1"], timeout=30)
        assert done.stdout.split("\n")[:2] == ["host3 down", "host1 up"], done.stderr
    finally:
        net.heal(2)
    started = time.monotonic()
    assert net.erl_eval(0, "net_adm:ping('node3@host3').") == "pong"
    print(f"healed host answers after {time.monotonic() - started:.2f} s")
    eventually(lambda: net.erl_eval(1, "lists:sort(nodes()).") == "[node1@host1,node3@host3]")


def test_kill_and_restart(net: NetnsCluster) -> None:
    pid = net[1].os_pid
    net.kill(1)
    try:
        assert not running(pid)
        assert "node2" not in net.registered_names(1)
        assert net.erl_eval(0, "net_adm:ping('node2@host2').") == "pang"
    finally:
        net.restart(1)
    assert net[1].os_pid != pid
    assert net.erl_eval(1, "node().") == "node2@host2"
    assert net.erl_eval(0, "net_adm:ping('node2@host2').") == "pong"


def test_stop_leaves_nothing_even_when_the_body_raised() -> None:
    require_netns()
    base: Path | None = None
    with pytest.raises(ZeroDivisionError), NetnsCluster(n=2) as c:
        namespaces, base = c.namespaces, c.base_dir
        assert base is not None
        assert set(namespaces) <= netns_list()
        # A process left running in a namespace: stop() must kill it.
        c.run_client(["sh", "-c", "sleep 30 >/dev/null 2>&1 &"], timeout=10)
        pids = [pid for ns_pids in c.pids().values() for pid in ns_pids]
        assert len(pids) >= 5  # nodes, EPMDs, the sleep
        _ = 1 / 0
    assert base is not None
    assert_gone(c.prefix, namespaces, pids, base)
    c.stop()  # idempotent
    assert_gone(c.prefix, namespaces, pids, base)


def test_leftovers_of_a_dead_owner_are_cleaned() -> None:
    require_netns()
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from pyrlang_zarr.testing.netns import NetnsCluster\n"
            "c = NetnsCluster(n=1).start()\n"
            "print(c.prefix, c.base_dir, *c.namespaces, flush=True)\n"
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        prefix, base, *namespaces = owner.stdout.readline().split()  # type: ignore[union-attr]
    finally:
        owner.kill()
        owner.wait()
    assert set(namespaces) <= netns_list()
    assert prefix in cleanup_stale()
    assert_gone(prefix, namespaces, [], Path(base))
