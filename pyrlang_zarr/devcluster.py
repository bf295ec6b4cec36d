"""``pyrlang-zarr cluster up|status|down``: local Erlang nodes that outlive the command.

``up`` starts ``n`` plain ``erl`` nodes (``node1@HOST``, ...), each in a session of its own
with its log and Mnesia directory under one directory (``--dir``, default
``~/.local/state/pyrlang-zarr/cluster``), records them in ``cluster.json`` there, sets Mnesia
and the table up on them, and returns with the nodes running. ``status`` checks them,
``down`` stops them (SIGTERM: BEAM stops gracefully) and removes the directory, or with
``keep`` keeps the Mnesia data so that ``up`` starts the same nodes on it again.

The cookie never appears on a command line: by default the nodes use ``~/.erlang.cookie``
(created owner-only with a random cookie if missing, as ``erl`` does), which the library
and ``erl -remsh`` read too. With ``cookie_file`` the nodes get a home directory of their
own holding a copy of it.

With ``tls`` the nodes run TLS distribution (``-proto_dist inet_tls``), as OTP's guide sets
it up: a CA of the cluster's own and certificates under ``DIR/tls`` (``node.optfile`` for
the nodes, ``client.optfile`` for clients: the command line finds it for this cluster's
nodes, ``erl`` takes it as ``-ssl_dist_optfile``). Making them needs ``cryptography``.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyrlang_zarr as pz
from pyrlang_zarr.erldist.tls import TlsConfig
from pyrlang_zarr.mnesia import TableInfo, ensure_table
from pyrlang_zarr.store import DEFAULT_TABLE
from pyrlang_zarr.url import read_cookie_file

__all__ = [
    "ClusterError",
    "ClusterState",
    "NodeStatus",
    "cluster_of",
    "default_dir",
    "down",
    "load",
    "status",
    "up",
]

STATE_FILE = "cluster.json"
READY = "pz-cluster-ready"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
# Idle schedulers need not spin; multi-MB chunks need more than the 1 MB busy limit.
NODE_FLAGS = ("+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none", "+zdbbl", "65536")
_READY_EVAL = f'io:format("{READY} ~s ~s~n", [node(), os:getpid()]).'


class ClusterError(Exception):
    """The local cluster cannot be started, found or stopped; the message says why."""


def default_dir() -> Path:
    """``$PYRLANG_ZARR_CLUSTER_DIR``, else ``$XDG_STATE_HOME/pyrlang-zarr/cluster``, else
    ``~/.local/state/pyrlang-zarr/cluster``."""
    given = os.environ.get("PYRLANG_ZARR_CLUSTER_DIR")
    if given:
        return Path(given).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "pyrlang-zarr" / "cluster"


@dataclass
class NodeState:
    name: str
    pid: int | None
    dir: str
    mnesia_dir: str
    log: str


@dataclass
class ClusterState:
    dir: str
    prefix: str
    cookie_file: str
    node_home: str | None  # HOME of the nodes when it is not ours
    table: str
    ram_copies: bool
    extra_args: list[str] = field(default_factory=list)
    nodes: list[NodeState] = field(default_factory=list)
    tls_dir: str | None = None  # TLS distribution: the CA, certificates and optfiles

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    @property
    def node_optfile(self) -> Path | None:
        """The nodes' ``ssl_dist_optfile`` (``None``: plain TCP distribution)."""
        return None if self.tls_dir is None else Path(self.tls_dir) / "node.optfile"

    @property
    def client_optfile(self) -> Path | None:
        """A client's ``ssl_dist_optfile`` for the nodes (``None``: plain TCP)."""
        return None if self.tls_dir is None else Path(self.tls_dir) / "client.optfile"

    def client_tls(self) -> TlsConfig | bool:
        """What ``Node(tls=...)`` takes to reach the nodes."""
        optfile = self.client_optfile
        return False if optfile is None else TlsConfig.from_optfile(optfile)

    def save(self) -> None:
        path = Path(self.dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)

    def cookie(self) -> str:
        return read_cookie_file(self.cookie_file)


def load(directory: Path | None = None) -> ClusterState | None:
    """The cluster recorded in ``directory`` (default :func:`default_dir`), or ``None``."""
    path = (directory or default_dir()) / STATE_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ClusterError(
            f"{path} is damaged ({exc}); remove it and stop the nodes by hand"
        ) from None
    nodes = [NodeState(**n) for n in raw.pop("nodes", [])]
    return ClusterState(**raw, nodes=nodes)


