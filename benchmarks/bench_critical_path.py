"""Where a small replicated write's time goes: ours against a BEAM client, CPU per process.

    python -m benchmarks.bench_critical_path            # full run (~1 min)
    python -m benchmarks.bench_critical_path --quick    # a few seconds

``bench_overview``'s row "Mnesia write 1 KiB, 1 txn/chunk" is the one where we sit on the
0.9x line. This says why. One two-node ``LocalCluster``, a ``disc_copies`` table on both
nodes, sequential 1 KiB writes (one ``mnesia:sync_transaction`` each, through ``rex`` on
node 1), made by ``MnesiaClient.write`` and by ``native_mnesia.escript`` (a hidden BEAM node
with the cluster's scheduler flags) alternating within each rep. Per write, for each client:

- the wall time;
- the CPU time of the client's process, of node 1 and of node 2 (``/proc/PID/stat``, the
  process and its children; ours ``time.process_time``), so that what the server nodes do
  for either client can be compared with what the client itself costs;
- ours only, in a separate set of writes with the connection's socket objects wrapped (a
  clock read around each ``send`` and after each ``recv_into``): *in flight*, from our
  request having left (``send`` returned) to its reply having been read (``recv_into``
  returned); *Python*, from that read to the next request's ``send`` being called: the
  interpreter's part of a sequential write, all of it waited for; and *send*, the
  ``send`` call itself, which on loopback also runs the server's side of TCP and wakes it;
- the same *Python* part for rpcs whose reply comes at once (``erlang:node()``) and after
  a millisecond of an idle server (``timer:sleep(1)``): the same path, run right after a
  wait of nothing or of a millisecond.

Every figure is a mean per write over a rep (total over count), and the table gives the
median of the reps and their range. CPU times come in clock ticks (10 ms): with
``--quick``'s 300 writes a tick is 33 µs a write.

No assertions on timings: it prints the environment and one table, and exits 0.
"""

from __future__ import annotations

import functools
import itertools
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks import harness
from benchmarks.bench_mnesia import Native, bench_key, check_count, reset_table
from pyrlang_zarr import Node
from pyrlang_zarr.mnesia import MnesiaClient, ensure_table
from pyrlang_zarr.testing.cluster import LocalCluster

TABLE = "pzb_critical_path"
SIZE = 1024
TICKS = os.sysconf("SC_CLK_TCK")
# the same path in Python, the reply coming at once or after a millisecond of an idle server
RPCS: dict[str, tuple[str, str, list[Any]]] = {
    "rpc at once": ("erlang", "node", []),
    "rpc after 1 ms": ("timer", "sleep", [1]),
}


@dataclass(frozen=True)
class Params:
    reps: int
    writes: int  # sequential writes per rep and client


FULL = Params(reps=7, writes=2000)
QUICK = Params(reps=1, writes=300)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its descendants so far (``/proc``)."""
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile
        total += (int(fields[11]) + int(fields[12])) / TICKS
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


class Stamped:
    """A socket that notes the time, and its thread's CPU time, around each ``send`` and
    after each ``recv_into``."""

    def __init__(self, sock: Any, log: list[tuple[str, int, int]]) -> None:
        self._sock = sock
        self._log = log

    def send(self, data: Any, *args: Any) -> int:
        return self._timed(self._sock.send, data, *args)

    def sendmsg(self, buffers: Any, *args: Any) -> int:
        return self._timed(self._sock.sendmsg, buffers, *args)

    def _timed(self, write: Callable[..., int], *args: Any) -> int:
        log = self._log
        log.append(("send", time.perf_counter_ns(), time.thread_time_ns()))
        n = write(*args)
        log.append(("sent", time.perf_counter_ns(), time.thread_time_ns()))
        return n

    def recv_into(self, buffer: Any, *args: Any) -> int:
        n: int = self._sock.recv_into(buffer, *args)
        self._log.append(("read", time.perf_counter_ns(), time.thread_time_ns()))
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


@dataclass(frozen=True)
class Phases:
    """µs of each phase of sequential calls, one value a call: wall time, and for the two
    parts on our side the calling thread's CPU time too."""

    flight: list[float] = field(default_factory=list)  # request sent -> reply read
    python: list[float] = field(default_factory=list)  # reply read -> next send called
    python_cpu: list[float] = field(default_factory=list)
    send: list[float] = field(default_factory=list)  # the send call
    send_cpu: list[float] = field(default_factory=list)


def phases(log: list[tuple[str, int, int]]) -> Phases:
    """The phases of sequential calls, from a log of ``send``, ``sent`` and ``read``."""
    out = Phases()
    for (a, ta, ca), (b, tb, cb) in itertools.pairwise(log):
        step, cpu = (tb - ta) / 1000, (cb - ca) / 1000
        if a == "sent" and b == "read":
            out.flight.append(step)
        elif a == "read" and b == "send":
            out.python.append(step)
            out.python_cpu.append(cpu)
        elif a == "send" and b == "sent":
            out.send.append(step)
            out.send_cpu.append(cpu)
    return out


