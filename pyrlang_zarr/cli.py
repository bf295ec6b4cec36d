"""Command line: ``python -m pyrlang_zarr demo`` runs the main job on a local cluster."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import time

from pyrlang_zarr import Atom, Node
from pyrlang_zarr.cluster import LocalCluster


async def demo(n: int) -> int:
    """Start ``n`` Erlang nodes, join them as a hidden node, and call into each."""
    with LocalCluster(n=n) as cluster:
        print(f"started {n} Erlang nodes: {', '.join(cluster.nodes)}")
        async with Node(cookie=cluster.cookie) as node:
            for peer in cluster.nodes:
                name = await node.rpc(peer, "erlang", "node", [])
                otp = await node.rpc(peer, "erlang", "system_info", [Atom("otp_release")])
                print(f"  rpc {peer}: erlang:node() = {name}, OTP {bytes(otp).decode()}")
            peer = cluster.nodes[0]
            hidden = await node.rpc(peer, "erlang", "nodes", [Atom("hidden")])
            print(f"  {peer} sees us ({node.name}) as hidden: {Atom(node.name) in hidden}")
            blob = os.urandom(4 * 1024 * 1024)
            t0 = time.perf_counter()
            digest = await node.rpc(peer, "erlang", "md5", [blob])
            dt = time.perf_counter() - t0
            ok = digest == hashlib.md5(blob).digest()
            print(f"  4 MiB binary -> erlang:md5/1 in {dt * 1000:.1f} ms, digest matches: {ok}")
            t0 = time.perf_counter()
            results = await asyncio.gather(
                *(node.rpc(peer, "erlang", "+", [i, 1]) for i in range(2000))
            )
            dt = time.perf_counter() - t0
            ok = ok and results == [i + 1 for i in range(2000)]
            print(f"  2000 concurrent calls in {dt * 1000:.0f} ms ({2000 / dt:,.0f} calls/s)")
    print("done" if ok else "FAILED")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyrlang_zarr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="run the main job on a local cluster it starts")
    p_demo.add_argument("--nodes", type=int, default=3, help="how many Erlang nodes (default 3)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return asyncio.run(demo(args.nodes))
    return 2


if __name__ == "__main__":
    sys.exit(main())
