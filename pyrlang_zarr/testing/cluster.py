"""Real local Erlang nodes for development, examples, the README demo and tests.

The nodes are plain ``erl`` processes that never run any of our protocol code, so a test can
check the library against an Erlang side it did not set up itself. Readiness is read from
each node's log and checks from the Erlang side go through a throwaway ``erl`` node
(:meth:`LocalCluster.erl_eval`), so a bug in the library cannot hide a bug in the cluster.

The cookie is never on a command line (``/proc/PID/cmdline`` is readable by every local
user): each ``erl`` gets a ``HOME`` of its own under the cluster's directory, holding an
owner-only ``.erlang.cookie``, which ``erl`` reads as it always does. With ``tls=True`` the
nodes (and the helper) run TLS distribution, ``-proto_dist inet_tls -ssl_dist_optfile F``,
with a CA and certificates made for the cluster in ``base_dir/tls``
(:mod:`pyrlang_zarr.testing.certs`, needs ``cryptography``).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from pyrlang_zarr.erldist.tls import TlsConfig
    from pyrlang_zarr.testing.certs import CA

__all__ = ["ErlNode", "LocalCluster"]

READY_MARKER = "pz-ready"
"""First word of the line a node prints once it is registered in EPMD and distributed."""

START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
EPMD_TIMEOUT = 10.0

ERL_ENV = "PZ_ERL"
"""Environment variable naming the ``erl`` command to start nodes with (default: ``erl`` on PATH).

Any command that takes ``erl``'s arguments and becomes the node, such as ``.ci/otp27-erl``
(OTP 27 in a Debian 13 root); the host's ``epmd`` on PATH still answers for every node.
"""

# BEAM schedulers busy-wait; several nodes on a 2-core machine turn timings into noise.
SMALL_MACHINE_FLAGS = ("+S", "1", "+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none")
# Multi-MB chunks would hit the default 1 MB distribution buffer busy limit.
DIST_BUFFER_FLAGS = ("+zdbbl", "65536")

# Prints the readiness marker, then stops the node gracefully when its stdin closes, so nodes
# do not outlive a test runner that was killed before it could clean up.
_NODE_EVAL = (
    f'io:format("{READY_MARKER} ~s~n", [node()]), '
    "spawn(fun() -> P = open_port({fd, 0, 1}, [in, eof, binary]), "
    "(fun L() -> receive {P, eof} -> init:stop(); {P, _} -> L() end end)() end)."
)

# Runs on a short-lived hidden node: evaluates PZ_EVAL_EXPR on PZ_EVAL_TARGET with erl_eval.
# Input and output travel hex-encoded so neither shell quoting nor locale can mangle them.
_HELPER_EVAL = """
Hex = fun(T) ->
    Opts = [{column, 1}, {line_length, 100000000}, {depth, -1}, {encoding, unicode}],
    binary:encode_hex(unicode:characters_to_binary(io_lib_pretty:print(T, Opts)))
end,
try
    Expr = unicode:characters_to_list(binary:decode_hex(list_to_binary(os:getenv("PZ_EVAL_EXPR")))),
    Target = list_to_atom(os:getenv("PZ_EVAL_TARGET")),
    Timeout = list_to_integer(os:getenv("PZ_EVAL_TIMEOUT_MS")),
    {ok, Tokens, _} = erl_scan:string(Expr),
    {ok, Exprs} = erl_parse:parse_exprs(Tokens),
    case rpc:call(Target, erl_eval, exprs, [Exprs, erl_eval:new_bindings()], Timeout) of
        {value, Value, _} -> io:format("pz-result ~s~n", [Hex(Value)]), halt(0);
        Other -> io:format("pz-error ~s~n", [Hex(Other)]), halt(2)
    end
catch
    Class:Reason -> io:format("pz-error ~s~n", [Hex({Class, Reason})]), halt(3)