def cluster_of(node: str, directory: Path | None = None) -> ClusterState | None:
    """The local cluster in ``directory`` if ``node`` is one of its nodes (its cookie and
    TLS settings are then the ones to use)."""
    try:
        state = load(directory)
    except ClusterError:
        return None
    if state is None or node not in state.names:
        return None
    return state


def _make_tls(tls_dir: Path) -> None:
    """A CA, one certificate for the nodes (naming this host) and one for clients, with
    their optfiles, in ``tls_dir``; good for ten years (a kept cluster may be started again
    much later)."""
    try:
        from pyrlang_zarr.testing.certs import CA, write_optfile
    except ImportError:
        raise ClusterError(
            "--tls makes a CA and certificates with the cryptography package: "
            "pip install cryptography (or pyrlang_zarr[test])"
        ) from None
    host = socket.gethostname()
    hosts = sorted({host, host.partition(".")[0], socket.getfqdn(), "localhost", "127.0.0.1"})
    # within the CA's own ten years
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=3649)
    ca = CA(tls_dir)
    nodes = ca.issue("nodes", hosts=hosts, not_after=until)
    write_optfile(tls_dir / "node.optfile", nodes, ca.cafile)
    client = ca.issue("client", not_after=until)
    write_optfile(tls_dir / "client.optfile", client, ca.cafile, server=False)


