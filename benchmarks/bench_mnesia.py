"""Mnesia through our client: how listing scales, and what transactions per chunk cost.

    python -m benchmarks.bench_mnesia            # full run (a few minutes)
    python -m benchmarks.bench_mnesia --quick    # smaller counts (under a minute)

Starts its own two-node ``LocalCluster`` (Mnesia tables replicated on both nodes) and measures:

1. **Listing** (``ram_copies``, so disc does not dominate): ``MnesiaClient.keys_under(ArrayId)``
   (a ``mnesia:dirty_select`` returning keys only) on a ``set`` and an ``ordered_set`` table of
   identical content, (a) with the listed array fixed at 256 chunks while the table fills up
   with more and more other arrays, and (b) in a fixed large table for listed arrays of
   64 to 4096 chunks. Median of several calls, rpc included. (The tables are filled with
   table-locked transactions; that fill is not measured.)
2. **Writes** (``disc_copies``, the default storage; then ``ram_copies`` for comparison): one
   transaction per chunk (sequential, and with 8 concurrent writers) against batches in one
   ``write_many`` transaction, for 1 KiB, 64 KiB and 1 MiB chunks, for our client and for
   ``native_mnesia.escript``, a hidden BEAM node with the cluster's scheduler flags that sends
   the very same ``mnesia:sync_transaction`` calls to the same ``rex``.

No assertions on timings: it prints the environment and two tables, and exits 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import harness
from pyrlang_zarr import Atom, ExportFun, Node
from pyrlang_zarr.mnesia import MnesiaClient, ensure_table
from pyrlang_zarr.testing.cluster import LocalCluster

ESCRIPT = Path(__file__).resolve().parent / "native_mnesia.escript"
KIB = 1 << 10
MIB = 1 << 20
NATIVE_DEADLINE = 1800  # seconds; the escript halts itself after this long
LIST_TABLES = {"set": "pzb_list_set", "ordered_set": "pzb_list_oset"}
WRITE_TABLES = {"disc_copies": "pzb_write_disc", "ram_copies": "pzb_write_ram"}
ATOMIC_OK = (Atom("atomic"), Atom("ok"))
LOCK_TABLE = ExportFun(Atom("mnesia"), Atom("write_lock_table"), 1)
WRITE = ExportFun(Atom("mnesia"), Atom("write"), 1)
ZIPWITH = ExportFun(Atom("lists"), Atom("zipwith"), 3)
APPLY = ExportFun(Atom("erlang"), Atom("apply"), 2)
FILL_BATCH = 4096  # records per transaction while filling the listing tables
CHUNK_DATA = b"0123456789abcdef"  # 16 bytes in every listing-table record
WRITERS = 8


@dataclass(frozen=True)
class Params:
    others: tuple[int, ...]  # (a): other arrays of 256 chunks in the table
    listed: tuple[int, ...]  # (b): chunks of the listed array, in the largest table
    list_calls: int  # timed keys_under calls per point (median)
    # chunk size -> (chunks per run, chunks per write_many transaction)
    writes: dict[int, tuple[int, int]]
    ram_writes: dict[int, tuple[int, int]]  # the same for the ram_copies comparison
    reps: int  # runs of every write cell per client, ours and native alternating first


FULL = Params(
    others=(10, 100, 1000),
    listed=(64, 256, 1024, 4096),
    list_calls=21,
    writes={KIB: (4096, 64), 64 * KIB: (1024, 64), MIB: (64, 8)},
    ram_writes={KIB: (4096, 64), 64 * KIB: (1024, 64), MIB: (64, 8)},
    reps=5,
)
QUICK_WRITES = {KIB: (1024, 64), 64 * KIB: (256, 64), MIB: (32, 8)}
QUICK = dataclasses.replace(
    FULL, others=(10, 100, 300), list_calls=9, writes=QUICK_WRITES, ram_writes=QUICK_WRITES, reps=1
)


def grid(n: int) -> list[tuple[int, int]]:
    """``n`` chunk indices ``(I, J)`` of a square-ish 2-D grid."""
    side = 1
    while side * side < n:
        side += 1
    return [(i // side, i % side) for i in range(n)]


def array_id(i: int) -> bytes:
    return f"arr-{i:04d}".encode()


def listed_id(chunks: int) -> bytes:
    # sorts right after "arr-0042": among the other arrays once the table holds more than 43
    return f"arr-0042-listed-{chunks:04d}".encode()


def fmt_size(size: int) -> str:
    return f"{size // MIB} MiB" if size >= MIB else f"{size // KIB} KiB"


async def rpc_ok(node: Node, peer: str, module: str, function: str, args: list[Any]) -> None:
    result = await node.rpc(peer, module, function, args, timeout=300)
    if result not in (Atom("ok"), ATOMIC_OK):
        raise RuntimeError(f"{module}:{function} on {peer} returned {result!r}")


# -- 1. listing -----------------------------------------------------------------------------


async def fill(clients: list[MnesiaClient], records: list[tuple[Any, bytes]]) -> None:
    """Write ``records`` into every table, ``FILL_BATCH`` per transaction, two in flight.

    Each transaction takes a table write lock first: ``write_many`` alone would ask both
    replicas' lock managers for one record lock per record (a round trip each), about 10x
    slower for records this small. The fill is not what is measured.
    """
    batches = [records[i : i + FILL_BATCH] for i in range(0, len(records), FILL_BATCH)]
    for client in clients:
        for i in range(0, len(batches), 2):
            await asyncio.gather(*(locked_write(client, b) for b in batches[i : i + 2]))


async def locked_write(client: MnesiaClient, batch: list[tuple[Any, bytes]]) -> None:
    """One transaction: ``mnesia:write_lock_table(Tab)``, then a ``mnesia:write/1`` each."""
    tab = Atom(client.table)
    funs = [LOCK_TABLE] + [WRITE] * len(batch)
    args = [[tab]] + [[(tab, key, data)] for key, data in batch]
    await client.transaction(ZIPWITH, [APPLY, funs, args], "fill")


async def time_listing(client: MnesiaClient, prefix: bytes, expected: int, calls: int) -> float:
    """Median ms of ``keys_under(prefix)`` over ``calls`` calls (after two untimed ones)."""
    for _ in range(2):
        if len(await client.keys_under(prefix)) != expected:
            raise RuntimeError(f"keys_under({prefix!r}) on {client.table}: wrong key count")
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        await client.keys_under(prefix)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e3


async def bench_listing(node: Node, nodes: list[str], p: Params) -> list[tuple[str, ...]]:
    clients = []
    for table_type, table in LIST_TABLES.items():
        await ensure_table(node, nodes, table, ram_copies=True, table_type=table_type)
        clients.append(MnesiaClient(node, table, nodes[0], timeout=300))
    set_client, oset_client = clients

    async def point(series: str, arrays: int, listed: int) -> tuple[str, ...]:
        table = Atom(LIST_TABLES["set"])
        size = await node.rpc(nodes[0], "mnesia", "table_info", [table, Atom("size")])
        # alternate which table goes first, so drift hits both alike
        ms: dict[str, float] = {}
        for c in harness.alternate(len(rows), set_client, oset_client):
            ms[c.table] = await time_listing(c, listed_id(listed), listed, p.list_calls)
        a, b = ms[set_client.table], ms[oset_client.table]
        print(
            f"  {series}: {arrays} arrays, listed {listed}: set {a:.2f} ms, ordered_set {b:.2f} ms",
            flush=True,
        )
        return (
            series,
            str(arrays),
            f"{size:,}",
            str(listed),
            f"{a:.2f}",
            f"{b:.2f}",
            f"{a / b:.1f}x",
        )

    rows: list[tuple[str, ...]] = []
    await fill(clients, [((listed_id(256), ij), CHUNK_DATA) for ij in grid(256)])
    have = 0
    fill_s = 0.0
    for others in p.others:
        new = [((array_id(a), ij), CHUNK_DATA) for a in range(have, others) for ij in grid(256)]
        t0 = time.perf_counter()
        await fill(clients, new)
        fill_s += time.perf_counter() - t0
        have = others
        rows.append(await point("(a) table grows", others + 1, 256))
    extra = [n for n in p.listed if n != 256]
    await fill(clients, [((listed_id(n), ij), CHUNK_DATA) for n in extra for ij in grid(n)])
    for listed in p.listed:
        rows.append(await point("(b) array grows", have + 1 + len(extra), listed))
    print(f"  (filling {have * 256:,} records into each of 2 tables took {fill_s:.1f} s)")
    for table in LIST_TABLES.values():  # free the memory before the write benchmark
        await rpc_ok(node, nodes[0], "mnesia", "delete_table", [Atom(table)])
    return rows


# -- 2. writes ------------------------------------------------------------------------------


def bench_key(i: int) -> tuple[bytes, tuple[int, int]]:
    return (b"bench", (i, 0))  # the escript's key(I)


async def ours_seq(client: MnesiaClient, data: bytes, n: int, _: int) -> None:
    for i in range(n):
        await client.write(bench_key(i), data)


async def ours_conc(client: MnesiaClient, data: bytes, n: int, writers: int) -> None:
    async def writer(w: int) -> None:
        for i in range(w, n, writers):
            await client.write(bench_key(i), data)

    await asyncio.gather(*(writer(w) for w in range(writers)))


async def ours_batch(client: MnesiaClient, data: bytes, n: int, batch: int) -> None:
    for first in range(0, n, batch):
        await client.write_many((bench_key(i), data) for i in range(first, min(n, first + batch)))


OURS = {"seq": ours_seq, "conc": ours_conc, "batch": ours_batch}


class Native:
    """The escript, kept running: one command line in, one JSON line out."""

    def __init__(self, proc: asyncio.subprocess.Process, info: dict[str, Any]) -> None:
        self.proc = proc
        self.info = info

    @classmethod
    async def start(cls, server: str, cookie: str) -> Native:
        name = f"pzbench-{secrets.token_hex(4)}"
        args = (server, name, NATIVE_DEADLINE)
        proc = await harness.start_escript(
            ESCRIPT, *args, stdin=asyncio.subprocess.PIPE, env={"PZ_BENCH_COOKIE": cookie}
        )
        native = cls(proc, {})
        try:
            native.info = await native._answer(60)
        except BaseException:
            await native.stop()
            raise
        return native

    async def _answer(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not line:
                err = b""
                if self.proc.stderr is not None:
                    err = await self.proc.stderr.read()
                await self.proc.wait()
                raise RuntimeError(
                    f"native client exited with status {self.proc.returncode}:\n"
                    + err.decode(errors="replace")
                )
            if line.startswith(b"{"):
                answer: dict[str, Any] = json.loads(line)
                return answer

    async def run(self, table: str, size: int, mode: str, n: int, param: int) -> int:
        """Nanoseconds the escript measured for one run."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"run {table} {size} {mode} {n} {param}\n".encode())
        await self.proc.stdin.drain()
        return int((await self._answer(NATIVE_DEADLINE))["ns"])

    async def stop(self) -> None:
        if self.proc.returncode is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.close()
                await asyncio.wait_for(self.proc.wait(), 5)
            except (OSError, TimeoutError):
                self.proc.kill()
                await self.proc.wait()


