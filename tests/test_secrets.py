"""Secrets stay secret: no cookie on the command line of any process the project starts, and
no cookie in a pickle unless asked for.

Command lines (``/proc/PID/cmdline``) are readable by every local user. Checked for real
processes: a ``LocalCluster``'s nodes and its ``erl_eval`` helper (scanned from the Erlang
side while the helper runs), the nodes of ``pyrlang-zarr cluster up``, an example and the
demo with every process they start. docker-compose's entrypoint is run in
``test_compose.py``.

Pickles travel: a dask task graph holds the store of every array it reads, and goes to every
worker. The store's pickle holds no cookie unless made with ``pickle_cookie=True``; a worker
finds the cookie the way ``erl`` does (``ERLANG_COOKIE``, ``~/.erlang.cookie``).
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import pyrlang_zarr as pz
from pyrlang_zarr.erldist.node_registry import close_shared_nodes
from pyrlang_zarr.erldist.tls import OPTFILE_ENV, TlsConfig
from pyrlang_zarr.testing.cluster import LocalCluster

ROOT = Path(__file__).resolve().parent.parent

# -- command lines -----------------------------------------------------------------------------


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def children(pid: int) -> list[int]:
    """``pid``'s descendants, from every process's parent in ``/proc``."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def erl_cookie_of(pid: int) -> str | None:
    """The cookie an ``erl`` process reads: ``$HOME/.erlang.cookie`` of its environment."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"HOME="):
            try:
                return (Path(item[5:].decode()) / ".erlang.cookie").read_text().strip()
            except OSError:
                return None
    return None


class Watch:
    """Samples the command lines of ``pid`` and all its descendants until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seen: dict[int, bytes] = {}
        self.cookies: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in [self.pid, *children(self.pid)]:
                line = cmdline(pid)
                if line:
                    self.seen[pid] = line
                if b"beam" in line:
                    cookie = erl_cookie_of(pid)
                    if cookie:
                        self.cookies.add(cookie)
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def leaks(self) -> list[str]:
        return [
            line.replace(b"\0", b" ").decode(errors="replace")
            for line in self.seen.values()
            if any(c.encode() in line for c in self.cookies) or b"-setcookie" in line
        ]


# Run on a node while the erl_eval helper waits for the answer: every command line on the
# machine holding the cookie (given hex-encoded, so the expression does not hold it either).
SCAN = """
Cookie = binary:decode_hex(<<"{hex}">>),
[{{P, B}} || P <- filelib:wildcard("/proc/[0-9]*/cmdline"),
           {{ok, B}} <- [file:read_file(P)], binary:match(B, Cookie) =/= nomatch].
"""
# the same scan for a string every node's command line holds: the scan itself works
CONTROL = """
[P || P <- filelib:wildcard("/proc/[0-9]*/cmdline"),
      {{ok, B}} <- [file:read_file(P)], binary:match(B, <<"{text}">>) =/= nomatch].
"""


@pytest.mark.erlang
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_no_cookie_on_the_command_line_of_a_cluster_or_its_helper(tls: bool) -> None:
    with LocalCluster(n=2, tls=tls) as c:
        for node in c:
            assert c.cookie not in " ".join(node.argv) and "-setcookie" not in node.argv
            assert c.cookie.encode() not in cmdline(node.os_pid)
        # scanned by node 0 while the helper that asked is running
        assert c.erl_eval(0, SCAN.format(hex=c.cookie.encode().hex())) == "[]"
        control = c.erl_eval(0, CONTROL.format(text=c.prefix))
        assert control.count("/cmdline") >= 2  # both nodes (and the helper) found
        # and the cookie is where erl reads it, owner-only
        home = c[0].dir / "home" / ".erlang.cookie"
        assert home.read_text() == c.cookie and home.stat().st_mode & 0o777 == 0o400