async def amain(settings: harness.Settings[Params]) -> int:
    p = settings.params
    n = p.writes
    load_before = harness.load_average()
    async with LocalCluster(n=2) as cluster, Node(cookie=cluster.cookie) as node:
        nodes = cluster.nodes
        erlang = await harness.erlang_release(node, nodes[0])
        await ensure_table(node, nodes, TABLE)
        client = MnesiaClient(node, TABLE, nodes[0], timeout=300)
        data = os.urandom(SIZE)
        await client.write(bench_key(0), data)  # connected
        servers = [cluster[0].os_pid, cluster[1].os_pid]
        native = await Native.start(nodes[0], cluster.cookie)
        reps: harness.Reps[tuple[str, str]] = harness.Reps()
        try:
            for rep in range(p.reps):
                for side in harness.alternate(rep, "ours", "native"):
                    await reset_table(node, nodes, TABLE)
                    me = native.proc.pid if side == "native" else None
                    before = [cpu_seconds(pid) for pid in servers]
                    mine = cpu_seconds(me) if me is not None else time.process_time()
                    t0 = time.perf_counter_ns()
                    if side == "ours":
                        for i in range(n):
                            await client.write(bench_key(i), data)
                        ns = time.perf_counter_ns() - t0
                        mine = time.process_time() - mine
                    else:
                        ns = await native.run(TABLE, SIZE, "seq", n, 1)
                        assert me is not None
                        mine = cpu_seconds(me) - mine
                    spent = [cpu_seconds(pid) - b for pid, b in zip(servers, before, strict=True)]
                    await check_count(node, nodes, TABLE, n, side)
                    reps.add(("wall", side), ns / n / 1000)
                    reps.add(("client", side), mine / n * 1e6)
                    reps.add(("node 1", side), spent[0] / n * 1e6)
                    reps.add(("node 2", side), spent[1] / n * 1e6)
                await reset_table(node, nodes, TABLE)
                write = functools.partial(write_n, client, data)
                ph = await stamped(node, nodes[0], write, n)
                reps.add(("in flight", "ours"), statistics.fmean(ph.flight))
                reps.add(("python", "ours"), statistics.fmean(ph.python))
                reps.add(("python cpu", "ours"), statistics.fmean(ph.python_cpu))
                reps.add(("send", "ours"), statistics.fmean(ph.send))
                reps.add(("send cpu", "ours"), statistics.fmean(ph.send_cpu))
                for key, (module, function, args) in RPCS.items():
                    rpc = functools.partial(rpc_n, node, nodes[0], module, function, args)
                    reps.add(
                        (key, "ours"),
                        statistics.fmean((await stamped(node, nodes[0], rpc, n // 2)).python),
                    )
                print(
                    f"rep {rep + 1}/{p.reps}: ours {reps.last(('wall', 'ours')):.0f} µs, "
                    f"native {reps.last(('wall', 'native')):.0f} µs a write",
                    flush=True,
                )
        finally:
            await native.stop()
    print()
    print(
        harness.environment(
            erlang,
            load_before,
            notes=[
                f"2-node LocalCluster, disc_copies on both; {n} sequential 1 KiB writes per "
                f"rep and client through rex on node 1; per write: the mean over a rep; medians "
                f"of {p.reps} rep(s) "
                f"({settings.mode} mode)"
            ],
        )
    )
    print()
    print(table(reps))
    return 0


async def stamped(node: Node, peer: str, call: Callable[[int], Awaitable[Any]], n: int) -> Phases:
    """The phases of ``call(0)`` ... ``call(n - 1)`` in sequence, each one call to ``peer``
    on a connection that is idle otherwise, its socket objects wrapped in :class:`Stamped`
    meanwhile."""
    conn: Any = node._peers.connection(peer)
    readers: Any = None if conn is None else conn._readers
    if readers is None or conn._direct is None:
        raise RuntimeError("no plain TCP connection whose replies the caller reads")
    log: list[tuple[str, int, int]] = []
    direct, reading = conn._direct, readers._sock
    wrapped = conn._direct = Stamped(direct, log)
    wrapped_reading = readers._sock = Stamped(reading, log)
    try:
        for i in range(n):
            await call(i)
    finally:  # unless the connection dropped them meanwhile
        if conn._direct is wrapped:
            conn._direct = direct
        if readers._sock is wrapped_reading:
            readers._sock = reading
    out = phases(log)
    counts = (len(out.flight), len(out.python), len(out.send))
    if counts != (n, n - 1, n):
        raise RuntimeError(
            f"{n} sequential calls, yet {counts} (in flight, Python, send) phases in "
            f"{len(log)} socket events: something else used the connection"
        )
    return out


async def write_n(client: MnesiaClient, data: bytes, i: int) -> None:
    await client.write(bench_key(i), data)


async def rpc_n(node: Node, peer: str, module: str, function: str, args: list[Any], _i: int) -> Any:
    return await node.rpc(peer, module, function, args)


def table(reps: harness.Reps[tuple[str, str]]) -> str:
    rows: list[tuple[str, ...]] = []
    labels = {
        "wall": "wall time",
        "client": "CPU: the client's process",
        "node 1": "CPU: node 1 (rex, the transaction)",
        "node 2": "CPU: node 2 (the replica)",
        "in flight": "ours: request sent -> reply read",
        "python": "ours: reply read -> next send called (Python)",
        "python cpu": "... of it our thread's CPU time",
        "send": "ours: the send call",
        "send cpu": "... of it our thread's CPU time",
        "rpc at once": "ours, erlang:node() rpcs: Python",
        "rpc after 1 ms": "ours, timer:sleep(1) rpcs: Python",
    }
    for key, label in labels.items():
        ours = reps.median((key, "ours"))
        spread = reps.spread((key, "ours"))
        if (key, "native") in reps.values:
            nat = reps.median((key, "native"))
            cells = (f"{nat:.0f}", f"{round(ours - nat):+d}", reps.spread((key, "native")))
        else:
            cells = ("-", "-", "-")
        rows.append((label, f"{ours:.0f}", cells[0], cells[1], spread, cells[2]))
    header = ("µs per write", "ours", "native", "ours - native", "ours, reps", "native, reps")
    return harness.render(header, rows, {0})


def main() -> int:
    return harness.main(__doc__, FULL, QUICK, amain)


if __name__ == "__main__":
    raise SystemExit(main())