end.
"""

EPMD_NAME = re.compile(r"^name (\S+) at port \d+$", re.MULTILINE)


@dataclass(eq=False)
class ErlNode:
    """One ``erl`` process of a :class:`LocalCluster` and the files it owns."""

    name: str
    short_name: str
    dir: Path
    mnesia_dir: Path
    log_path: Path
    argv: list[str] = field(repr=False)
    env: dict[str, str] = field(repr=False)
    process: subprocess.Popen[bytes] = field(init=False, repr=False)
    _log_offset: int = field(default=0, init=False, repr=False)

    @property
    def alive(self) -> bool:
        return hasattr(self, "process") and self.process.poll() is None

    @property
    def os_pid(self) -> int:
        return self.process.pid

    def launch(self) -> None:
        """Start the process; only log lines written after this call count for readiness."""
        with self.log_path.open("ab") as log:
            log.write(f"--- starting {self.name} at {time.ctime()} ---\n".encode())
            log.flush()
            self._log_offset = log.tell()
            # A new session keeps a Ctrl-C in the test runner away from nodes mid-cleanup.
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                env=self.env,
                start_new_session=True,
            )

    def log_since_launch(self) -> str:
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_since_launch().splitlines()[-lines:])

    def wait_ready(self, deadline: float) -> str:
        """Wait for the readiness marker and return the node name Erlang reports."""
        pattern = re.compile(rf"^{READY_MARKER} (\S+)$", re.MULTILINE)
        while True:
            found = pattern.search(self.log_since_launch())
            if found:
                return found.group(1)
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Erlang node {self.name} exited with status {self.process.returncode} "
                    f"before it was ready; log {self.log_path} ends with:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Erlang node {self.name} not ready in time; "
                    f"log {self.log_path} ends with:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def reap(self) -> None:
        """Wait for the exited process and release our end of its stdin."""
        self.process.wait()
        if self.process.stdin is not None:
            self.process.stdin.close()


class ErlCluster:
    """What :class:`LocalCluster` and :class:`~pyrlang_zarr.testing.netns.NetnsCluster` share.

    The lifecycle (start, stop, kill, stop_node, restart), the context managers, node access
    and :meth:`erl_eval`. A subclass says where its nodes live: :meth:`_open` (directories
    and the finalizer), :meth:`_make_node`, :meth:`_epmd_names_of` and :meth:`_repr_detail`.
    """

    def __init__(
        self,
        n: int,
        cookie: str | None,
        prefix: str | None,
        ram_only: bool,
        extra_args: Sequence[str],
        ticktime: int | None,
        tls: bool = False,
    ) -> None:
        if isinstance(extra_args, str):
            raise TypeError("extra_args must be a sequence of arguments, not one string")
        self.tls = bool(tls)
        self.ca: CA | None = None  # with tls: the cluster's CA (issue more certificates)
        self.client_tls: TlsConfig | None = None  # with tls: a client certificate's settings
        self.client_optfile: Path | None = None  # with tls: the same as an optfile
        self.node_optfile: Path | None = None  # with tls: the nodes' own (server and client)
        self.n = n
        self.cookie = cookie if cookie is not None else secrets.token_hex(16)
        self.prefix = prefix if prefix is not None else "pz" + secrets.token_hex(3)
        self.ram_only = ram_only
        self.extra_args = list(extra_args)
        self.ticktime = ticktime
        self.base_dir: Path | None = None
        self._nodes: list[ErlNode] = []
        self._erl = ""
        self._epmd = ""
        self._finalizer: weakref.finalize[..., ErlCluster] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Start all nodes concurrently and wait until every one is distributed."""
        if self._running:
            raise RuntimeError("cluster already started")
        self._check_can_run()
        self._erl = _find_erl()
        self._epmd = _find_epmd(self._erl)
        self._nodes = []
        try:
            self._open(self._nodes)
            if self.tls:
                self._make_pki()
            self._nodes.extend(self._make_node(i) for i in range(self.n))
            for node in self._nodes:
                node.launch()
            deadline = time.monotonic() + START_TIMEOUT
            for node in self._nodes:
                self._check_name(node, node.wait_ready(deadline))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node and remove what the cluster created; idempotent."""
        if self._finalizer is not None:
            self._finalizer()

    def kill(self, i: int) -> None:
        """SIGKILL node ``i``; wait until the process is gone and its EPMD has forgotten it."""
        node = self[i]
        if node.alive:
            node.process.kill()
        node.reap()
        self._wait_unregistered(i)

    def stop_node(self, i: int) -> None:
        """Stop node ``i`` gracefully (SIGTERM makes BEAM run ``init:stop()``); wait until gone."""
        _terminate([self[i]], STOP_TIMEOUT)
        self._wait_unregistered(i)

    def restart(self, i: int) -> None:
        """Start node ``i`` again (same name, cookie, Mnesia dir), stopping it first if running."""
        node = self[i]
        if node.alive:
            self.stop_node(i)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            self._wait_unregistered(i, raise_on_timeout=False)
            node.launch()
            try:
                self._check_name(node, node.wait_ready(deadline))
                return
            except RuntimeError:
                # EPMD may briefly hold the old registration: the new node then refuses to start.
                if "in use" not in node.log_tail() or time.monotonic() > deadline:
                    raise
                node.reap()
                time.sleep(0.2)

    # -- access ----------------------------------------------------------------------------

    @property
    def nodes(self) -> list[str]:
        return [node.name for node in self._started_nodes()]

    def __getitem__(self, i: int) -> ErlNode:
        return self._started_nodes()[i]

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[ErlNode]:
        return iter(self._started_nodes())

    def erl_eval(self, i: int, expr: str, timeout: float = 30.0) -> str:
        """Evaluate ``expr`` on node ``i`` from a throwaway hidden ``erl`` node.

        Returns the value as ``~p`` prints it, on one line (an atom ``'a-b'`` keeps its
        quotes). Raises ``RuntimeError`` when the expression does not parse, raises, or the
        rpc fails. Costs an ``erl`` start (~0.2 s): meant for checks from the Erlang side in tests.
        """
        return self._erl_eval(i, expr, timeout)

    # -- context managers ------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"<{type(self).__name__} {self.prefix} n={self.n} {self._repr_detail()} {state}>"

    # -- what subclasses provide -----------------------------------------------------------

    def _check_can_run(self) -> None:
        """Raise if this machine cannot run the cluster; called first by :meth:`start`."""

    def _open(self, nodes: list[ErlNode]) -> None:
        """Create ``base_dir`` and whatever else the nodes need; set ``self._finalizer``.

        ``nodes`` is the list :meth:`start` fills next, for the finalizer to stop.
        """
        raise NotImplementedError

    def _make_node(self, i: int) -> ErlNode:
        raise NotImplementedError

    def _epmd_names_of(self, i: int) -> set[str]:
        """Short names the EPMD that node ``i`` registers with lists."""
        raise NotImplementedError

    def _repr_detail(self) -> str:
        raise NotImplementedError

    def _dist_args(self, sname: str) -> list[str]:
        """How a node is named and reaches its peers: ``-sname`` by default."""
        return ["-sname", sname]

    def _helper_dist_args(self, short: str) -> list[str]:
        """The same for the throwaway hidden node of :meth:`erl_eval`."""
        return ["-sname", short, "-hidden"]

    def _extra_env(self) -> dict[str, str]:
        """Environment variables every ``erl`` of the cluster gets on top of ours."""
        return {}

    def _check_name(self, node: ErlNode, reported: str) -> None:
        """Called with the node name Erlang reports once ``node`` is ready."""
        if reported != node.name:
            raise RuntimeError(
                f"node started as {reported!r}, expected {node.name!r}; log {node.log_path} "
                f"ends with:\n{node.log_tail()}"
            )

    # -- internals -------------------------------------------------------------------------

    @property
    def _running(self) -> bool:
        return self._finalizer is not None and self._finalizer.alive

    def _started_nodes(self) -> list[ErlNode]:
        if not self._nodes:
            raise RuntimeError("cluster not started: call start() or use it as a context manager")
        return self._nodes

    def _ticktime_args(self) -> list[str]:
        return [] if self.ticktime is None else ["-kernel", "net_ticktime", str(self.ticktime)]

    def _home(self, directory: Path) -> Path:
        """``directory``, made a home holding the cluster's cookie as ``.erlang.cookie``
        (owner-only, as erl requires): how every erl of the cluster gets the cookie, never
        on its command line."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / ".erlang.cookie"
        if path.exists():
            path.chmod(0o600)
            path.unlink()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "w") as f:
            f.write(self.cookie)
        return directory

    def _make_pki(self) -> None:
        """A CA and certificates for TLS distribution under ``base_dir/tls``: one per node
        (naming its host), one for the erl_eval helper, one for Python clients."""
        from pyrlang_zarr.erldist.tls import TlsConfig
        from pyrlang_zarr.testing.certs import CA, write_optfile

        assert self.base_dir is not None
        tls_dir = self.base_dir / "tls"
        ca = self.ca = CA(tls_dir)
        hosts = sorted({h for i in range(self.n) for h in self._hosts_of(i)})
        server = ca.issue("nodes", hosts=hosts)
        self.node_optfile = write_optfile(tls_dir / "node.optfile", server, ca.cafile)
        client = ca.issue("client")
        self.client_optfile = write_optfile(
            tls_dir / "client.optfile", client, ca.cafile, server=False
        )
        self.client_tls = TlsConfig(str(client.certfile), str(client.keyfile), str(ca.cafile))

    def _hosts_of(self, i: int) -> list[str]:
        """Names node ``i``'s certificate must give (OTP's client checks the host part of
        the node name; Python's does too)."""
        return ["localhost", "127.0.0.1"]

    def _tls_args(self) -> list[str]:
        if not self.tls:
            return []
        assert self.node_optfile is not None
        return ["-proto_dist", "inet_tls", "-ssl_dist_optfile", str(self.node_optfile)]

    def _erl_node(self, name: str, sname: str, wrapper: Sequence[str] = ()) -> ErlNode:
        """Node ``name`` with its own dir under ``base_dir``, started as ``erl -sname sname``.

        ``wrapper`` is put in front of the ``erl`` command (to run it somewhere else).
        """
        assert self.base_dir is not None
        short = name.partition("@")[0]
        node_dir = self.base_dir / short
        mnesia_dir = node_dir / "mnesia"
        mnesia_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            *wrapper,
            self._erl,
            *self._dist_args(sname),
            *self._tls_args(),
            "-noinput",
            "-connect_all",
            "true",
            *SMALL_MACHINE_FLAGS,
            *DIST_BUFFER_FLAGS,
            *self._ticktime_args(),
            "-mnesia",
            "dir",
            _erlang_string(str(mnesia_dir)),
            *(["-mnesia", "schema_location", "ram"] if self.ram_only else []),
            *self.extra_args,
            "-eval",
            _NODE_EVAL,
        ]
        env = {
            **os.environ,
            **self._extra_env(),
            "HOME": str(self._home(node_dir / "home")),
            "ERL_CRASH_DUMP": str(node_dir / "erl_crash.dump"),
        }
        return ErlNode(
            name=name,
            short_name=short,
            dir=node_dir,
            mnesia_dir=mnesia_dir,
            log_path=node_dir / "node.log",
            argv=argv,
            env=env,
        )

    def _erl_eval(self, i: int, expr: str, timeout: float, wrapper: Sequence[str] = ()) -> str:
        """:meth:`erl_eval`, with ``wrapper`` put in front of the helper's ``erl`` command."""
        target = self[i].name
        text = expr.strip()
        if not text.endswith("."):
            text += "."
        argv = [
            *wrapper,
            self._erl,
            *self._helper_dist_args(f"pzeval-{secrets.token_hex(4)}"),
            *self._tls_args(),
            "-noinput",
            *SMALL_MACHINE_FLAGS,
            *self._ticktime_args(),
            "-eval",
            _HELPER_EVAL,
        ]
        assert self.base_dir is not None
        home = self.base_dir / "helper-home"
        if not (home / ".erlang.cookie").exists():
            self._home(home)
        env = {
            **os.environ,
            **self._extra_env(),
            "HOME": str(home),
            "PZ_EVAL_EXPR": text.encode().hex(),
            "PZ_EVAL_TARGET": target,
            "PZ_EVAL_TIMEOUT_MS": str(int(timeout * 1000)),
            "ERL_CRASH_DUMP_SECONDS": "0",
        }
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=env,
                cwd=self.base_dir,
                timeout=timeout + 15,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise TimeoutError(f"erl_eval on {target} did not finish: {expr!r}") from exc
        out = done.stdout.decode(errors="replace")
        found = re.search(r"^pz-(result|error) ([0-9A-Fa-f]*)$", out, re.MULTILINE)
        if found is None:
            err = done.stderr.decode(errors="replace")
            raise RuntimeError(
                f"erl_eval helper for {target} exited with status {done.returncode}:\n{out}{err}"
            )
        value = bytes.fromhex(found.group(2)).decode()
        if found.group(1) == "error":
            raise RuntimeError(f"erl_eval on {target} failed for {expr!r}: {value}")
        return value

    def _wait_unregistered(self, i: int, raise_on_timeout: bool = True) -> None:
        """Wait until node ``i``'s EPMD no longer lists it (a new node of that name needs it)."""
        node = self[i]
        deadline = time.monotonic() + EPMD_TIMEOUT
        while node.short_name in self._epmd_names_of(i):
            if time.monotonic() > deadline:
                if raise_on_timeout:
                    raise TimeoutError(f"EPMD still lists {node.name}")
                return
            time.sleep(0.02)


