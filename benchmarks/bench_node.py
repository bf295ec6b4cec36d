"""Our Python hidden node against a native BEAM hidden node, side by side, in one run.

    python -m benchmarks.bench_node            # full run: 5 alternating reps (about 30 s)
    python -m benchmarks.bench_node --quick    # smaller counts (a few seconds)
    python -m benchmarks.bench_node --profile download   # cProfile our side of one metric

Starts one local Erlang node (``LocalCluster(n=1)``) as the server, then measures the same
four things for two clients of it: our ``Node`` (caller on the main asyncio loop, sockets on
the node's IO thread, as in real use) and ``native_client.escript``, a hidden BEAM node with
the cluster's scheduler flags that makes the same ``gen_server:call({rex, Server}, {call, M,
F, A, user}, infinity)`` calls. See ``benchmarks/README.md`` for how to read the table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import harness
from pyrlang_zarr import Atom, Node
from pyrlang_zarr.testing.cluster import LocalCluster

ESCRIPT = Path(__file__).resolve().parent / "native_client.escript"
MIB = 1 << 20
BLOB_KEY = Atom("pz_bench_blob")
NATIVE_DEADLINE = 900  # seconds; the escript halts itself after this long


@dataclass(frozen=True)
class Params:
    warmup: int  # erlang:node() calls before the latency samples
    lat: int  # sequential erlang:node() calls timed one by one
    up: int  # sequential 1 MiB uploads
    down: int  # sequential 1 MiB downloads
    conc: int  # calls in flight at once
    rounds: int  # timed rounds of the concurrent calls (after one untimed round)
    reps: int  # whole measurement sets per client, ours and native alternating


FULL = Params(warmup=500, lat=3000, up=200, down=200, conc=2000, rounds=5, reps=5)
QUICK = Params(warmup=100, lat=500, up=30, down=30, conc=2000, rounds=2, reps=1)


@dataclass
class Raw:
    """What one client measured, in nanoseconds (the escript prints the same fields)."""

    lat_ns: list[int]
    up_n: int
    up_ns: int
    down_n: int
    down_ns: int
    conc_n: int
    conc_ns: list[int]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Raw:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    higher_is_better: bool
    target: float | None  # ours/native must be >= (throughput) or <= (latency) this
    get: Callable[[Raw], float]


def percentile(samples: list[int], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``samples``."""
    ordered = sorted(samples)
    rank = max(1, round(q / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def mib_per_s(n: int, ns: int) -> float:
    return n / (ns / 1e9)  # each call carries 1 MiB


METRICS = [
    Metric("rpc latency p50", "µs", False, 1.5, lambda r: percentile(r.lat_ns, 50) / 1e3),
    Metric("rpc latency p99", "µs", False, None, lambda r: percentile(r.lat_ns, 99) / 1e3),
    Metric("upload 1 MiB", "MiB/s", True, 0.9, lambda r: mib_per_s(r.up_n, r.up_ns)),
    Metric("download 1 MiB", "MiB/s", True, 0.9, lambda r: mib_per_s(r.down_n, r.down_ns)),
    Metric(
        "concurrent calls",
        "calls/s",
        True,
        None,
        lambda r: r.conc_n / (statistics.median(r.conc_ns) / 1e9),
    ),
]


# -- our side -------------------------------------------------------------------------------


async def bench_latency(node: Node, server: str, p: Params) -> list[int]:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(p.lat):
        t0 = clock()
        await node.rpc(server, "erlang", "node", [])
        samples.append(clock() - t0)
    return samples


async def bench_upload(node: Node, server: str, p: Params, blob: bytes) -> int:
    t0 = time.perf_counter_ns()
    for _ in range(p.up):
        if await node.rpc(server, "erlang", "byte_size", [blob]) != MIB:
            raise RuntimeError("byte_size/1 returned the wrong size")
    return time.perf_counter_ns() - t0


async def bench_download(node: Node, server: str, p: Params) -> int:
    t0 = time.perf_counter_ns()
    for _ in range(p.down):
        if len(await node.rpc(server, "persistent_term", "get", [BLOB_KEY])) != MIB:
            raise RuntimeError("persistent_term:get/1 returned the wrong blob")
    return time.perf_counter_ns() - t0


async def bench_concurrent_round(node: Node, server: str, p: Params) -> int:
    t0 = time.perf_counter_ns()
    results = await asyncio.gather(
        *(node.rpc(server, "erlang", "+", [i, 1]) for i in range(p.conc))
    )
    elapsed = time.perf_counter_ns() - t0
    if results != [i + 1 for i in range(p.conc)]:
        raise RuntimeError("a concurrent call returned a wrong result")
    return elapsed


async def warm_up(node: Node, server: str, p: Params, blob: bytes) -> None:
    for _ in range(p.warmup):
        await node.rpc(server, "erlang", "node", [])
    for _ in range(3):
        await node.rpc(server, "erlang", "byte_size", [blob])
        await node.rpc(server, "persistent_term", "get", [BLOB_KEY])
    await bench_concurrent_round(node, server, p)


async def run_ours(node: Node, server: str, p: Params) -> Raw:
    blob = os.urandom(MIB)
    await warm_up(node, server, p, blob)
    lat = await bench_latency(node, server, p)
    up_ns = await bench_upload(node, server, p, blob)
    down_ns = await bench_download(node, server, p)
    conc = [await bench_concurrent_round(node, server, p) for _ in range(p.rounds)]
    return Raw(lat, p.up, up_ns, p.down, down_ns, p.conc, conc)


# -- native side ----------------------------------------------------------------------------


async def run_native(server: str, cookie: str, p: Params) -> tuple[Raw, dict[str, Any]]:
    name = f"pzbench-{secrets.token_hex(4)}"
    counts = (p.warmup, p.lat, p.up, p.down, p.conc, p.rounds, NATIVE_DEADLINE)
    proc = await harness.start_escript(ESCRIPT, server, cookie, name, *counts)
    try:
        async with asyncio.timeout(NATIVE_DEADLINE + 30):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode(errors="replace")
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"native client exited with status {proc.returncode}:\n{text}"
            + err.decode(errors="replace")
        )
    data = json.loads(lines[-1])
    return Raw.from_json(data), data


# -- report ---------------------------------------------------------------------------------


def fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def record(reps: harness.Reps[tuple[str, str]], side: str, raw: Raw) -> None:
    for m in METRICS:
        reps.add((m.name, side), m.get(raw))


def table(reps: harness.Reps[tuple[str, str]]) -> str:
    """Medians over the repetitions; the last column shows each repetition's ratio."""
    header = ("metric", "ours", "native", "ours/native", "target", "", "ratio per rep")
    rows = []
    for m in METRICS:
        ours, native = (m.name, "ours"), (m.name, "native")
        ratio = reps.median(ours) / reps.median(native)
        if m.target is None:
            target, verdict = "-", ""
        elif m.higher_is_better:
            target, verdict = f">= {m.target}x", "ok" if ratio >= m.target else "MISS"
        else:
            target, verdict = f"<= {m.target}x", "ok" if ratio <= m.target else "MISS"
        rows.append(
            (
                f"{m.name} ({m.unit})",
                fmt(reps.median(ours)),
                fmt(reps.median(native)),
                f"{ratio:.2f}x",
                target,
                verdict,
                reps.ratios(ours, native),
            )
        )
    return harness.render(header, rows, left={0, len(header) - 1})


# -- profiling ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def profiled(node: Node, out_dir: Path, label: str) -> AsyncIterator[None]:
    """cProfile both the caller's thread and the node's IO thread (profilers are per thread)."""
    caller, io_side = cProfile.Profile(), cProfile.Profile()
    try:
        async with harness.profiling_io_thread(node, io_side):
            caller.enable()
            try:
                yield
            finally:
                caller.disable()
    finally:
        out_dir.mkdir(parents=True, exist_ok=True)
        for who, prof in (("caller", caller), ("io", io_side)):
            path = out_dir / f"{label}-{who}.prof"
            prof.dump_stats(path)
            text = io.StringIO()
            pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(25)
            print(f"\n===== {label}: {who} thread (by own time; saved to {path}) =====")
            print(text.getvalue().split("\n", 4)[-1].rstrip())


async def run_profile(node: Node, server: str, p: Params, what: str, out_dir: Path) -> None:
    blob = os.urandom(MIB)
    await warm_up(node, server, p, blob)
    jobs: dict[str, Callable[[], Awaitable[Any]]] = {
        "latency": lambda: bench_latency(node, server, p),
        "upload": lambda: bench_upload(node, server, p, blob),
        "download": lambda: bench_download(node, server, p),
        "concurrent": lambda: bench_concurrent_round(node, server, p),
    }
    async with profiled(node, out_dir, what):
        t0 = time.perf_counter()
        await jobs[what]()
        wall = time.perf_counter() - t0
    print(f"\n{what}: {wall * 1e3:.0f} ms wall under the profiler")


# -- main -----------------------------------------------------------------------------------


async def amain(settings: harness.Settings[Params]) -> int:
    p, args = settings.params, settings.args
    load_before = harness.load_average()
    async with LocalCluster(n=1) as cluster, Node(cookie=cluster.cookie) as node:
        server = cluster.nodes[0]
        blob = os.urandom(MIB)  # stored on the server once: downloads cost no generation
        await node.rpc(server, "persistent_term", "put", [BLOB_KEY, blob])
        if args.profile:
            await run_profile(node, server, p, args.profile, Path(args.profile_dir))
            return 0
        print(f"server {server}; {settings.mode} mode: {p}", flush=True)
        erlang = await harness.erlang_release(node, server)
        reps: harness.Reps[tuple[str, str]] = harness.Reps()
        for rep in range(p.reps):
            for side in harness.alternate(rep, "ours", "native"):
                print(f"rep {rep + 1}/{p.reps}: measuring {side} ...", flush=True)
                if side == "ours":
                    record(reps, side, await run_ours(node, server, p))
                else:
                    raw, info = await run_native(server, cluster.cookie, p)
                    record(reps, side, raw)
    print()
    print(harness.environment(erlang, load_before))
    print(f"native client {info['node']} hidden: {info['hidden']}; medians of {p.reps} reps")
    print()
    print(table(reps))
    print()
    print("ratio = ours/native; throughput wants >= target, latency wants <= target.")
    return 0


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        choices=("latency", "upload", "download", "concurrent"),
        help="instead of comparing, cProfile our side of one measurement (both threads)",
    )
    parser.add_argument(
        "--profile-dir",
        default=str(Path(tempfile.gettempdir()) / "pz-bench-profiles"),
        help="where --profile saves its .prof files (default: %(default)s)",
    )


if __name__ == "__main__":
    sys.exit(harness.main(__doc__, FULL, QUICK, amain, configure=options))