def _alive(pid: int | None, short_name: str) -> bool:
    """Whether ``pid`` is still the BEAM of node ``short_name`` (not a reused pid)."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return True  # no /proc: trust the pid
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    return b"-sname" in args and short_name.encode() in args


def _own_cookie_file() -> tuple[Path, bool]:
    """``~/.erlang.cookie``, created owner-only with a random cookie if missing."""
    path = Path.home() / ".erlang.cookie"
    if path.exists():
        read_cookie_file(path)  # owner-only, not empty
        return path, False
    cookie = "".join(secrets.choice(string.ascii_uppercase) for _ in range(20))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(fd, "w") as f:
        f.write(cookie)
    return path, True


def _erlang_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _launch(state: ClusterState, node: NodeState, erl: str) -> subprocess.Popen[bytes]:
    short = node.name.partition("@")[0]
    Path(node.mnesia_dir).mkdir(parents=True, exist_ok=True)
    argv = [
        erl,
        "-sname",
        short,
        "-noinput",
        *NODE_FLAGS,
        "-mnesia",
        "dir",
        _erlang_string(node.mnesia_dir),
        *state.extra_args,
        *_tls_args(state),
        "-eval",
        _READY_EVAL,
    ]
    env = {**os.environ, "ERL_CRASH_DUMP": str(Path(node.dir) / "erl_crash.dump")}
    env.pop("ERL_FLAGS", None)
    if state.node_home is not None:
        env["HOME"] = state.node_home
    with open(node.log, "ab") as log:
        log.write(f"--- {node.name} starting at {time.ctime()} ---\n".encode())
        log.flush()
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=node.dir,
            env=env,
            start_new_session=True,  # survives the command, away from its terminal's signals
        )


def _tls_args(state: ClusterState) -> list[str]:
    optfile = state.node_optfile
    if optfile is None:
        return []
    return ["-proto_dist", "inet_tls", "-ssl_dist_optfile", str(optfile)]


def _wait_ready(node: NodeState, proc: subprocess.Popen[bytes], deadline: float) -> None:
    pattern = re.compile(rf"^{READY} (\S+) (\d+)$", re.MULTILINE)
    while True:
        text = Path(node.log).read_text(errors="replace")
        text = text[text.rfind(f"--- {node.name} starting") :]
        found = pattern.search(text)
        if found:
            node.name = found.group(1)
            node.pid = int(found.group(2))
            return
        if proc.poll() is not None:
            tail = "\n".join(text.splitlines()[-15:])
            hint = ""
            if "in use" in text or "duplicate_name" in text:
                hint = " (a node of that name already runs on this host: choose --prefix)"
            raise ClusterError(f"{node.name} did not start{hint}; {node.log} ends with:\n{tail}")
        if time.monotonic() > deadline:
            raise ClusterError(f"{node.name} not ready in {START_TIMEOUT} s; see {node.log}")
        time.sleep(0.05)


async def up(
    n: int = 3,
    *,
    directory: Path | None = None,
    prefix: str = "node",
    cookie_file: Path | None = None,
    table: str = DEFAULT_TABLE,
    ram_copies: bool = False,
    setup: bool = True,
    extra_args: Sequence[str] = (),
    tls: bool = False,
    say: Callable[[str], None] = print,
) -> ClusterState:
    """Start the nodes (or those of a cluster stopped with ``keep``, as they were) and set
    Mnesia up; with ``tls``, new nodes run TLS distribution."""
    base = (directory or default_dir()).expanduser().absolute()
    erl = shutil.which("erl")
    if erl is None:
        raise ClusterError("`erl` not found on PATH: install Erlang/OTP (Debian: erlang-nox)")
    state = load(base)
    if state is not None:
        running = [x.name for x in state.nodes if _alive(x.pid, x.name.partition("@")[0])]
        if running:
            raise ClusterError(
                f"a cluster already runs from {base}: {', '.join(running)} "
                "(`pyrlang-zarr cluster status`; `cluster down` stops it, --dir picks another)"
            )
        if tls and state.tls_dir is None:
            raise ClusterError(
                f"the cluster kept in {base} runs plain TCP distribution: `pyrlang-zarr cluster "
                "up` starts it as it was; `cluster down` (without --keep) ends it, and "
                "`cluster up --tls` then starts a TLS one"
            )
        say(f"starting the cluster kept in {base} again ({len(state.nodes)} nodes)")
    else:
        if n < 1:
            raise ClusterError(f"--nodes must be at least 1, got {n}")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", prefix):
            raise ClusterError(f"bad --prefix {prefix!r}: letters, digits, _ and - only")
        tls_dir = None
        if tls:  # first: if it cannot be made, nothing else is
            _make_tls(base / "tls")
            tls_dir = str(base / "tls")
        base.mkdir(parents=True, exist_ok=True)
        if cookie_file is None:
            path, created = _own_cookie_file()
            node_home = None
            say(f"cookie: {path} ({'created' if created else 'existing'})")
        else:
            secret = read_cookie_file(cookie_file)
            home = base / "home"
            home.mkdir(exist_ok=True)
            path = home / ".erlang.cookie"
            path.unlink(missing_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "w") as f:
                f.write(secret)
            node_home = str(home)
            say(f"cookie: {cookie_file} (copied to {path})")
        host = "localhost"  # replaced by the name each node reports
        nodes = []
        for i in range(1, n + 1):
            d = base / f"{prefix}{i}"
            d.mkdir(exist_ok=True)
            nodes.append(
                NodeState(
                    f"{prefix}{i}@{host}", None, str(d), str(d / "mnesia"), str(d / "node.log")
                )
            )
        state = ClusterState(
            str(base),
            prefix,
            str(path),
            node_home,
            table,
            ram_copies,
            list(extra_args),
            nodes,
            tls_dir,
        )
    procs = [_launch(state, x, erl) for x in state.nodes]
    deadline = time.monotonic() + START_TIMEOUT
    try:
        for x, proc in zip(state.nodes, procs, strict=True):
            _wait_ready(x, proc, deadline)
    except BaseException:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        raise
    finally:
        state.save()
    say(f"started {len(state.nodes)} Erlang node(s) from {base}:")
    for x in state.nodes:
        say(f"  {x.name:<24} pid {x.pid:<8} mnesia {x.mnesia_dir}")
        say(f"  {'':<24} log {x.log}")
    env_cookie = os.environ.get("ERLANG_COOKIE") or os.environ.get("RELEASE_COOKIE")
    if env_cookie is not None and env_cookie != state.cookie():
        say(
            "warning: ERLANG_COOKIE/RELEASE_COOKIE is set to another cookie, and pyrlang_zarr "
            f"prefers it: unset it, or export ERLANG_COOKIE=$(cat {state.cookie_file})"
        )
    elif state.node_home is not None:
        say(f"for pyrlang_zarr and erl: export ERLANG_COOKIE=$(cat {state.cookie_file})")
    if setup:
        info = await _setup(state)
        say(
            f"Mnesia running; table {info.name} ({info.type}, {info.storage}) on "
            f"{', '.join(info.replicas)}"
        )
    first = state.nodes[0].name
    if state.client_optfile is not None:
        say(
            f"TLS distribution: CA and certificates in {state.tls_dir}; clients: "
            f"--tls-optfile {state.client_optfile} (pyrlang-zarr finds it for these nodes), "
            f"erl -hidden -proto_dist inet_tls -ssl_dist_optfile {state.client_optfile} "
            f"(a full member: {state.node_optfile})"
        )
    say(f"next: pyrlang-zarr ping {first}; stop: pyrlang-zarr cluster down")
    return state


async def _setup(state: ClusterState) -> TableInfo:
    async with pz.Node(cookie=state.cookie(), tls=state.client_tls()) as node:
        return await ensure_table(node, state.names, state.table, ram_copies=state.ram_copies)


@dataclass(frozen=True)
class NodeStatus:
    name: str
    pid: int | None
    process: bool  # the OS process is alive
    reachable: bool  # answers rpc with our cookie
    mnesia: str  # is_running, or why unknown
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.process and self.reachable


async def status(directory: Path | None = None) -> tuple[ClusterState, list[NodeStatus]]:
    """Each node of the recorded cluster: process alive, reachable, Mnesia running."""
    base = (directory or default_dir()).expanduser().absolute()
    state = load(base)
    if state is None:
        raise ClusterError(f"no cluster recorded in {base}: `pyrlang-zarr cluster up` starts one")
    out = []
    async with pz.Node(
        cookie=state.cookie(), connect_timeout=5.0, rpc_timeout=5.0, tls=state.client_tls()
    ) as node:
        for x in state.nodes:
            alive = _alive(x.pid, x.name.partition("@")[0])
            if not alive:
                out.append(NodeStatus(x.name, x.pid, False, False, "-", "process not running"))
                continue
            try:
                running = await node.rpc(x.name, "mnesia", "system_info", [pz.Atom("is_running")])
            except pz.PyrlangZarrError as exc:
                out.append(NodeStatus(x.name, x.pid, True, False, "?", str(exc)))
                continue
            out.append(NodeStatus(x.name, x.pid, True, True, str(running)))
    return state, out


def _stop(x: NodeState) -> bool:
    """SIGTERM (BEAM runs ``init:stop()``), SIGKILL after a grace period; True if it ran."""
    short = x.name.partition("@")[0]
    if not _alive(x.pid, short):
        return False
    assert x.pid is not None
    os.kill(x.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while _alive(x.pid, short):
        if time.monotonic() > deadline:
            os.kill(x.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    while _alive(x.pid, short):  # after SIGKILL: until the kernel has it gone
        time.sleep(0.05)
    return True


def down(
    directory: Path | None = None, *, keep: bool = False, say: Callable[[str], None] = print
) -> ClusterState:
    """Stop the nodes; remove the directory unless ``keep`` (then ``up`` restarts them)."""
    base = (directory or default_dir()).expanduser().absolute()
    state = load(base)
    if state is None:
        raise ClusterError(f"no cluster recorded in {base}")
    for x in state.nodes:
        stopped = _stop(x)
        say(f"{x.name}: {'stopped' if stopped else 'was not running'}")
        x.pid = None
    if keep:
        state.save()
        say(f"kept {base} (Mnesia data, names, cookie): `pyrlang-zarr cluster up` restarts it")
    else:
        _remove(base, state)
        say(f"removed {base}")
    return state


def _remove(base: Path, state: ClusterState) -> None:
    """Only what ``up`` made: the state, the node directories and the nodes' home."""
    for x in state.nodes:
        shutil.rmtree(x.dir, ignore_errors=True)
    if state.tls_dir is not None:
        shutil.rmtree(state.tls_dir, ignore_errors=True)
    if state.node_home is not None:
        home = Path(state.node_home)
        cookie = home / ".erlang.cookie"
        if cookie.exists():
            cookie.chmod(0o600)
        shutil.rmtree(home, ignore_errors=True)
    (base / STATE_FILE).unlink(missing_ok=True)
    try:
        base.rmdir()
    except OSError:
        pass  # something else lives there: leave it


def as_json(state: ClusterState, statuses: Sequence[NodeStatus] = ()) -> dict[str, Any]:
    out = asdict(state)
    out["client_optfile"] = None if state.client_optfile is None else str(state.client_optfile)
    if statuses:
        out["status"] = [asdict(s) for s in statuses]
    return out
