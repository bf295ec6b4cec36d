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
- ours only: *in flight*, from our request leaving (``send`` returns) to its reply being
  read (``recv_into`` returns), and *turnaround*, from that read to the next request
  leaving: the part of a sequential write that is our own Python. These two are timed by
  wrapping the connection's socket objects (two clock reads per call), so a separate set of
  writes measures them, not the one timed for the wall time.

No assertions on timings: it prints the environment and one table, and exits 0.
"""

from __future__ import annotations

import functools
import itertools
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


class Stamped:
    """A socket that notes when each ``send`` and ``recv_into`` returned."""

    def __init__(self, sock: Any, log: list[tuple[str, int]]) -> None:
        self._sock = sock
        self._log = log

    def send(self, data: Any) -> int:
        n: int = self._sock.send(data)
        self._log.append(("sent", time.perf_counter_ns()))
        return n

    def sendmsg(self, buffers: Any) -> int:
        n: int = self._sock.sendmsg(buffers)
        self._log.append(("sent", time.perf_counter_ns()))
        return n

    def recv_into(self, buffer: Any, *args: Any) -> int:
        n: int = self._sock.recv_into(buffer, *args)
        self._log.append(("read", time.perf_counter_ns()))
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def phases(log: list[tuple[str, int]]) -> tuple[list[float], list[float]]:
    """(in flight, turnaround) in µs, from a log of sends and reads of sequential calls."""
    flight: list[float] = []
    turn: list[float] = []
    for (a, ta), (b, tb) in itertools.pairwise(log):
        if a == "sent" and b == "read":
            flight.append((tb - ta) / 1000)
        elif a == "read" and b == "sent":
            turn.append((tb - ta) / 1000)
    return flight, turn


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
                flight, turn = await stamped(
                    node, nodes[0], lambda i: client.write(bench_key(i), data), n
                )
                reps.add(("in flight", "ours"), flight)
                reps.add(("turnaround", "ours"), turn)
                for key, (module, function, args) in RPCS.items():
                    rpc = functools.partial(rpc_n, node, nodes[0], module, function, args)
                    _, turn = await stamped(node, nodes[0], rpc, n // 2)
                    reps.add((key, "ours"), turn)
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
                f"rep and client through rex on node 1; medians of {p.reps} rep(s) "
                f"({settings.mode} mode)"
            ],
        )
    )
    print()
    print(table(reps))
    return 0


async def stamped(
    node: Node, peer: str, call: Callable[[int], Awaitable[Any]], n: int
) -> tuple[float, float]:
    """Median in flight and turnaround (µs) of ``call(0)`` ... ``call(n - 1)`` in sequence,
    each one call to ``peer``, the connection's sockets wrapped in :class:`Stamped`
    meanwhile."""
    conn: Any = node._peers.connection(peer)
    readers: Any = None if conn is None else conn._readers
    if readers is None or conn._direct is None:
        raise RuntimeError("no plain TCP connection whose replies the caller reads")
    log: list[tuple[str, int]] = []
    direct, reading = conn._direct, readers._sock
    conn._direct, readers._sock = Stamped(direct, log), Stamped(reading, log)
    try:
        for i in range(n):
            await call(i)
    finally:
        conn._direct, readers._sock = direct, reading
    flight, turn = phases(log)
    if len(flight) < n // 2 or len(turn) < n // 2:
        raise RuntimeError(f"{len(flight)} sends and reads paired for {n} calls")
    return statistics.median(flight), statistics.median(turn)


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
        "turnaround": "ours: reply read -> next request sent",
        "rpc at once": "ours, erlang:node() rpcs: reply read -> next sent",
        "rpc after 1 ms": "ours, timer:sleep(1) rpcs: reply read -> next sent",
    }
    for key, label in labels.items():
        ours = reps.median((key, "ours"))
        spread = reps.spread((key, "ours"))
        if (key, "native") in reps.values:
            nat = reps.median((key, "native"))
            cells = (f"{nat:.0f}", f"{ours - nat:+.0f}", reps.spread((key, "native")))
        else:
            cells = ("-", "-", "-")
        rows.append((label, f"{ours:.0f}", cells[0], cells[1], spread, cells[2]))
    header = ("µs per write", "ours", "native", "ours - native", "ours, reps", "native, reps")
    return harness.render(header, rows, {0})


def main() -> int:
    return harness.main(__doc__, FULL, QUICK, amain)


if __name__ == "__main__":
    raise SystemExit(main())