async def reset_table(node: Node, nodes: list[str], table: str) -> None:
    """Empty the table and dump each node's transaction log: every run starts alike."""
    await rpc_ok(node, nodes[0], "mnesia", "clear_table", [Atom(table)])
    for peer in nodes:
        result = await node.rpc(peer, "mnesia", "dump_log", [], timeout=300)
        if result != Atom("dumped"):
            raise RuntimeError(f"mnesia:dump_log() on {peer} returned {result!r}")


async def check_count(node: Node, nodes: list[str], table: str, n: int, what: str) -> None:
    """``n`` records on every replica (untimed). ``mnesia:sync_transaction`` returns once
    every replica committed; the check waits a little anyway, as for a plain transaction."""
    deadline = time.monotonic() + 60
    for peer in nodes:
        while True:
            count = await node.rpc(peer, "mnesia", "table_info", [Atom(table), Atom("size")])
            if count == n:
                break
            if peer == nodes[0] or time.monotonic() > deadline:
                raise RuntimeError(f"{what}: {count} records on {peer}, not {n}")
            await asyncio.sleep(0.01)


def write_modes(batch: int) -> list[tuple[str, int, str]]:
    """(mode, its parameter, label) of the three ways of writing."""
    return [
        ("seq", 1, "1 txn/chunk, sequential"),
        ("conc", WRITERS, f"1 txn/chunk, {WRITERS} writers"),
        ("batch", batch, f"write_many, {batch} chunks/txn"),
    ]