@pytest.mark.erlang
@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [["examples/seed_example.py"], ["-m", "pyrlang_zarr", "demo", "--nodes", "2"]],
    ids=["example", "demo"],
)
def test_no_cookie_on_any_command_line_an_example_starts(command: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(OPTFILE_ENV, None)
    proc = subprocess.Popen(
        [sys.executable, *command],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watch = Watch(proc.pid)
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        watch.stop()
    assert proc.returncode == 0, out
    assert watch.cookies, "no erl process was seen: the watch saw nothing"
    assert len(watch.seen) >= 3  # the script, its node(s) and the helper's or erl's
    assert watch.leaks() == []


@pytest.mark.erlang
@pytest.mark.slow
def test_cluster_up_puts_no_cookie_on_a_command_line(tmp_path: Path) -> None:
    home, state = tmp_path / "home", tmp_path / "state"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("ERLANG_COOKIE", "RELEASE_COOKIE")}
    env.update(PYTHONPATH=str(ROOT), HOME=str(home), PYRLANG_ZARR_CLUSTER_DIR=str(state))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pyrlang_zarr", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    up = cli("cluster", "up", "--nodes", "2", "--no-mnesia", "--prefix", f"s{uuid.uuid4().hex[:5]}")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        cookie = (home / ".erlang.cookie").read_text().strip()
        pids = [n["pid"] for n in json.loads((state / "cluster.json").read_text())["nodes"]]
        assert len(pids) == 2
        for pid in pids:
            line = cmdline(pid)
            assert line and cookie.encode() not in line and b"-setcookie" not in line
    finally:
        cli("cluster", "down")


def test_examples_take_no_cookie_argument() -> None:
    """What the examples accept: a cookie file, never the cookie."""
    import importlib.util

    for name in ("seed_example", "replicated"):
        spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        example = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(example)
        parser = example.make_parser()
        options = {o for action in parser._actions for o in action.option_strings}
        assert "--cookie-file" in options and "--cookie" not in options
        assert "--tls-optfile" in options


# -- pickles -----------------------------------------------------------------------------------

SECRET = "cookie-that-must-not-travel-" + uuid.uuid4().hex


@pytest.fixture
def no_env_cookie(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("ERLANG_COOKIE", raising=False)
    monkeypatch.delenv("RELEASE_COOKIE", raising=False)
    yield


def test_store_pickles_no_cookie_unless_asked() -> None:
    store = pz.MnesiaStore("a", node="n@h", cookie=SECRET)
    assert SECRET.encode() not in pickle.dumps(store)
    assert pickle.loads(pickle.dumps(store)).settings.cookie is None
    assert SECRET.encode() not in pickle.dumps(store.settings)
    carried = pz.MnesiaStore("a", node="n@h", cookie=SECRET, pickle_cookie=True)
    assert SECRET.encode() in pickle.dumps(carried)  # the documented opt-in
    assert pickle.loads(pickle.dumps(carried)).settings.cookie == SECRET
    assert carried == store  # how a store pickles is not part of what it is
    # copies within the process are the same settings: they keep the cookie
    assert copy.deepcopy(store).settings.cookie == SECRET
    assert copy.copy(store.settings).cookie == SECRET


def test_store_tls_settings_pickle_as_paths_and_a_context_refuses(tmp_path: Path) -> None:
    tls = TlsConfig(str(tmp_path / "c.pem"), str(tmp_path / "c.key"), str(tmp_path / "ca.pem"))
    store = pz.MnesiaStore("a", node="n@h", cookie=SECRET, tls=tls)
    again = pickle.loads(pickle.dumps(store))
    assert again.settings.tls == tls and SECRET.encode() not in pickle.dumps(store)
    import ssl

    ctx = pz.MnesiaStore("a", node="n@h", tls=ssl.create_default_context())
    with pytest.raises(TypeError, match="TlsConfig"):
        pickle.dumps(ctx)


@pytest.mark.erlang
async def test_arrays_and_dask_graphs_carry_no_cookie(
    cluster: LocalCluster, no_env_cookie: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dask.array as da

    aid = f"secret-{uuid.uuid4().hex[:6]}"
    arr = await pz.create(
        aid,
        shape=(8, 8),
        chunks=(4, 4),
        node=cluster.nodes[0],
        nodes=cluster.nodes,
        cookie=cluster.cookie,
    )
    await arr.set_slice(np.ones((8, 8)))
    z = zarr.open_array(pz.MnesiaStore(aid, node=cluster.nodes[0], cookie=cluster.cookie))
    graph = da.from_zarr(z)
    cookie = cluster.cookie.encode()
    for what in (arr.store, z, dict(graph.__dask_graph__())):
        assert cookie not in pickle.dumps(what)
    # a worker finds the cookie as erl would: here, in its environment
    monkeypatch.setenv("ERLANG_COOKIE", cluster.cookie)
    again: Any = pickle.loads(pickle.dumps(z))
    assert float(np.asarray(again[:]).sum()) == 64.0
    await close_shared_nodes()
