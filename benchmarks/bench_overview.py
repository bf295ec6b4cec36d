"""Every per-call figure side by side with its native reference, in one run, as ratios.

    python -m benchmarks.bench_overview            # full run (about 3 min)
    python -m benchmarks.bench_overview --quick    # small counts (under a minute)

One two-node ``LocalCluster`` (Mnesia tables ``disc_copies`` on both nodes) and one run of
each of these, ours and the reference alternating (who goes first alternates too):

- **node** rows (``bench_node``'s workloads against node 1): rpc round trip p50/p99,
  upload and download of 1 MiB, 2000 concurrent rpcs; reference: ``native_client.escript``,
  a hidden BEAM node making the same ``gen_server:call`` to ``rex``.
- **Mnesia** rows (``bench_mnesia``'s workloads, replicated on both nodes): one transaction
  per chunk for 1 KiB, 64 KiB and 1 MiB chunks, 64 concurrent writers of 1 MiB chunks, and
  dirty reads of 1 MiB; reference: ``native_mnesia.escript``, the same ``mnesia`` calls from
  a hidden BEAM node through the same ``rex``.
- **array** rows (``bench_array``'s workload): 32 MiB of float64 in 8 MiB slices through
  ``set_slice``/``get_slice`` on ``disc_copies`` (one node), zstd and uncompressed;
  reference: zarr's ``LocalStore`` on this machine with the same array and codec. The
  **floor** row puts the uncompressed read's transport beside the same ``LocalStore`` read:
  the same bytes as slice-sized replies over loopback TCP between two plain processes
  (``transport``), no Erlang and no decoding; no client of the distribution protocol reads
  faster than that here.

The table shows medians over the reps, the ratio (ours over the reference: throughput wants
``>=`` the target, latency ``<=``) and every rep's ratio, so a busy machine shows as a
spread. No assertions on timings.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from benchmarks import bench_array, bench_mnesia, bench_node, harness, transport
from pyrlang_zarr import Node
from pyrlang_zarr.mnesia import MnesiaClient, ensure_table
from pyrlang_zarr.testing.cluster import LocalCluster

KIB, MIB = 1 << 10, 1 << 20
TABLE = bench_mnesia.WRITE_TABLES["disc_copies"]


@dataclass(frozen=True)
class Params:
    node: bench_node.Params
    # (label, chunk size, mode, chunks, mode's parameter): the Mnesia rows
    mnesia: tuple[tuple[str, int, str, int, int], ...]
    array_mib: int
    slice_mib: int
    reps: int


#: the array rows' commit and read, the engine's bound for them: 8 MiB per transaction
#: on the arrays' table (one node)
ENGINE_ROW = "Mnesia write 8 MiB/txn, 1 node"
ENGINE_READ_ROW = "Mnesia read 8 MiB/txn, 1 node"
ENGINE_ROWS = (ENGINE_ROW, ENGINE_READ_ROW)
#: the uncompressed read's transport alone: the same slices as raw TCP replies between two
#: processes (``transport``), against the same LocalStore read
FLOOR_ROW = "floor: loopback TCP, slice-sized replies"


def mnesia_cells(scale: int) -> tuple[tuple[str, int, str, int, int], ...]:
    return (
        ("Mnesia write 1 KiB, 1 txn/chunk", KIB, "seq", 2048 // scale, 1),
        ("Mnesia write 64 KiB, 1 txn/chunk", 64 * KIB, "seq", 512 // scale, 1),
        ("Mnesia write 1 MiB, 1 txn/chunk", MIB, "seq", 64 // scale, 1),
        ("Mnesia dirty read 1 MiB", MIB, "dread", 64 // scale, 1),
        ("Mnesia 64 concurrent writes 1 MiB", MIB, "conc", 256 // scale, 64),
        (ENGINE_ROW, MIB, "batch", 32, 8),
        (ENGINE_READ_ROW, MIB, "tread", 32, 8),
    )


FULL = Params(
    node=dataclasses.replace(bench_node.FULL, reps=1),
    mnesia=mnesia_cells(1),
    array_mib=32,
    slice_mib=8,
    reps=5,
)
QUICK = Params(
    node=dataclasses.replace(bench_node.QUICK, reps=1),
    mnesia=mnesia_cells(4),
    array_mib=32,
    slice_mib=8,
    reps=1,
)


@dataclass(frozen=True)
class Row:
    label: str
    unit: str
    higher_is_better: bool
    target: float | None
    reference: str  # what "native" is for this row


ROWS: dict[str, Row] = {}


def row(label: str, unit: str, higher: bool, target: float | None, ref: str) -> str:
    ROWS[label] = Row(label, unit, higher, target, ref)
    return label


def node_rows() -> list[tuple[str, Callable[[bench_node.Raw], float]]]:
    targets = {"rpc latency p50": 1.5, "upload 1 MiB": 0.9}
    out = []
    for m in bench_node.METRICS:
        label = row(m.name, m.unit, m.higher_is_better, targets.get(m.name), "BEAM client")
        out.append((label, m.get))
    return out


async def node_side(
    side: str, node: Node, cluster: LocalCluster, p: Params, reps: harness.Reps[Any]
) -> None:
    server = cluster.nodes[0]
    if side == "ours":
        raw = await bench_node.run_ours(node, server, p.node)
    else:
        raw, _ = await bench_node.run_native(server, cluster.cookie, p.node)
    for label, get in node_rows():
        reps.add((label, side), get(raw))


def mnesia_rows(p: Params) -> tuple[tuple[str, int, str, int, int], ...]:
    for label, size, mode, _, _ in p.mnesia:
        target = 0.9 if mode == "seq" and size < MIB else None
        row(label, "MB/s", True, target, "BEAM client")
    return p.mnesia


async def mnesia_side(
    side: str,
    node: Node,
    cluster: LocalCluster,
    native: bench_mnesia.Native,
    p: Params,
    reps: harness.Reps[Any],
) -> None:
    blobs: dict[int, bytes] = {}
    for label, size, mode, n, param in mnesia_rows(p):
        # the engine row writes where the array rows do: disc_copies on node 1 only
        nodes = cluster.nodes[:1] if label in ENGINE_ROWS else cluster.nodes
        table = bench_array.DISC_TABLE if label in ENGINE_ROWS else TABLE
        client = MnesiaClient(node, table, nodes[0], timeout=300)
        data = blobs.setdefault(size, os.urandom(size))
        if mode in ("dread", "tread"):  # reads what the row before just wrote
            t0 = time.perf_counter_ns()
            if side == "ours" and mode == "dread":
                for i in range(n):
                    got = await client.read(bench_mnesia.bench_key(i))
                    assert got is not None and len(got) == size
                ns = time.perf_counter_ns() - t0
            elif side == "ours":
                for first in range(0, n, param):
                    keys = [bench_mnesia.bench_key(i) for i in range(first, min(n, first + param))]
                    found = await client.read_many(keys, consistent=True)
                    assert all(got is not None and len(got) == size for got in found)
                ns = time.perf_counter_ns() - t0
            else:
                ns = await native.run(table, size, mode, n, param)
        else:
            await bench_mnesia.reset_table(node, nodes, table)
            if side == "ours":
                t0 = time.perf_counter_ns()
                await bench_mnesia.OURS[mode](client, data, n, param)
                ns = time.perf_counter_ns() - t0
            else:
                ns = await native.run(table, size, mode, n, param)
            await bench_mnesia.check_count(node, nodes, table, n, f"{side} {mode}")
        reps.add((label, side), n * size / 1e6 / (ns / 1e9))
    await bench_mnesia.reset_table(node, cluster.nodes, TABLE)
    await bench_mnesia.reset_table(node, cluster.nodes[:1], bench_array.DISC_TABLE)


def array_cases(cluster: LocalCluster) -> dict[str, dict[str, bench_array.Case]]:
    """codec -> side -> case: the array API on disc_copies against zarr's LocalStore."""
    out: dict[str, dict[str, bench_array.Case]] = {}
    for codec in bench_array.CODECS:
        ours = bench_array.array_api_case(
            codec,
            cookie=cluster.cookie,
            nodes=[cluster.nodes[0]],
            table=bench_array.DISC_TABLE,
            ram_copies=False,
        )
        out[codec] = {"ours": ours, "native": bench_array.local_case(codec)}
        for op in ("write", "read"):
            target = 0.9 if codec == "none" else None
            row(f"array API {op}, {codec}", "MB/s", True, target, "zarr LocalStore")
    row(FLOOR_ROW, "MB/s", True, None, "zarr LocalStore")
    return out