async def bench_writes(
    node: Node,
    nodes: list[str],
    native: Native,
    storage: str,
    cells: dict[int, tuple[int, int]],
    reps: int,
) -> list[tuple[str, ...]]:
    table = WRITE_TABLES[storage]
    await ensure_table(node, nodes, table, ram_copies=storage == "ram_copies")
    client = MnesiaClient(node, table, nodes[0], timeout=300)
    blobs = {size: os.urandom(size) for size in cells}  # one bytes object per chunk size
    mbps: harness.Reps[tuple[int, str, str]] = harness.Reps()
    turn = 0
    for rep in range(reps):
        for size, (n, batch) in cells.items():
            for mode, param, label in write_modes(batch):
                for side in harness.alternate(turn, "ours", "native"):
                    await reset_table(node, nodes, table)
                    if side == "ours":
                        t0 = time.perf_counter_ns()
                        await OURS[mode](client, blobs[size], n, param)
                        ns = time.perf_counter_ns() - t0
                    else:
                        ns = await native.run(table, size, mode, n, param)
                    await check_count(node, nodes, table, n, f"{side} {mode}")
                    mbps.add((size, mode, side), n * size / 1e6 / (ns / 1e9))
                turn += 1
                ours, nat = (mbps.last((size, mode, side)) for side in ("ours", "native"))
                print(
                    f"  rep {rep + 1}/{reps} {storage} {fmt_size(size)} {label}: "
                    f"ours {ours:.1f} MB/s, native {nat:.1f} MB/s",
                    flush=True,
                )
    await reset_table(node, nodes, table)
    rows: list[tuple[str, ...]] = []
    for size, (n, batch) in cells.items():
        for mode, _, label in write_modes(batch):
            ours_key, nat_key = (size, mode, "ours"), (size, mode, "native")
            ours, nat = mbps.median(ours_key), mbps.median(nat_key)
            per_rep = mbps.ratios(ours_key, nat_key)
            rows.append(
                (
                    fmt_size(size),
                    storage,
                    label,
                    f"{n} x {fmt_size(size)}",
                    f"{ours:.1f}",
                    f"{nat:.1f}",
                    f"{ours / nat:.2f}",
                    per_rep,
                )
            )
    return rows