class LocalCluster(ErlCluster):
    """``n`` connected Erlang nodes on this host, with their own Mnesia directories.

    Mnesia is not started: the library's Mnesia layer does the setup. Usable as ``with`` or
    ``async with``; every node is stopped on exit, on garbage collection and at interpreter
    exit, and a node whose Python parent dies stops when its stdin closes.

    ``ram_only`` keeps the Mnesia schema in RAM (``-mnesia schema_location ram``): no disc
    tables, nothing to create first. ``ticktime`` sets ``-kernel net_ticktime``;
    ``extra_args`` are appended to every node's ``erl`` command line.

    ``long_host`` starts the nodes with long names, ``-name prefix-i@long_host`` (an IP
    address such as ``127.0.0.1``, or a dotted host name that resolves here). ``env`` adds
    environment variables to every ``erl`` (say ``ERL_EPMD_PORT``). ``dist_port`` runs the
    (single) node without EPMD, listening on that port: ``-start_epmd false -erl_epmd_port``.

    ``tls=True`` runs TLS distribution (``-proto_dist inet_tls -ssl_dist_optfile``, peers
    verified both ways, a client without a certificate refused) with certificates made in
    ``base_dir/tls``: ``ca`` issues more, ``client_tls`` (a ``TlsConfig``) and
    ``client_optfile`` are a client certificate's settings for ``Node(tls=...)``,
    ``node_optfile`` the nodes' own (for another ``erl`` to join them).
    """

    def __init__(
        self,
        n: int = 3,
        cookie: str | None = None,
        prefix: str | None = None,
        base_dir: str | os.PathLike[str] | None = None,
        ram_only: bool = False,
        extra_args: Sequence[str] = (),
        ticktime: int | None = None,
        *,
        long_host: str | None = None,
        env: Mapping[str, str] | None = None,
        dist_port: int | None = None,
        tls: bool = False,
    ) -> None:
        if n < 1:
            raise ValueError(f"a cluster needs at least one node, got n={n}")
        if dist_port is not None and n != 1:
            raise ValueError("with dist_port every node listens on that port: n must be 1")
        super().__init__(n, cookie, prefix, ram_only, extra_args, ticktime, tls)
        # Erlang's short-name host part; checked against the real node names at start.
        self.host = long_host or socket.gethostname().split(".")[0]
        self.long_host = long_host
        self.env = dict(env or {})
        self.dist_port = dist_port
        self._given_dir = Path(base_dir) if base_dir is not None else None

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after a grace period); idempotent."""
        if not self._running:
            return
        super().stop()
        for i in range(len(self._nodes)):
            self._wait_unregistered(i, raise_on_timeout=False)

    def registered_names(self) -> set[str]:
        """Short names EPMD on this host currently lists (empty when EPMD is not running)."""
        return _epmd_names(self._epmd or _find_epmd(_find_erl()))

    def _open(self, nodes: list[ErlNode]) -> None:
        if self._given_dir is not None:
            self.base_dir = self._given_dir
            self.base_dir.mkdir(parents=True, exist_ok=True)
            owned_dir = None
        else:
            self.base_dir = Path(tempfile.mkdtemp(prefix="pz-cluster-"))
            owned_dir = self.base_dir
        self._finalizer = weakref.finalize(self, _shutdown, nodes, owned_dir)

    def _make_node(self, i: int) -> ErlNode:
        short = f"{self.prefix}-{i + 1}"
        return self._erl_node(f"{short}@{self.host}", sname=short)

    def _epmd_names_of(self, i: int) -> set[str]:
        return _epmd_names(self._epmd)

    def _repr_detail(self) -> str:
        return f"host={self.host}" + (" tls" if self.tls else "")

    def _hosts_of(self, i: int) -> list[str]:
        full = socket.gethostname()
        names = [self.host, full, full.split(".")[0], *super()._hosts_of(i)]
        return names if self.long_host is None else [self.long_host, *names]

    def _no_epmd_args(self) -> list[str]:
        if self.dist_port is None:
            return []
        return ["-start_epmd", "false", "-erl_epmd_port", str(self.dist_port)]

    def _dist_args(self, sname: str) -> list[str]:
        flag = "-sname" if self.long_host is None else "-name"
        return [flag, f"{sname}@{self.long_host}" if self.long_host else sname]

    def _erl_node(self, name: str, sname: str, wrapper: Sequence[str] = ()) -> ErlNode:
        node = super()._erl_node(name, sname, wrapper)
        node.argv[-2:-2] = self._no_epmd_args()  # with the other flags, before -eval
        return node

    def _helper_dist_args(self, short: str) -> list[str]:
        # with a fixed port the helper must not listen on it too: it only connects
        listen = ["-dist_listen", "false"] if self.dist_port is not None else []
        return [*self._dist_args(short), "-hidden", *self._no_epmd_args(), *listen]

    def _extra_env(self) -> dict[str, str]:
        return dict(self.env)

    def _check_name(self, node: ErlNode, reported: str) -> None:
        """Adopt the host part Erlang really uses if our guess was wrong."""
        if reported == node.name:
            return
        if self.long_host is not None:  # a long name is given in full: nothing to guess
            raise RuntimeError(f"node started as {reported!r}, expected {node.name!r}")
        short, _, host = reported.partition("@")
        if short != node.short_name or not host:
            raise RuntimeError(f"node started as {reported!r}, expected {node.name!r}")
        self.host = host
        for other in self._nodes:
            other.name = f"{other.short_name}@{host}"


def _erlang_string(text: str) -> str:
    """``text`` as an Erlang string literal, the form ``-mnesia dir`` must be given in."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _terminate(nodes: Sequence[ErlNode], grace: float) -> None:
    """SIGTERM (BEAM answers with ``init:stop()``), then SIGKILL whatever is still running."""
    running = [node for node in nodes if hasattr(node, "process")]
    for node in running:
        if node.process.poll() is None:
            node.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for node in running:
        try:
            node.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            node.process.kill()
        node.reap()