async def array_side(
    side: str,
    cases: dict[str, dict[str, bench_array.Case]],
    data: Any,
    p: Params,
    reps: harness.Reps[Any],
) -> bool:
    ok = True
    slice_rows = p.slice_mib * MIB // bench_array.ROW_BYTES
    for codec, sides in cases.items():
        w, r, same = await sides[side](data, slice_rows)
        ok = ok and same
        reps.add((f"array API write, {codec}", side), data.nbytes / 1e6 / w)
        reps.add((f"array API read, {codec}", side), data.nbytes / 1e6 / r)
        if codec == "none" and side == "native":
            reps.add((FLOOR_ROW, side), data.nbytes / 1e6 / r)
    if side == "ours":
        seconds = await transport.loopback_replies(data.nbytes, p.slice_mib * MIB)
        reps.add((FLOOR_ROW, side), data.nbytes / 1e6 / seconds)
    return ok


def table(reps: harness.Reps[Any]) -> str:
    header = ("workload", "ours", "native", "native is", "ours/native", "target", "", "per rep")
    out = []
    for label, r in ROWS.items():
        ours, nat = reps.median((label, "ours")), reps.median((label, "native"))
        ratio = ours / nat
        verdict = ""
        if r.target is not None:
            good = ratio >= r.target if r.higher_is_better else ratio <= r.target
            verdict = "ok" if good else "MISS"
        sign = ">=" if r.higher_is_better else "<="
        out.append(
            (
                f"{label} ({r.unit})",
                bench_node.fmt(ours),
                bench_node.fmt(nat),
                r.reference,
                f"{ratio:.2f}x",
                "-" if r.target is None else f"{sign} {r.target}x",
                verdict,
                reps.ratios((label, "ours"), (label, "native")),
            )
        )
    return harness.render(header, out, {0, 3, 7})


