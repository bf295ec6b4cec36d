"""The pyrlang-zarr command, every subcommand against real nodes, run as a user runs it."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import pyrlang_zarr as pz
import pyrlang_zarr.sync as pzs
from pyrlang_zarr import transfer
from pyrlang_zarr.erldist.tls import OPTFILE_ENV
from pyrlang_zarr.mnesia import ensure_table
from pyrlang_zarr.progress import Progress
from pyrlang_zarr.testing.certs import CA, write_optfile
from pyrlang_zarr.testing.cluster import LocalCluster

pytestmark = pytest.mark.erlang

ROOT = Path(__file__).resolve().parent.parent
# a gentle local cluster on a small machine: one scheduler per node
GENTLE = ["--erl-arg", "+S", "--erl-arg", "1"]


def new_id() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A HOME of its own: no test reads or writes the real ~/.erlang.cookie or ~/.local."""
    h = tmp_path / "home"
    h.mkdir()
    return h


def env_for(home: Path, cookie: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ERLANG_COOKIE", "RELEASE_COOKIE")}
    env.update(PYTHONPATH=str(ROOT), HOME=str(home))
    env.pop("XDG_STATE_HOME", None)
    env.pop("PYRLANG_ZARR_CLUSTER_DIR", None)
    if cookie is not None:
        env["ERLANG_COOKIE"] = cookie
    return env


def cli(
    home: Path, *args: str, cookie: str | None = None, code: int = 0, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pyrlang_zarr", *args],
        env=env_for(home, cookie),
        cwd=cwd or home,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == code, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture
def ready(cluster: LocalCluster) -> LocalCluster:
    """The shared cluster with Mnesia and the table set up (whichever test runs first)."""

    async def setup() -> None:
        async with pz.Node(cookie=cluster.cookie) as node:
            await ensure_table(node, cluster.nodes)

    pzs.run(setup())
    return cluster


def make_array(c: LocalCluster, aid: str, shape: tuple[int, ...], chunks: tuple[int, ...]) -> Any:
    arr = pzs.create(
        aid,
        shape=shape,
        chunks=chunks,
        dtype="float64",
        node=c.nodes[0],
        cookie=c.cookie,
        nodes=c.nodes,
    )
    data = np.random.default_rng(len(aid)).random(shape)
    arr[...] = data
    return data


# -- basics ----------------------------------------------------------------------------------
def test_version_help_and_console_script(home: Path) -> None:
    import tomllib

    out = cli(home, "--version").stdout
    assert out.startswith("pyrlang-zarr ")
    text = cli(home, "--help").stdout
    for command in ("cluster", "ping", "ls", "info", "rm", "cp", "demo"):
        assert command in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"pyrlang-zarr": "pyrlang_zarr.cli:main"}


# -- cluster up / status / down --------------------------------------------------------------
def test_cluster_lifecycle_keeps_nodes_and_data(home: Path, tmp_path: Path) -> None:
    cookie_file = tmp_path / "cookie"
    cookie_file.write_text("lifecycle-cookie-" + uuid.uuid4().hex)
    cookie_file.chmod(0o400)
    where = ["--dir", str(tmp_path / "c")]
    prefix = "t" + uuid.uuid4().hex[:5]
    out = cli(
        home,
        "cluster",
        "up",
        "--nodes",
        "2",
        "--prefix",
        prefix,
        "--cookie-file",
        str(cookie_file),
        *where,
        *GENTLE,
    ).stdout
    state = json.loads((tmp_path / "c" / "cluster.json").read_text())
    names = [n["name"] for n in state["nodes"]]
    assert [n.split("@")[0] for n in names] == [f"{prefix}1", f"{prefix}2"]
    for n in state["nodes"]:
        assert n["name"] in out and n["mnesia_dir"] in out
        # the cookie is nowhere on the nodes' command lines
        cmdline = Path(f"/proc/{n['pid']}/cmdline").read_bytes()
        assert cookie_file.read_text().encode() not in cmdline
    assert "export ERLANG_COOKIE=$(cat" in out and "zarr_storage" in out
    copied = Path(state["cookie_file"])
    assert copied.stat().st_mode & 0o777 == 0o400

    # the command has returned and the nodes still run; other commands find the cookie
    status = cli(home, "cluster", "status", *where).stdout
    assert status.count(" yes ") == 2, status
    st = json.loads(cli(home, "cluster", "status", "--json", *where).stdout)
    assert [s["mnesia"] for s in st["status"]] == ["yes", "yes"]
    assert "usable" in cli(home, "ping", names[0], *where).stdout
    aid = new_id()
    local = tmp_path / "src.zarr"
    z = zarr.create_array(str(local), shape=(10,), chunks=(5,), dtype="i4")
    z[:] = np.arange(10)
    cli(home, "cp", str(local), f"mnesia://{names[1]}/zarr_storage/{aid}", *where)

    # down --keep, then up again: same names, the data survived on disc
    cli(home, "cluster", "down", "--keep", *where)
    down = cli(home, "cluster", "status", *where, code=1).stdout
    assert "process not running" in down
    refused = cli(home, "cluster", "up", "--tls", *where, code=1).stderr
    assert "runs plain TCP distribution" in refused  # kept as it was, not switched
    again = cli(home, "cluster", "up", *where).stdout
    assert "again" in again and all(n in again for n in names)
    listing = cli(home, "ls", names[0], *where).stdout
    assert aid in listing and " 10 " in listing
    cli(home, "cluster", "up", *where, code=1)  # already running: refused
    cli(home, "cluster", "down", *where)
    assert not (tmp_path / "c").exists()
    gone = subprocess.run(["epmd", "-names"], capture_output=True, text=True, check=False).stdout
    assert f"name {prefix}1 " not in gone


def erl_ping(home: Path, node: str, *dist: str) -> str:
    """``net_adm:ping(node)`` from a throwaway erl with ``home``'s cookie, as an operator
    would: ``pong`` or ``pang``."""
    done = subprocess.run(
        [
            "erl",
            "-noshell",
            "-sname",
            "probe" + uuid.uuid4().hex[:6],
            *dist,
            "-eval",
            f"io:format(\"~p~n\", [net_adm:ping('{node}')]), halt().",
        ],
        env=env_for(home),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr


def test_cluster_up_tls_runs_tls_distribution(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cluster up --tls``: the nodes speak TLS distribution only; the command line and erl
    reach them with the client optfile it made, plain TCP does not."""
    where = ["--dir", str(tmp_path / "c")]
    prefix = "s" + uuid.uuid4().hex[:5]
    out = cli(
        home, "cluster", "up", "--tls", "--nodes", "2", "--prefix", prefix, *where, *GENTLE
    ).stdout
    state = json.loads((tmp_path / "c" / "cluster.json").read_text())
    names = [n["name"] for n in state["nodes"]]
    client = Path(state["tls_dir"]) / "client.optfile"
    assert str(client) in out and "zarr_storage" in out  # Mnesia was set up over TLS
    try:
        for n in state["nodes"]:
            args = Path(f"/proc/{n['pid']}/cmdline").read_bytes().split(b"\0")
            assert b"inet_tls" in args and b"-ssl_dist_optfile" in args
        status = cli(home, "cluster", "status", *where).stdout
        assert status.count(" yes ") == 2 and "TLS distribution" in status, status
        # the command line finds the cluster's client optfile for its nodes, even with
        # another cluster's in the environment
        other = CA(tmp_path / "other")
        elsewhere = write_optfile(tmp_path / "other.optfile", other.issue("c"), other.cafile)
        monkeypatch.setenv(OPTFILE_ENV, str(elsewhere))
        assert "usable" in cli(home, "ping", names[1], *where).stdout
        monkeypatch.delenv(OPTFILE_ENV)
        # from the Erlang side: the operator's erl that cluster up prints, and one without TLS
        tls_erl = ["-hidden", "-proto_dist", "inet_tls", "-ssl_dist_optfile", str(client)]
        assert f"erl {' '.join(tls_erl)}" in out
        assert erl_ping(home, names[0], *tls_erl) == "pong"
        assert erl_ping(home, names[0]) == "pang"

        async def nodes_seen(tls: Any) -> Any:
            cookie = (home / ".erlang.cookie").read_text()
            async with pz.Node(cookie=cookie, tls=tls, connect_timeout=5) as node:
                return await node.rpc(names[0], "erlang", "nodes", [])

        # the probes left the nodes' mesh as it was; plain TCP is refused
        assert asyncio.run(nodes_seen(str(client))) == [pz.Atom(names[1])]
        with pytest.raises(pz.PyrlangZarrError, match="TLS"):
            asyncio.run(nodes_seen(False))
        # a kept TLS cluster comes back as it was
        cli(home, "cluster", "down", "--keep", *where)
        again = cli(home, "cluster", "up", *where).stdout
        assert "again" in again and str(client) in again
    finally:
        cli(home, "cluster", "down", *where)
    assert not (tmp_path / "c").exists()


def test_a_tls_clusters_optfile_is_for_its_own_nodes_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In one command (``cp`` between two URLs, say) the local TLS cluster's client optfile
    goes to its own nodes' connections and no further: nothing is put in the environment."""
    from pyrlang_zarr import cli as cli_module
    from pyrlang_zarr.devcluster import ClusterState, NodeState

    monkeypatch.delenv(OPTFILE_ENV, raising=False)
    cookie = tmp_path / "cookie"
    cookie.write_text("c" * 20)
    cookie.chmod(0o400)
    tls_dir = tmp_path / "c" / "tls"
    (tmp_path / "c").mkdir()
    node = NodeState("own1@host", None, str(tmp_path), str(tmp_path), str(tmp_path / "log"))
    state = ClusterState(
        str(tmp_path / "c"), "own", str(cookie), None, "t", False, [], [node], str(tls_dir)
    )
    state.save()
    args = cli_module._parser().parse_args(["ls", "other@host", "--dir", state.dir])
    for _ in range(2):  # in either order
        own = cli_module._storage_options(args, "mnesia://own1@host/t/a")
        other = cli_module._storage_options(args, "mnesia://other@host/t/a")
        assert own == {"tls": str(tls_dir / "client.optfile"), "cookie": "c" * 20}
        assert other == {} and OPTFILE_ENV not in os.environ
    # --tls-optfile, given, applies to every node
    args.tls_optfile = str(tmp_path / "given.optfile")
    assert "tls" not in cli_module._storage_options(args, "mnesia://own1@host/t/a")


def test_cluster_up_tls_needs_cryptography(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyrlang_zarr import devcluster

    monkeypatch.setitem(sys.modules, "pyrlang_zarr.testing.certs", None)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(devcluster.ClusterError, match="pip install cryptography"):
        asyncio.run(devcluster.up(2, directory=tmp_path / "c", tls=True, say=lambda _: None))
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing made: no dir, no cookie


# -- ping ------------------------------------------------------------------------------------
def test_ping_reports_each_problem_with_its_fix(
    home: Path, tmp_path: Path, ready: LocalCluster
) -> None:
    cluster = ready
    node = cluster.nodes[0]
    ok = cli(home, "ping", node, cookie=cluster.cookie).stdout
    for check in ("name", "epmd", "connect", "otp", "mnesia", "schema", "table"):
        assert any(line.split()[:2] == ["ok", check] for line in ok.splitlines()), ok
    assert "OTP " in ok and ok.strip().endswith("usable")

    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-cookie")
    wrong.chmod(0o400)
    bad = cli(home, "ping", node, "--cookie-file", str(wrong), code=1).stdout
    assert "FAIL  connect" in bad and "fix: use the node's cookie" in bad

    host = node.split("@")[1]
    missing = cli(home, "ping", f"nosuch{uuid.uuid4().hex[:4]}@{host}", code=1).stdout
    assert "FAIL  epmd" in missing and node in missing  # it lists the names it knows

    checks = json.loads(cli(home, "ping", node, "--json", cookie=cluster.cookie).stdout)
    assert {c["status"] for c in checks} == {"ok"}


def test_ping_mnesia_stopped_and_ram_schema(home: Path) -> None:
    with LocalCluster(n=1) as fresh:
        node = fresh.nodes[0]
        out = cli(home, "ping", node, cookie=fresh.cookie, code=1).stdout
        assert "FAIL  mnesia" in out and "no disc schema yet" in out
        assert "pz.create(..., nodes=[...])" in out
        fresh.erl_eval(0, "mnesia:start()")  # no disc schema: Mnesia makes a RAM one
        out = cli(home, "ping", node, cookie=fresh.cookie).stdout
        assert "warn  schema" in out and "ram_copies=True" in out
        assert "warn  table" in out  # no table yet: a warning, with what creates it


def test_ping_judges_the_table(home: Path) -> None:
    """Another application's table, a majority table on two replicas, a replica down."""
    with LocalCluster(n=2) as c:
        node = c.nodes[0]

        async def setup() -> None:
            async with pz.Node(cookie=c.cookie) as py:
                await ensure_table(py, c.nodes, "pz_majority", majority=True)

        pzs.run(setup())
        c.erl_eval(
            0, "mnesia:create_table(pz_foreign, [{attributes, [a, b, c]}, {ram_copies, [node()]}])."
        )
        foreign = cli(home, "ping", node, "--table", "pz_foreign", cookie=c.cookie, code=1).stdout
        assert "FAIL  table" in foreign and "belongs to something else" in foreign
        two = cli(home, "ping", node, "--table", "pz_majority", cookie=c.cookie).stdout
        assert "warn  table" in two and "majority with 2 replica(s)" in two
        assert "majority true" in two and "0 records" in two
        c.stop_node(1)
        down = cli(home, "ping", node, "--table", "pz_majority", cookie=c.cookie).stdout
        assert "warn  table" in down and f"replicas not active: {c.nodes[1]}" in down


# -- ls / info / rm --------------------------------------------------------------------------
def test_ls_info_rm(home: Path, cluster: LocalCluster) -> None:
    aid = new_id()
    make_array(cluster, aid, (30, 20), (10, 10))
    node = cluster.nodes[1]
    out = cli(home, "ls", node, cookie=cluster.cookie).stdout
    row = next(line for line in out.splitlines() if line.startswith(aid))
    assert row.split()[1:5] == ["array", "30x20", "float64", "10x10"]
    assert row.split()[-1] == "2/2"  # replicas running / replicas
    assert "disc_copies on " + ", ".join(sorted(cluster.nodes)) in out
    entry = next(
        a
        for a in json.loads(cli(home, "ls", node, "--json", cookie=cluster.cookie).stdout)
        if a["array_id"] == aid
    )
    assert entry["records"] == 7 and entry["stored_bytes"] > 0
    assert entry["replicas"] == sorted(cluster.nodes) and entry["replicas_down"] == []

    url = f"mnesia://{node}/zarr_storage/{aid}"
    info = cli(home, "info", url, cookie=cluster.cookie).stdout
    assert "Records            : 7" in info and "Chunk shape        : (10, 10)" in info
    assert "Replicas           : disc_copies on" in info

    assert "would remove" in cli(home, "rm", "-n", url, cookie=cluster.cookie).stdout
    removed = cli(home, "rm", url, cookie=cluster.cookie).stdout
    assert removed.startswith(f"removed {url} (7 records")
    err = cli(home, "rm", url, cookie=cluster.cookie, code=1).stderr
    assert "not_found" in err
    err = cli(home, "ls", node, "--table", "nosuch", cookie=cluster.cookie, code=1).stderr
    assert "table_not_found" in err and "--table" in err


# -- cp --------------------------------------------------------------------------------------
def open_data(url_or_path: str, cookie: str) -> Any:
    options = {"cookie": cookie} if url_or_path.startswith("mnesia://") else None
    import fsspec

    from pyrlang_zarr.url import MnesiaFileSystem

    fsspec.register_implementation("mnesia", MnesiaFileSystem, clobber=True)
    return zarr.open_array(url_or_path, mode="r", storage_options=options)[...]


def test_cp_both_ways_and_mnesia_to_mnesia(
    home: Path, tmp_path: Path, cluster: LocalCluster
) -> None:
    aid = new_id()
    data = make_array(cluster, aid, (40, 30), (10, 10))
    n0, n1 = cluster.nodes
    src = f"mnesia://{n0}/zarr_storage/{aid}"
    local = tmp_path / "copy.zarr"
    out = cli(home, "cp", src, str(local), cookie=cluster.cookie)
    assert "13 keys: 13 copied, 0 already there" in out.stdout
    assert np.array_equal(open_data(str(local), cluster.cookie), data)
    # plain lines on stderr when it is not a terminal: the start and the end
    lines = out.stderr.splitlines()
    assert lines[1].startswith("copy 0/13 chunks (0%)") and "\r" not in out.stderr
    assert lines[-1].startswith("copy 13/13 chunks (100%)") and "done in" in lines[-1]

    back = f"mnesia://{n1}/zarr_storage/{aid}-back"
    cli(home, "cp", str(local), back, "--verify", cookie=cluster.cookie)
    third = f"mnesia://{n0}/zarr_storage/{aid}-third"
    out = cli(home, "cp", back, third, "--progress", "none", cookie=cluster.cookie)
    assert out.stderr.count("\n") == 1  # only the "copy A -> B" line
    assert np.array_equal(open_data(third, cluster.cookie), data)
    # the same again: nothing to do
    assert (
        "0 copied, 13 already there" in cli(home, "cp", back, third, cookie=cluster.cookie).stdout
    )

    # another array at the destination is refused without --overwrite
    other = new_id()
    make_array(cluster, other, (5,), (5,))
    dest = f"mnesia://{n0}/zarr_storage/{other}"
    err = cli(home, "cp", str(local), dest, cookie=cluster.cookie, code=1).stderr
    assert "already holds a different zarr array" in err and "--overwrite" in err
    cli(home, "cp", str(local), dest, "--overwrite", cookie=cluster.cookie)
    assert np.array_equal(open_data(dest, cluster.cookie), data)

    # a table that does not exist: the hint says how to create it
    err = cli(
        home, "cp", str(local), f"mnesia://{n0}/nosuch/{aid}", cookie=cluster.cookie, code=1
    ).stderr
    assert "?nodes=" in err


def test_cp_progress_bar_on_a_terminal(home: Path, tmp_path: Path, cluster: LocalCluster) -> None:
    aid = new_id()
    make_array(cluster, aid, (20, 20), (5, 5))
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pyrlang_zarr",
            "cp",
            f"mnesia://{cluster.nodes[0]}/zarr_storage/{aid}",
            str(tmp_path / "tty.zarr"),
        ],
        env=env_for(home, cluster.cookie),
        stdout=subprocess.PIPE,
        stderr=slave,
        cwd=home,
    )
    os.close(slave)
    seen = b""
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        seen += data
    os.close(master)
    assert proc.wait(timeout=120) == 0
    text = seen.decode()
    assert "\r[" in text and "#" * 24 + "] copy 17/17 chunks (100%)" in text
    assert proc.stdout is not None and "17 copied" in proc.stdout.read().decode()


def test_cp_interrupted_then_run_again(home: Path, tmp_path: Path, cluster: LocalCluster) -> None:
    """An interruption after 10 keys; the same command again copies the rest, skips those
    10 (compared byte for byte), and the result is the source."""
    local = tmp_path / "big.zarr"
    data = np.random.default_rng(7).random((60, 60))
    z = zarr.create_array(str(local), shape=(60, 60), chunks=(10, 10), dtype="float64")
    z[:] = data
    aid = new_id()
    dst_url = f"mnesia://{cluster.nodes[0]}/zarr_storage/{aid}"

    class Interrupted(Exception):
        pass

    def stop_after_ten(p: Progress) -> None:
        if p.chunks_done == 10:
            raise Interrupted

    async def first_run() -> None:
        src = transfer.location(str(local), write=False)
        dst = transfer.location(dst_url, write=True, cookie=cluster.cookie)
        await transfer.copy(src, dst, progress=stop_after_ten, jobs=1)

    with pytest.raises(Interrupted):
        pzs.run(first_run())
    out = cli(home, "cp", str(local), dst_url, cookie=cluster.cookie).stdout
    assert "37 keys: 27 copied, 10 already there" in out
    assert np.array_equal(open_data(dst_url, cluster.cookie), data)

    # killed by Ctrl-C in the middle (SIGINT): exit 130 and the command to run again
    back = tmp_path / "back.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyrlang_zarr", "cp", dst_url, str(back), "--jobs", "1"],
        env=env_for(home, cluster.cookie),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=home,
    )
    assert proc.stderr is not None
    while not proc.stderr.readline().startswith("copy 0/37"):
        pass
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted; run `pyrlang-zarr cp" in err and "again to finish" in err
    # a stale key at the destination (not in the source) goes away on the next run
    (back / "c" / "9").mkdir(parents=True, exist_ok=True)
    (back / "c" / "9" / "9").write_bytes(b"junk")
    out = cli(home, "cp", dst_url, str(back), cookie=cluster.cookie).stdout
    assert "1 stale removed" in out
    assert np.array_equal(open_data(str(back), cluster.cookie), data)