# -- main -----------------------------------------------------------------------------------


async def amain(settings: harness.Settings[Params]) -> int:
    p = settings.params
    started = time.perf_counter()
    load_before = harness.load_average()
    async with LocalCluster(n=2) as cluster, Node(cookie=cluster.cookie) as node:
        nodes = cluster.nodes
        erlang = await harness.erlang_release(node, nodes[0])
        print(f"cluster {nodes}; {settings.mode} mode", flush=True)
        print("1. listing ...", flush=True)
        list_rows = await bench_listing(node, nodes, p)
        print("2. writes ...", flush=True)
        native = await Native.start(nodes[0], cluster.cookie)
        try:
            write_rows = await bench_writes(node, nodes, native, "disc_copies", p.writes, p.reps)
            if p.ram_writes:
                write_rows += await bench_writes(
                    node, nodes, native, "ram_copies", p.ram_writes, p.reps
                )
        finally:
            await native.stop()
    info = native.info
    note = f"2 Mnesia nodes (LocalCluster); native client {info['node']} hidden: {info['hidden']}"
    print()
    print(harness.environment(erlang, load_before, notes=[note]))
    print()
    print(
        f"Listing one array: keys_under(ArrayId), i.e. mnesia:dirty_select returning keys "
        f"only; ram_copies on both nodes, arrays of 256 chunks of 16 B around the listed "
        f"one; median of {p.list_calls} calls, ms, rpc included"
    )
    print()
    header: tuple[str, ...] = (
        "series",
        "arrays",
        "records",
        "listed chunks",
        "set ms",
        "ordered_set ms",
        "set/ordered_set",
    )
    print(harness.render(header, list_rows, {0}))
    print()
    print(
        f"Writes through rex on node 1 of 2, ordered_set replicated on both nodes; median "
        f"of {p.reps} run(s) per cell and client, table emptied and transaction logs dumped "
        f"before each run; MB/s = 10^6 bytes/s"
    )
    print()
    header = (
        "chunk",
        "storage",
        "mode",
        "data per run",
        "ours MB/s",
        "native MB/s",
        "ours/native",
        "ours/native per rep",
    )
    print(harness.render(header, write_rows, {0, 1, 2, 7}))
    print()
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(harness.main(__doc__, FULL, QUICK, amain))
