"""LocalCluster against real ``erl`` nodes, checked from the Erlang side and through EPMD."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyrlang_zarr.testing.cluster import LocalCluster

pytestmark = pytest.mark.erlang


def epmd_names() -> set[str]:
    """Names EPMD lists, asked independently of the code under test."""
    epmd = shutil.which("epmd") or next(Path("/usr/lib/erlang").glob("erts-*/bin/epmd"))
    done = subprocess.run([epmd, "-names"], capture_output=True, text=True, check=False)
    return set(re.findall(r"^name (\S+) at port \d+$", done.stdout, re.MULTILINE))


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[LocalCluster]:
    """Two nodes of this module's own: its tests kill, stop and restart them."""
    with LocalCluster(n=2) as c:
        yield c


def test_names(own_cluster: LocalCluster) -> None:
    host = socket.gethostname().split(".")[0]
    assert own_cluster.host == host
    assert re.fullmatch(r"pz[0-9a-f]{6}", own_cluster.prefix)
    assert own_cluster.nodes == [f"{own_cluster.prefix}-1@{host}", f"{own_cluster.prefix}-2@{host}"]
    assert [node.name for node in own_cluster] == own_cluster.nodes
    assert own_cluster[1].short_name == f"{own_cluster.prefix}-2"
    assert own_cluster.cookie and all(node.alive for node in own_cluster)


def test_registered_in_epmd(own_cluster: LocalCluster) -> None:
    assert {own_cluster[0].short_name, own_cluster[1].short_name} <= epmd_names()


def test_erl_eval_sees_node_name(own_cluster: LocalCluster) -> None:
    assert own_cluster.erl_eval(0, "node().") == f"'{own_cluster.nodes[0]}'"
    assert (
        own_cluster.erl_eval(1, '{node(), "héllo", 1 + 1}')
        == f"{{'{own_cluster.nodes[1]}',\"héllo\",2}}"
    )


def test_erl_eval_errors(own_cluster: LocalCluster) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        own_cluster.erl_eval(0, "erlang:error(boom).")
    with pytest.raises(RuntimeError, match="syntax error"):
        own_cluster.erl_eval(0, "1 + .")


def test_nodes_see_each_other(own_cluster: LocalCluster) -> None:
    assert own_cluster.erl_eval(0, f"net_adm:ping('{own_cluster.nodes[1]}').") == "pong"


def test_own_mnesia_dirs(own_cluster: LocalCluster) -> None:
    dirs = [own_cluster.erl_eval(i, "mnesia:system_info(directory).") for i in range(2)]
    assert dirs == [f'"{node.mnesia_dir}"' for node in own_cluster]
    assert own_cluster[0].mnesia_dir != own_cluster[1].mnesia_dir
    assert all(node.mnesia_dir.is_dir() for node in own_cluster)


def test_kill_and_restart(own_cluster: LocalCluster) -> None:
    old_pid = own_cluster[1].os_pid
    own_cluster.kill(1)
    assert not own_cluster[1].alive and not running(old_pid)
    assert own_cluster[1].short_name not in epmd_names()
    assert own_cluster.erl_eval(0, f"net_adm:ping('{own_cluster.nodes[1]}').") == "pang"

    own_cluster.restart(1)
    assert own_cluster[1].alive and own_cluster[1].os_pid != old_pid
    assert own_cluster[1].short_name in epmd_names()
    assert own_cluster.erl_eval(1, "node().") == f"'{own_cluster.nodes[1]}'"
    assert own_cluster.erl_eval(0, f"net_adm:ping('{own_cluster.nodes[1]}').") == "pong"


def test_stop_node_then_restart(own_cluster: LocalCluster) -> None:
    own_cluster.stop_node(0)
    assert not own_cluster[0].alive and own_cluster[0].process.returncode == 0
    assert own_cluster[0].short_name not in epmd_names()
    own_cluster.restart(0)
    assert own_cluster.erl_eval(0, "node().") == f"'{own_cluster.nodes[0]}'"


def test_stop_leaves_nothing_behind() -> None:
    c = LocalCluster(n=2, ticktime=20).start()
    pids = [node.os_pid for node in c]
    names = {node.short_name for node in c}
    base_dir = c.base_dir
    assert base_dir is not None and base_dir.is_dir()
    assert c.erl_eval(0, "net_kernel:get_net_ticktime().") == "20"
    c.stop()
    assert not any(running(pid) for pid in pids)
    assert not names & epmd_names()
    assert not base_dir.exists()
    c.stop()  # idempotent


def test_context_manager_stops_when_body_raises() -> None:
    with pytest.raises(ZeroDivisionError), LocalCluster(n=1) as c:
        pid = c[0].os_pid
        name = c[0].short_name
        _ = 1 / 0
    assert not running(pid)
    assert name not in epmd_names()


async def test_async_context_manager() -> None:
    async with LocalCluster(n=1) as c:
        pid = c[0].os_pid
        assert c[0].alive
    assert not running(pid)


def test_base_dir_is_kept_and_quoted(tmp_path: Path) -> None:
    base = tmp_path / 'odd "dir" \\ with spaces'
    with LocalCluster(n=1, base_dir=base, ram_only=True, prefix=f"pzkeep{os.getpid()}") as c:
        assert c.nodes == [f"{c.prefix}-1@{c.host}"]
        assert c.erl_eval(0, "mnesia:system_info(directory).") == (
            '"' + str(c[0].mnesia_dir).replace("\\", "\\\\").replace('"', '\\"') + '"'
        )
        assert c.erl_eval(0, "{mnesia:start(), mnesia:system_info(use_dir)}.") == "{ok,false}"
        log = c[0].log_path
    assert base.is_dir()
    assert f"pz-ready {c.nodes[0]}" in log.read_text()


def test_missing_erl_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(FileNotFoundError, match="erlang-nox"):
        LocalCluster(n=1).start()