async def amain(settings: harness.Settings[Params]) -> int:
    p = settings.params
    started = time.perf_counter()
    load_before = harness.load_average()
    data = bench_array.make_data(p.array_mib * MIB // bench_array.ROW_BYTES)
    ok = True
    reps: harness.Reps[Any] = harness.Reps()
    async with LocalCluster(n=2) as cluster, Node(cookie=cluster.cookie) as node:
        nodes = cluster.nodes
        erlang = await harness.erlang_release(node, nodes[0])
        blob = os.urandom(MIB)  # downloads: stored once, not built per call
        await node.rpc(nodes[0], "persistent_term", "put", [bench_node.BLOB_KEY, blob])
        await ensure_table(node, nodes, TABLE)
        await ensure_table(node, nodes[:1], bench_array.DISC_TABLE)
        node_rows()  # the table's rows in this order
        mnesia_rows(p)
        cases = array_cases(cluster)
        native = await bench_mnesia.Native.start(nodes[0], cluster.cookie)
        try:
            parts: list[tuple[str, Callable[[str], Awaitable[Any]]]] = [
                ("node", lambda side: node_side(side, node, cluster, p, reps)),
                ("mnesia", lambda side: mnesia_side(side, node, cluster, native, p, reps)),
                ("array", lambda side: array_side(side, cases, data, p, reps)),
            ]
            turn = 0
            for rep in range(p.reps):
                for what, run in parts:
                    for side in harness.alternate(turn, "ours", "native"):
                        print(f"rep {rep + 1}/{p.reps}: {what}, {side} ...", flush=True)
                        if await run(side) is False:
                            ok = False
                    turn += 1
        finally:
            await native.stop()
    print()
    note = "2-node LocalCluster; Mnesia tables disc_copies on both nodes (array rows: node 1)"
    print(harness.environment(erlang, load_before, notes=[note]))
    print(f"medians of {p.reps} rep(s); {settings.mode} mode")
    print()
    print(table(reps))
    print()
    print("ratio = ours/native; throughput wants >= target, latency wants <= target.")
    print(f"total {time.perf_counter() - started:.0f} s")
    if not ok:
        print("DATA MISMATCH: an array slice read back differs from what was written")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(harness.main(__doc__, FULL, QUICK, amain))
