"""One fragmented array read and written over 1-4 hosts whose links are rate-limited.

Needs root (network namespaces, ``tc``): four hosts (``testing/netns.py``), each host's link
limited both ways by a token bucket (``tc qdisc ... tbf rate 100mbit``; the kernel has no
netem), so the network, not the CPU, is the bottleneck. For N = 1..4 an array lives in a
table of 64 fragments (``--copies`` RAM copies each, at most N) over the first N hosts; the
client (its own namespace, its link not limited) reads the whole array with
``get_slice(consistent=False)``, which fetches each fragment's chunks from the nodes holding
it in parallel, and with ``get_slice()`` (one transaction: every chunk through the
coordinator), and writes it with ``set_slice`` (one transaction, one coordinator).
Configurations alternate within each rep.

Then, on two local nodes (no rate limit): what listing one array costs as the fragments
grow (``MnesiaClient.keys_under``: a ``select`` through ``mnesia_frag``, one per
fragment), and ``disc_only_copies`` (dets) against ``disc_copies`` for the same array.

    python -m benchmarks.bench_fragments [--quick] [--reps N] [--mib N] [--rate-mbit N]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness

ROOT = Path(__file__).resolve().parent.parent
HOSTS = 4
FRAGMENTS = 64  # a power of two: linear hashing gives every fragment the same share
MB = 1e6


@dataclasses.dataclass(frozen=True)
class Params:
    reps: int
    mib: int  # array size
    chunk_kib: int
    rate_mbit: int
    list_chunks: int  # chunks of the array listed
    copies: int  # copies of each fragment (at most N)


FULL = Params(reps=5, mib=16, chunk_kib=64, rate_mbit=100, list_chunks=2000, copies=1)
QUICK = Params(reps=1, mib=4, chunk_kib=64, rate_mbit=100, list_chunks=200, copies=1)
LIST_FRAGMENTS = (0, 1, 4, 16, 64)  # 0: a table that is not fragmented


async def local_parts(p: Params) -> tuple[str, str]:
    """The listing and storage tables, on two local nodes."""
    import pyrlang_zarr as pz
    from pyrlang_zarr.erldist.node_registry import shared_node
    from pyrlang_zarr.mnesia import MnesiaClient, ensure_table
    from pyrlang_zarr.testing.cluster import LocalCluster

    reps: harness.Reps[tuple[str, Any]] = harness.Reps()
    async with LocalCluster(n=2) as c:
        node = shared_node(c.cookie)
        clients = {}
        for f in LIST_FRAGMENTS:
            table = f"pz_list{f}"
            await ensure_table(node, c.nodes, table, fragments=f or None)
            client = MnesiaClient(node, table, c.nodes[0])
            # the listed array among 4 others of the same size
            for aid in (b"a", b"b", b"c", b"d", b"e"):
                items = [
                    ((aid, (pz.Atom("chunk"), (i,))), b"x" * 100) for i in range(p.list_chunks)
                ]
                for b in range(0, len(items), 500):
                    await client.write_many(items[b : b + 500])
            clients[f] = client
        for rep in range(max(p.reps, 3)):
            for f in harness.alternate(rep, *LIST_FRAGMENTS):
                t0 = time.perf_counter()
                keys = await clients[f].keys_under(b"c")
                reps.add(("list", f), (time.perf_counter() - t0) * 1000)
                assert len(keys) == p.list_chunks
        listing = harness.render(
            ("fragments", "list one array, ms", "min-max"),
            [
                (
                    str(f) if f else "not fragmented",
                    f"{reps.median(('list', f)):.1f}",
                    reps.spread(("list", f), ".1f"),
                )
                for f in LIST_FRAGMENTS
            ],
        )
        side = p.chunk_kib * 1024 // 8
        shape = (p.mib * 1024 * 1024 // 8,)
        data = np.random.default_rng(3).random(shape)
        arrays = {}
        for kind in ("disc_copies", "disc_only_copies"):
            arrays[kind] = await pz.create(
                array_id="store",
                shape=shape,
                chunks=(side,),
                node=c.nodes[0],
                cookie=c.cookie,
                nodes=c.nodes,
                fragments=4,
                disc_only_copies=kind == "disc_only_copies",
                table_name=f"pz_{kind}",
                compressors=None,
            )
        for rep in range(max(p.reps, 3)):
            for kind in harness.alternate(rep, "disc_copies", "disc_only_copies"):
                t0 = time.perf_counter()
                await arrays[kind].set_slice(data, start=(0,), stop=shape)
                reps.add(("write", kind), data.nbytes / MB / (time.perf_counter() - t0))
                t0 = time.perf_counter()
                await arrays[kind].get_slice()
                reps.add(("read", kind), data.nbytes / MB / (time.perf_counter() - t0))
        storage = harness.render(
            ("storage (4 fragments, 2 nodes)", "write MB/s", "min-max", "read MB/s", "min-max"),
            [
                (
                    kind,
                    f"{reps.median(('write', kind)):.1f}",
                    reps.spread(("write", kind), ".1f"),
                    f"{reps.median(('read', kind)):.1f}",
                    reps.spread(("read", kind), ".1f"),
                )
                for kind in ("disc_copies", "disc_only_copies")
            ],
        )
        await node.close()
    return listing, storage


# -- the client, in the client namespace -------------------------------------------------------


async def client(cfg: dict[str, Any]) -> dict[str, Any]:
    import pyrlang_zarr as pz
    from pyrlang_zarr.erldist.node_registry import shared_node

    nodes: list[str] = cfg["nodes"]
    side = cfg["chunk_kib"] * 1024 // 8  # float64 values per chunk, one dimension
    n_chunks = cfg["mib"] * 1024 * 1024 // (side * 8)
    shape, chunks = (n_chunks * side,), (side,)
    data = np.random.default_rng(7).random(shape)
    arrays = {}
    spread: dict[int, list[int]] = {}
    for k in range(1, HOSTS + 1):
        arrays[k] = arr = await pz.create(
            array_id="big",
            shape=shape,
            chunks=chunks,
            dtype="float64",
            node=nodes[0],
            nodes=nodes[:k],
            fragments=FRAGMENTS,
            frag_copies=min(cfg["copies"], k),
            ram_copies=True,  # the network is measured, not the discs' log dumps
            table_name=f"pz_bench_frag{k}",
            compressors=None,
            overwrite=True,
        )
        await arr.set_slice(data, start=(0,), stop=shape)
        # chunks per host, as the cluster's hash puts them
        c = await arr.store.client()
        layout = await c.frag_layout(refresh=True)
        keys = [(b"big", (pz.Atom("chunk"), (i,))) for i in range(n_chunks)]
        numbers = await shared_node().rpc(
            nodes[0],
            "lists",
            "zipwith",
            [
                pz.ExportFun(str(layout.hash_module), "key_to_frag_number", 2),
                [layout.hash_state] * n_chunks,
                keys,
            ],
        )
        per_host = dict.fromkeys(nodes[:k], 0)
        for n in numbers:  # the first holder's (with several copies, reads share them)
            per_host[layout.readers[n - 1][0]] += 1
        spread[k] = sorted(per_host.values(), reverse=True)
    timings: dict[str, list[float]] = {}
    ok = True
    for rep in range(cfg["reps"]):
        for k in harness.alternate(rep, *range(1, HOSTS + 1)):
            arr = arrays[k]
            for what in ("read", "read1", "write"):
                t0, c0 = time.perf_counter(), time.process_time()
                if what == "write":
                    await arr.set_slice(data, start=(0,), stop=shape)
                else:
                    got = await arr.get_slice(consistent=what == "read1")
                    ok = ok and bool(np.array_equal(got, data))
                dt = time.perf_counter() - t0
                timings.setdefault(f"{what}{k}", []).append(data.nbytes / MB / dt)
                timings.setdefault(f"cpu{what}{k}", []).append(
                    100 * (time.process_time() - c0) / dt
                )
            print(f"rep {rep + 1}, {k} host(s) done", file=sys.stderr, flush=True)
    return {"timings": timings, "spread": spread, "ok": ok, "chunks": n_chunks}


# -- the harness side --------------------------------------------------------------------------


def table(timings: dict[str, list[float]], spread: dict[str, list[int]], copies: int) -> str:
    reps: harness.Reps[str] = harness.Reps()
    for key, values in timings.items():
        for v in values:
            reps.add(key, v)
    rows = []
    for k in range(1, HOSTS + 1):
        rows.append(
            (
                str(k),
                " ".join(map(str, spread[str(k)])) if copies == 1 or k == 1 else "shared",
                f"{reps.median(f'read{k}'):.1f}",
                reps.spread(f"read{k}", ".1f"),
                f"{reps.median(f'read{k}') / reps.median('read1'):.2f}",
                f"{reps.median(f'read{k}') / (k * reps.median('read1')):.2f}",
                f"{reps.median(f'cpuread{k}'):.0f} %",
                f"{reps.median(f'read1{k}'):.1f}",
                f"{reps.median(f'write{k}'):.1f}",
                reps.spread(f"write{k}", ".1f"),
                f"{reps.median(f'write{k}') / reps.median('write1'):.2f}",
            )
        )
    header = (
        "hosts",
        "chunks per host",
        "read MB/s (spread)",
        "min-max",
        "x 1 host",
        "/ (N x 1 host)",
        "client CPU",
        "read MB/s (1 transaction)",
        "write MB/s",
        "min-max",
        "x 1 host",
    )
    return harness.render(header, rows, left=(0, 1))


async def amain(settings: harness.Settings[Params]) -> int:
    from pyrlang_zarr.testing.netns import NetnsCluster, available

    p = settings.params
    reason = available()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 1
    load_before = harness.load_average()
    t_start = time.perf_counter()
    with NetnsCluster(n=HOSTS) as c:
        for i in range(HOSTS):
            c.limit_rate(i, f"{p.rate_mbit}mbit")
        cfg = {"nodes": c.nodes, **dataclasses.asdict(p)}
        argv = c.ns_argv(
            "client",
            [sys.executable, "-m", "benchmarks.bench_fragments", "--client", json.dumps(cfg)],
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT), "ERLANG_COOKIE": c.cookie}
        done = await asyncio.to_thread(
            subprocess.run, argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800
        )
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        result = json.loads(done.stdout.strip().splitlines()[-1])
        erlang = c.erl_eval(0, "erlang:system_info(otp_release).").strip('"')
    print(
        harness.environment(
            f"OTP {erlang}",
            load_before,
            notes=[
                f"{HOSTS} hosts (network namespaces), each link limited to {p.rate_mbit} Mbit/s "
                f"both ways (tc tbf); the client's link not limited",
                f"array: {p.mib} MiB float64, {result['chunks']} chunks of {p.chunk_kib} KiB, "
                f"no compression; table: {FRAGMENTS} fragments x min({p.copies}, N) copies "
                "(ram_copies) over the first N hosts",
            ],
        )
    )
    print(f"\nmedians of {p.reps} rep(s), configurations interleaved; 1 MB = 10^6 bytes")
    print(table(result["timings"], result["spread"], p.copies))
    print(f"\ntotal run time so far {time.perf_counter() - t_start:.0f} s")
    if not settings.args.local:
        return 0 if result["ok"] else 1
    listing, storage = await local_parts(p)
    print(
        f"\nlisting one array of {p.list_chunks} chunks among 5 such arrays (keys only), "
        f"2 local nodes, median of {max(p.reps, 3)}"
    )
    print(listing)
    print(f"\nthe same {p.mib} MiB array, one transaction each way, 2 local nodes")
    print(storage)
    print(f"\ntotal run time {time.perf_counter() - t_start:.0f} s")
    if not result["ok"]:
        print("DATA MISMATCH: a read gave other data than was written")
        return 1
    return 0


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--client", metavar="JSON", help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-local",
        dest="local",
        action="store_false",
        help="skip the listing and storage tables (two local nodes)",
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--client":
        print(json.dumps(asyncio.run(client(json.loads(sys.argv[2])))))
        sys.exit(0)
    sizes = {
        "mib": "array size in MiB",
        "chunk_kib": "KiB per chunk",
        "rate_mbit": "Mbit/s per link",
        "list_chunks": "chunks of the listed array",
        "copies": "copies of each fragment (at most N)",
    }
    sys.exit(harness.main(__doc__, FULL, QUICK, amain, options=sizes, configure=options))
