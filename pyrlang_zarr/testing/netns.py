"""Erlang nodes on separate "hosts": Linux network namespaces joined by a bridge.

:class:`NetnsCluster` runs ``n`` plain ``erl`` nodes named ``node1@host1`` .. ``nodeN@hostN``,
each in its own network namespace with its own address, its own EPMD and its own hostname,
plus a *client* namespace for the code under test (:meth:`NetnsCluster.run_client`). A host
can be cut off the network and healed, killed and restarted, so tests can exercise
partitions and node loss the way they happen between machines. Needs root on Linux; see
:func:`available`.

Layout, for a cluster with prefix ``pz1a2b3c`` (unique per cluster, so parallel runs and
leftovers of crashed runs never collide)::

    pz1a2b3c-sw   "switch": bridge br0, with one veth port per host (h1..hN) and cl
    pz1a2b3c-h1   host1: lo + eth0 = 10.A.B.1/24      (node1@host1 and its EPMD)
    ...
    pz1a2b3c-hN   hostN: lo + eth0 = 10.A.B.N/24
    pz1a2b3c-cl   client: lo + eth0 = 10.A.B.254/24   (run_client, erl_eval(via="client"))

``10.A.B.0/24`` is derived from the prefix. The namespaces have no link to the machine's own
network and no default route: nothing sent inside them can leave, whatever the subnet.

Names: ``ip netns exec NS`` bind-mounts ``/etc/netns/NS/hosts`` over ``/etc/hosts`` (and
``resolv.conf``, written empty so no DNS server is ever asked). Every host's file maps
``host1..hostN`` and ``client`` to their addresses, so Erlang's resolver and Python's
``getaddrinfo`` find the other hosts by name.

Short names: on OTP 25 ``erl -sname node1@host1`` is accepted even when the machine's
hostname is something else, and the nodes do connect. But everything that asks
``gethostname()`` would then disagree with the node names: a hidden ``erl`` started with
``-sname x`` (as :meth:`erl_eval` does), ``net_adm:localhost()``, and our Python ``Node``,
whose default name is ``pz-<hex>@<gethostname()>``, would all carry the machine's name,
which no other host can resolve. So every command runs in its own UTS namespace too, with
the hostname of the namespace it is in (``ip netns exec NS unshare --uts sh -c
'hostname host1 && exec "$@"' ...``); a Python ``Node`` in the client namespace is then
``pz-<hex>@client``. ``ip``, ``unshare`` and ``sh`` all ``exec``, so the process we start *is*
``beam.smp`` and signals reach it directly.

Each host's first ``erl`` starts that namespace's EPMD. Stopping the cluster kills every
process still in any of its namespaces (``ip netns pids``), deletes the namespaces (which
destroys the bridge and the veth pairs) and ``/etc/netns/<ns>``, and removes the temporary
directory. A small record in ``/run/pyrlang_zarr/netns`` names the owner process, so a later
cluster cleans up after one whose Python process died without stopping it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pyrlang_zarr.testing.cluster import EPMD_NAME, STOP_TIMEOUT, ErlCluster, ErlNode

__all__ = ["NetnsCluster", "available", "cleanup_stale"]

RECORD_DIR = Path("/run/pyrlang_zarr/netns")
"""Where running clusters note their owner, so leftovers of a dead owner can be removed."""

_ETC_NETNS = Path("/etc/netns")
_CLIENT_HOST = "client"
_CLIENT_OCTET = 254
_MAX_HOSTS = 200
_BRIDGE = "br0"
_HOST_IF = "eth0"
_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]{0,30}$")
# Sets the UTS hostname, then becomes the command: the started pid is the command's pid.
_SET_HOSTNAME = 'hostname "$0" && exec "$@"'

Where = int | Literal["client"]


def host_name(i: int) -> str:
    """Host ``i`` (0-based): ``host1``, ``host2``, ... (docker-compose.yml uses them too)."""
    return f"host{i + 1}"


def node_name(i: int) -> str:
    """The Erlang node on host ``i``: ``node1@host1``, ..."""
    return f"node{i + 1}@{host_name(i)}"


def available() -> str | None:
    """``None`` when :class:`NetnsCluster` can run here, else what is missing."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    tools = {
        "ip": "iproute2",
        "unshare": "util-linux",
        "hostname": "hostname",
        "erl": "Erlang/OTP (Debian: erlang-nox)",
    }
    missing = [f"`{tool}` ({pkg})" for tool, pkg in tools.items() if shutil.which(tool) is None]
    if missing:
        return "missing on PATH: " + ", ".join(missing)
    probe = f"pzprobe{secrets.token_hex(3)}"
    steps = [
        ["ip", "netns", "add", probe],
        ["ip", "-n", probe, "link", "set", "lo", "up"],
        ["ip", "-n", probe, "link", "add", "pzbr", "type", "bridge"],
        ["ip", "-n", probe, "link", "add", "pzv0", "type", "veth", "peer", "name", "pzv1"],
        ["ip", "-n", probe, "link", "set", "pzv0", "master", "pzbr", "up"],
        [
            "ip",
            "netns",
            "exec",
            probe,
            "unshare",
            "--uts",
            "sh",
            "-c",
            _SET_HOSTNAME,
            "probe",
            "true",
        ],
    ]
    try:
        for argv in steps:
            done = _run(argv)
            if done.returncode != 0:
                return f"`{' '.join(argv)}` failed: {done.stderr.strip() or done.returncode}"
    finally:
        _run(["ip", "netns", "del", probe])
    return None


