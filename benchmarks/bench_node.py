"""Our Python hidden node against a native BEAM hidden node, side by side, in one run, over
plain TCP and over TLS distribution.

    python -m benchmarks.bench_node            # full run: 5 alternating reps (about 1 min)
    python -m benchmarks.bench_node --quick    # smaller counts (several seconds)
    python -m benchmarks.bench_node --no-tls   # plain TCP only (half the time)
    python -m benchmarks.bench_node --profile download   # cProfile our side of one metric
    python -m benchmarks.bench_node --profile download --tls   # ... over TLS

Starts one local Erlang node (``LocalCluster(n=1)``) as the server, and one running TLS
distribution (``LocalCluster(n=1, tls=True)``: ``-proto_dist inet_tls``, certificates
verified both ways), then measures the same four things for four clients: our ``Node``
(caller on the main asyncio loop, sockets on the node's IO thread, as in real use) and
``native_client.escript``, a hidden BEAM node with the cluster's scheduler flags that makes
the same ``gen_server:call({rex, Server}, {call, M, F, A, user}, infinity)`` calls, each over
plain TCP and over TLS (the escript with ``ERL_FLAGS="-proto_dist inet_tls ..."``). The
first table compares ours with native over TCP, the second TLS with plain for each. See
``benchmarks/README.md`` for how to read them.
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


async def run_native(
    server: str, cookie: str, p: Params, optfile: Path | None = None
) -> tuple[Raw, dict[str, Any]]:
    """The escript's measurements; over TLS distribution with ``optfile``."""
    name = f"pzbench-{secrets.token_hex(4)}"
    counts = (p.warmup, p.lat, p.up, p.down, p.conc, p.rounds, NATIVE_DEADLINE)
    env = {"PZ_BENCH_COOKIE": cookie}  # never on the command line
    if optfile is not None:
        env["ERL_FLAGS"] = f"-proto_dist inet_tls -ssl_dist_optfile {optfile}"
    proc = await harness.start_escript(ESCRIPT, server, name, *counts, env=env)
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


def tls_table(reps: harness.Reps[tuple[str, str]]) -> str:
    """TLS against plain TCP, for our node and the native one (medians over the reps)."""
    header = ("metric", "ours TCP", "ours TLS", "TLS/TCP", "native TCP", "native TLS", "TLS/TCP")
    rows = []
    for m in METRICS:
        cells = [f"{m.name} ({m.unit})"]
        for side in ("ours", "native"):
            plain, tls = reps.median((m.name, side)), reps.median((m.name, f"{side} tls"))
            cells += [fmt(plain), fmt(tls), f"{tls / plain:.2f}x"]
        rows.append(tuple(cells))
    return harness.render(header, rows)


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


@dataclass
class Server:
    """A one-node cluster, our node connected to it, and how a native client reaches it."""

    cluster: LocalCluster
    node: Node
    name: str
    optfile: Path | None  # TLS: the optfile a native client uses

    @classmethod
    async def start(cls, stack: contextlib.AsyncExitStack, tls: bool) -> Server:
        cluster = await stack.enter_async_context(LocalCluster(n=1, tls=tls))
        how = cluster.client_tls if tls else False
        node = await stack.enter_async_context(Node(cookie=cluster.cookie, tls=how))
        name = cluster.nodes[0]
        blob = os.urandom(MIB)  # stored on the server once: downloads cost no generation
        await node.rpc(name, "persistent_term", "put", [BLOB_KEY, blob])
        return cls(cluster, node, name, cluster.node_optfile)


async def amain(settings: harness.Settings[Params]) -> int:
    p, args = settings.params, settings.args
    load_before = harness.load_average()
    async with contextlib.AsyncExitStack() as stack:
        plain = await Server.start(stack, tls=False)
        tls = await Server.start(stack, tls=True) if args.tls is not False else None
        if args.profile:
            target = tls if args.tls and tls is not None else plain
            await run_profile(target.node, target.name, p, args.profile, Path(args.profile_dir))
            return 0
        print(f"server {plain.name}; {settings.mode} mode: {p}", flush=True)
        if tls is not None:
            print(f"TLS server {tls.name} (-proto_dist inet_tls, verify_peer both ways)")
        erlang = await harness.erlang_release(plain.node, plain.name)
        reps: harness.Reps[tuple[str, str]] = harness.Reps()
        sides = ["ours", "native"] + (["ours tls", "native tls"] if tls is not None else [])
        for rep in range(p.reps):
            for side in harness.alternate(rep, *sides):
                print(f"rep {rep + 1}/{p.reps}: measuring {side} ...", flush=True)
                where = tls if side.endswith("tls") else plain
                assert where is not None
                if side.startswith("ours"):
                    record(reps, side, await run_ours(where.node, where.name, p))
                else:
                    raw, info = await run_native(where.name, where.cluster.cookie, p, where.optfile)
                    record(reps, side, raw)
    print()
    print(harness.environment(erlang, load_before))
    print(f"native client {info['node']} hidden: {info['hidden']}; medians of {p.reps} reps")
    print()
    print(table(reps))
    print()
    print("ratio = ours/native; throughput wants >= target, latency wants <= target.")
    if tls is not None:
        print()
        print("TLS distribution against plain TCP (same reps, same parameters):")
        print()
        print(tls_table(reps))
    return 0


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        choices=("latency", "upload", "download", "concurrent"),
        help="instead of comparing, cProfile our side of one measurement (both threads)",
    )
    parser.add_argument(
        "--no-tls",
        dest="tls",
        action="store_false",
        default=None,
        help="plain TCP only: no TLS server, no TLS rows",
    )
    parser.add_argument(
        "--tls",
        dest="tls",
        action="store_true",
        help="with --profile: profile over TLS distribution",
    )
    parser.add_argument(
        "--profile-dir",
        default=str(Path(tempfile.gettempdir()) / "pz-bench-profiles"),
        help="where --profile saves its .prof files (default: %(default)s)",
    )


if __name__ == "__main__":
    sys.exit(harness.main(__doc__, FULL, QUICK, amain, configure=options))