def _shutdown(nodes: list[ErlNode], owned_dir: Path | None) -> None:
    """Finalizer: must not reference the cluster, so it also runs when the cluster is gone."""
    _terminate(nodes, STOP_TIMEOUT)
    if owned_dir is not None:
        shutil.rmtree(owned_dir, ignore_errors=True)


def _find_erl() -> str:
    """The ``erl`` the nodes run: ``$PZ_ERL`` if set (e.g. another OTP's), else ``erl`` on PATH."""
    chosen = os.environ.get(ERL_ENV)
    if chosen:
        found = shutil.which(chosen)
        if found is None:
            raise FileNotFoundError(f"{ERL_ENV}={chosen!r} is not an executable command")
        return found
    erl = shutil.which("erl")
    if erl is None:
        raise FileNotFoundError(
            "`erl` not found on PATH: install Erlang/OTP (on Debian: apt-get install erlang-nox)"
        )
    return erl


def _find_epmd(erl: str) -> str:
    """``epmd`` on PATH, or the one of the ERTS that ``erl`` belongs to."""
    found = shutil.which("epmd")
    if found is not None:
        return found
    root = Path(erl).resolve().parent.parent
    candidates = [*sorted(root.glob("erts-*/bin/epmd")), root / "bin" / "epmd"]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"`epmd` not found on PATH or under {root}: install Debian's erlang-nox"
    )


def _epmd_names(epmd: str) -> set[str]:
    done = subprocess.run([epmd, "-names"], capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        return set()
    return set(EPMD_NAME.findall(done.stdout))