def cleanup_stale() -> list[str]:
    """Remove the namespaces and files of clusters whose owner process is gone.

    Returns the prefixes cleaned. Runs at every :meth:`NetnsCluster.start`.
    """
    cleaned = []
    for record in sorted(RECORD_DIR.glob("*.json")):
        try:
            data = json.loads(record.read_text())
            owner, started = int(data["owner"]), data["owner_start"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _process_start(owner) == started:
            continue  # its owner still runs
        _teardown(
            _Resources(
                namespaces=list(data.get("namespaces", [])),
                base_dir=Path(data["base_dir"]) if data.get("base_dir") else None,
                record=record,
            )
        )
        cleaned.append(record.stem)
    return cleaned


@dataclass(eq=False)
class _Resources:
    """What a cluster owns; the finalizer's only reference, so it can run without the cluster."""

    namespaces: list[str] = field(default_factory=list)
    nodes: list[ErlNode] = field(default_factory=list)
    base_dir: Path | None = None
    record: Path | None = None


class NetnsCluster(ErlCluster):
    """``n`` Erlang nodes ``nodeI@hostI``, each on its own network namespace ("host").

    Mnesia is not started. ``ticktime`` sets ``-kernel net_ticktime`` on every node (and on
    the :meth:`erl_eval` helpers); ``extra_args`` are appended to every node's ``erl``
    command line (e.g. ``["-kernel", "net_setuptime", "2"]``). Usable as ``with`` or
    ``async with``; everything is removed on exit, on garbage collection and at interpreter
    exit, and a node whose Python parent dies stops when its stdin closes. ``tls=True``
    runs TLS distribution as :class:`~pyrlang_zarr.testing.cluster.LocalCluster` does.
    """

    def __init__(
        self,
        n: int = 3,
        cookie: str | None = None,
        ticktime: int | None = None,
        prefix: str | None = None,
        *,
        ram_only: bool = False,
        extra_args: Sequence[str] = (),
        tls: bool = False,
    ) -> None:
        if not 1 <= n <= _MAX_HOSTS:
            raise ValueError(f"n must be between 1 and {_MAX_HOSTS}, got n={n}")
        super().__init__(n, cookie, prefix, ram_only, extra_args, ticktime, tls)
        if prefix is not None and not _PREFIX_RE.match(prefix):
            raise ValueError(
                f"bad prefix {prefix!r}: up to 31 letters, digits, '_' or '.', not starting "
                "with '_' or '.'"
            )
        self.hosts = [host_name(i) for i in range(n)]
        digest = hashlib.sha256(self.prefix.encode()).digest()
        # 10.A.B.0/24 with (A, B) from the prefix; 10.255.255.x is left alone.
        a, b = digest[0], digest[1] if (digest[0], digest[1]) != (255, 255) else 254
        self.subnet = f"10.{a}.{b}.0/24"
        self.addresses = {host: f"10.{a}.{b}.{i + 1}" for i, host in enumerate(self.hosts)}
        self.client_address = f"10.{a}.{b}.{_CLIENT_OCTET}"
        self.switch_namespace = f"{self.prefix}-sw"
        self.client_namespace = f"{self.prefix}-cl"
        self.host_namespaces = [f"{self.prefix}-h{i + 1}" for i in range(n)]

    # -- lifecycle -------------------------------------------------------------------------

    def cut(self, i: int) -> None:
        """Partition host ``i`` from every other host and the client (its switch port down).

        The host keeps its address and routes, as behind a pulled cable: packets to and from
        it are lost, existing connections die by tick timeout, new ones by connect timeout.
        """
        self._check_index(i)
        self._ip("-n", self.switch_namespace, "link", "set", self._port(i), "down")

    def heal(self, i: int) -> None:
        """Undo :meth:`cut`: bring the port up and wait until the link carries traffic."""
        self._check_index(i)
        self._ip("-n", self.switch_namespace, "link", "set", self._port(i), "up")
        deadline = time.monotonic() + 10.0
        while True:
            done = _run(["ip", "-n", self.host_namespaces[i], "-o", "link", "show", _HOST_IF])
            if "LOWER_UP" in done.stdout:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.hosts[i]}'s link did not come back up")
            time.sleep(0.01)
        # Neighbour entries that failed while cut would delay the first packets by seconds.
        for ns in [*self.host_namespaces, self.client_namespace]:
            _run(["ip", "-n", ns, "neigh", "flush", "dev", _HOST_IF])

    def limit_rate(self, i: int, rate: str = "100mbit", burst: str = "64kb") -> None:
        """Rate-limit host ``i``'s link both ways with a token bucket (``tc ... tbf``: this
        kernel has no netem): on the host's interface for what it sends, and on its switch
        port for what it receives. Gone with the namespaces."""
        self._check_index(i)
        for ns, dev in (
            (self.host_namespaces[i], _HOST_IF),
            (self.switch_namespace, self._port(i)),
        ):
            argv = ["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root"]
            done = _run([*argv, "tbf", "rate", rate, "burst", burst, "latency", "400ms"])
            if done.returncode != 0:
                raise RuntimeError(f"tc tbf on {ns}/{dev} failed: {done.stderr.strip()}")

    def sent_bytes(self, i: int) -> int:
        """Bytes host ``i`` has sent on its link (its interface's counter)."""
        self._check_index(i)
        done = _run(["ip", "-n", self.host_namespaces[i], "-s", "-j", "link", "show", _HOST_IF])
        return int(json.loads(done.stdout)[0]["stats64"]["tx"]["bytes"])

    # -- access ----------------------------------------------------------------------------

    @property
    def namespaces(self) -> list[str]:
        """Every namespace of the cluster: switch, hosts, client."""
        return [self.switch_namespace, *self.host_namespaces, self.client_namespace]

    def ns_argv(self, where: Where, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run in host ``where``'s namespace (or ``"client"``'s).

        It runs with that host's ``/etc/hosts`` and hostname; the started process becomes
        ``argv[0]`` (no wrapper process stays between).
        """
        if where == "client":
            ns, hostname = self.client_namespace, _CLIENT_HOST
        else:
            self._check_index(where)
            ns, hostname = self.host_namespaces[where], self.hosts[where]
        return [
            "ip",
            "netns",
            "exec",
            ns,
            "unshare",
            "--uts",
            "sh",
            "-c",
            _SET_HOSTNAME,
            hostname,
            *argv,
        ]

    def run_client(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        cwd: str | os.PathLike[str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the client namespace (hostname ``client``) and capture its output.

        ``host1..hostN`` resolve there to the hosts' addresses. The environment is ours plus
        ``ERLANG_COOKIE`` set to the cluster's cookie, plus ``env``. Raises
        ``subprocess.TimeoutExpired`` (the command killed) after ``timeout`` seconds; a
        non-zero exit status is left to the caller.
        """
        self._started_nodes()
        if isinstance(argv, str):
            raise TypeError("argv must be a sequence of arguments, not one string")
        full_env = {**os.environ, "ERLANG_COOKIE": self.cookie, **(env or {})}
        return subprocess.run(
            self.ns_argv("client", argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=full_env,
            cwd=cwd if cwd is not None else self.base_dir,
            timeout=timeout,
            check=False,
        )

    def erl_eval(self, i: int, expr: str, timeout: float = 30.0, via: Where | None = None) -> str:
        """Evaluate ``expr`` on node ``i`` from a throwaway hidden ``erl`` node.

        The helper runs on host ``i`` itself unless ``via`` names another host or
        ``"client"``: from the host itself it reaches its node even while the host is cut.
        Returns the value as ``~p`` prints it, on one line; raises ``RuntimeError`` when the
        expression does not parse, raises, or the rpc fails. Costs an ``erl`` start.
        """
        where: Where = i if via is None else via
        return self._erl_eval(i, expr, timeout, wrapper=self.ns_argv(where, []))

    def registered_names(self, i: int) -> set[str]:
        """Short names host ``i``'s EPMD lists (empty when it does not run)."""
        self._check_index(i)
        done = _run(["ip", "netns", "exec", self.host_namespaces[i], self._epmd, "-names"])
        return set(EPMD_NAME.findall(done.stdout)) if done.returncode == 0 else set()

    def pids(self) -> dict[str, list[int]]:
        """Processes in each of the cluster's namespaces (``ip netns pids``)."""
        return {ns: _netns_pids(ns) for ns in self.namespaces}

    # -- internals -------------------------------------------------------------------------

    def _check_index(self, i: object) -> None:
        if not isinstance(i, int) or not 0 <= i < self.n:
            raise IndexError(f"no host {i!r} in a cluster of {self.n}")

    def _port(self, i: int) -> str:
        return f"h{i + 1}"

    def _ip(self, *args: str) -> None:
        done = _run(["ip", *args])
        if done.returncode != 0:
            raise RuntimeError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")

    def _write_record(self) -> Path:
        RECORD_DIR.mkdir(parents=True, exist_ok=True)
        record = RECORD_DIR / f"{self.prefix}.json"
        data = {
            "owner": os.getpid(),
            "owner_start": _process_start(os.getpid()),
            "namespaces": self.namespaces,
            "base_dir": str(self.base_dir),
        }
        with record.open("x") as f:  # an existing record: this prefix is in use
            json.dump(data, f)
        return record

    def _build_network(self, res: _Resources) -> None:
        sw = self.switch_namespace
        for ns in self.namespaces:
            self._ip("netns", "add", ns)
            res.namespaces.append(ns)
            self._ip("-n", ns, "link", "set", "lo", "up")
        self._ip("-n", sw, "link", "add", _BRIDGE, "type", "bridge")
        self._ip("-n", sw, "link", "set", _BRIDGE, "up")
        hosts_file = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        ends = [(self.host_namespaces[i], self.hosts[i], self._port(i)) for i in range(self.n)]
        ends.append((self.client_namespace, _CLIENT_HOST, "cl"))
        addresses = {**self.addresses, _CLIENT_HOST: self.client_address}
        hosts_file += "".join(f"{addr}\t{name}\n" for name, addr in addresses.items())
        for ns, name, port in ends:
            self._ip(
                "-n", sw, "link", "add", port, "type", "veth", "peer", "name", _HOST_IF, "netns", ns
            )
            self._ip("-n", sw, "link", "set", port, "master", _BRIDGE, "up")
            self._ip("-n", ns, "addr", "add", f"{addresses[name]}/24", "dev", _HOST_IF)
            self._ip("-n", ns, "link", "set", _HOST_IF, "up")
            etc = _ETC_NETNS / ns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(hosts_file)
            (etc / "resolv.conf").write_text("")  # no nameserver: never ask DNS

    # -- what ErlCluster asks for -----------------------------------------------------------

    def _check_can_run(self) -> None:
        reason = available()
        if reason is not None:
            raise RuntimeError(f"NetnsCluster cannot run here: {reason}")
        cleanup_stale()

    def _open(self, nodes: list[ErlNode]) -> None:
        self.base_dir = Path(tempfile.mkdtemp(prefix=f"pz-netns-{self.prefix}-"))
        res = _Resources(nodes=nodes, base_dir=self.base_dir)
        self._finalizer = weakref.finalize(self, _teardown, res)
        res.record = self._write_record()
        self._build_network(res)

    def _make_node(self, i: int) -> ErlNode:
        name = node_name(i)
        return self._erl_node(name, sname=name, wrapper=self.ns_argv(i, []))

    def _epmd_names_of(self, i: int) -> set[str]:
        return self.registered_names(i)

    def _repr_detail(self) -> str:
        return self.subnet

    def _hosts_of(self, i: int) -> list[str]:
        return [self.hosts[i], self.addresses[self.hosts[i]], *super()._hosts_of(i)]


def _run(argv: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _netns_pids(ns: str) -> list[int]:
    done = _run(["ip", "netns", "pids", ns])
    return [int(word) for word in done.stdout.split()] if done.returncode == 0 else []


def _process_start(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (tells a reused pid apart)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]


def _teardown(res: _Resources) -> None:
    """Finalizer: kill the nodes, empty and delete the namespaces, remove the files.

    SIGKILL rather than a graceful stop (~1 s per node): their files are deleted anyway.
    """
    for node in res.nodes:
        if node.alive:
            node.process.kill()
    for node in res.nodes:
        if hasattr(node, "process"):
            node.reap()
    existing = set(_run(["ip", "netns", "list"]).stdout.split())
    namespaces = [ns for ns in res.namespaces if ns in existing]
    deadline = time.monotonic() + STOP_TIMEOUT
    while True:
        left = [pid for ns in namespaces for pid in _netns_pids(ns)]
        if not left or time.monotonic() > deadline:
            break
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
    for ns in namespaces:
        _run(["ip", "netns", "del", ns])
    for ns in res.namespaces:
        shutil.rmtree(_ETC_NETNS / ns, ignore_errors=True)
    if res.base_dir is not None:
        shutil.rmtree(res.base_dir, ignore_errors=True)
    if res.record is not None:
        res.record.unlink(missing_ok=True)
