"""Command line: ``python -m pyrlang_zarr demo`` runs the main job on a local cluster.

The main job is the seed's example end to end: a 3-node Erlang cluster is started, Mnesia
and the table are set up on it from Python, ``experiment_001`` (1000x1000 float64, 100x100
chunks) is created, written and read back, then opened through another replica.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import numpy as np

import pyrlang_zarr as pz
from pyrlang_zarr.testing.cluster import LocalCluster


async def demo(n: int) -> int:
    with LocalCluster(n=n) as cluster:
        print(f"started {n} Erlang nodes: {', '.join(cluster.nodes)}")
        t0 = time.perf_counter()
        arr = await pz.create(
            array_id="experiment_001",
            shape=(1000, 1000),
            chunks=(100, 100),
            dtype="float64",
            node=cluster.nodes[0],
            cookie=cluster.cookie,
            nodes=cluster.nodes,
        )
        print(f"Mnesia set up and {arr} created in {time.perf_counter() - t0:.2f} s")
        data = np.random.default_rng(42).random((1000, 1000))
        t0 = time.perf_counter()
        await arr.set_slice(data, start=(0, 0), stop=(1000, 1000))
        dt = time.perf_counter() - t0
        print(f"set_slice of 8 MB (100 chunks, one transaction) in {dt:.2f} s")
        t0 = time.perf_counter()
        block = await arr.get_slice(start=(0, 0), stop=(100, 100))
        print(f"get_slice (0,0)..(100,100) in {(time.perf_counter() - t0) * 1000:.0f} ms")
        ok = bool(np.array_equal(block, data[:100, :100]))
        for other in cluster.nodes[1:]:
            copy = await pz.open(array_id="experiment_001", node=other, cookie=cluster.cookie)
            same = bool(np.array_equal(await copy.get_slice(), data))
            print(f"opened through {other}: all 1000x1000 values identical = {same}")
            ok = ok and same
    print("done" if ok else "FAILED")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyrlang_zarr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="run the main job on a local cluster it starts")
    p_demo.add_argument("--nodes", type=int, default=3, help="how many Erlang nodes (default 3)")
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    return asyncio.run(demo(args.nodes))


if __name__ == "__main__":
    sys.exit(main())
