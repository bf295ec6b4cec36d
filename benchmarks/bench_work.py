"""Work per rpc round trip, counted rather than timed: Python function calls on both threads.

    python -m benchmarks.bench_work                 # calls per rpc, by thread and function
    python -m benchmarks.bench_work --calls 0 --n 2000   # just 2000 rpcs (for callgrind)
    python -m benchmarks.bench_work --op write      # MnesiaClient.write of 1 KiB instead

On a 2-core machine shared with other work a p50 moves by 2x between runs; the number of
Python function calls (and, under ``valgrind --tool=callgrind``, instructions) a round trip
costs does not. The caller is the main asyncio loop and the sockets are on the node's IO
thread, as in real use; each call is ``rpc(peer, "erlang", "node", [])``. With ``--calls``
every Python and C function call made on either thread during ``--calls`` sequential rpcs is
counted (``sys.setprofile`` on both threads), and the totals per rpc are printed with the
top functions (``--opcodes``: bytecodes executed, ``sys.settrace``). ``--op write`` counts
``MnesiaClient.write`` of 1 KiB (one ``sync_transaction`` each, on a ``ram_copies`` table of
the one node) instead. For instructions, run it twice under callgrind with different ``--n`` and
divide the difference of the two totals by the difference of the counts.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import threading
from types import FrameType
from typing import Any

from pyrlang_zarr import Node
from pyrlang_zarr.mnesia import MnesiaClient, ensure_table
from pyrlang_zarr.testing.cluster import LocalCluster

Key = tuple[str, str]


class Counter:
    """A ``sys.setprofile`` hook counting calls per thread and per function."""

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, Key]] = collections.Counter()
        self.on = False
        self._lock = threading.Lock()

    def trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        """A ``sys.settrace`` hook counting bytecodes executed, per function."""
        if not self.on:
            return None
        if event == "call":
            frame.f_trace_opcodes = True
            return self.trace
        if event == "opcode":
            code = frame.f_code
            key = (f"{code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno}", code.co_name)
            thread = threading.current_thread().name
            where = "io" if thread.startswith("pyrlang_zarr-node") else "caller"
            self.counts[(where, key)] += 1
        return self.trace

    def hook(self, frame: FrameType, event: str, arg: Any) -> None:
        if not self.on or event not in ("call", "c_call"):
            return
        if event == "call":
            code = frame.f_code
            key = (f"{code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno}", code.co_name)
        else:
            key = ("C", getattr(arg, "__qualname__", repr(arg)))
        thread = threading.current_thread().name
        where = "io" if thread.startswith("pyrlang_zarr-node") else "caller"
        self.counts[(where, key)] += 1


async def run(n: int, calls: int, top: int, opcodes: bool, op: str) -> None:
    async with LocalCluster(n=1) as cluster, Node(cookie=cluster.cookie) as node:
        peer = cluster.nodes[0]
        if op == "write":
            await ensure_table(node, [peer], "pz_bench_work", ram_copies=True)
            client = MnesiaClient(node, "pz_bench_work", peer)
            data = bytes(1024)

            async def one() -> None:
                await client.write(b"k", data)

        else:

            async def one() -> None:
                await node.rpc(peer, "erlang", "node", [])

        for _ in range(max(n, 200)):  # warm up: connected, caches filled
            await one()
        if calls:
            counter = Counter()
            io_loop = node.start_io_thread()
            done = threading.Event()

            install, uninstall = (
                (sys.settrace, sys.settrace) if opcodes else (sys.setprofile, sys.setprofile)
            )
            hook = counter.trace if opcodes else counter.hook

            def install_io() -> None:
                install(hook)
                done.set()

            io_loop.call_soon_threadsafe(install_io)
            done.wait()
            install(hook)
            counter.on = True
            for _ in range(calls):
                await one()
            counter.on = False
            uninstall(None)
            io_loop.call_soon_threadsafe(uninstall, None)
            if opcodes:
                report_opcodes(counter, calls, top)
            else:
                report(counter, calls, top)


def report(counter: Counter, calls: int, top: int) -> None:
    per: dict[tuple[str, str], float] = collections.defaultdict(float)
    for (where, key), count in counter.counts.items():
        kind = "C" if key[0] == "C" else "py"
        per[(where, kind)] += count / calls
    print(f"function calls per call over {calls} sequential calls")
    print("| thread | Python calls | C calls | total |")
    print("|---|---|---|---|")
    for where in ("caller", "io"):
        py, c = per[(where, "py")], per[(where, "C")]
        print(f"| {where} | {py:.1f} | {c:.1f} | {py + c:.1f} |")
    py = per[("caller", "py")] + per[("io", "py")]
    c = per[("caller", "C")] + per[("io", "C")]
    print(f"| both | {py:.1f} | {c:.1f} | {py + c:.1f} |")
    print()
    for where in ("caller", "io"):
        print(f"top functions on {where} (calls per rpc):")
        items = [(k, v) for (w, k), v in counter.counts.items() if w == where]
        for (loc, name), v in sorted(items, key=lambda kv: -kv[1])[:top]:
            print(f"  {v / calls:6.2f}  {name}  ({loc})")


def report_opcodes(counter: Counter, calls: int, top: int) -> None:
    print(f"bytecodes executed per call over {calls} sequential calls")
    for where in ("caller", "io"):
        items = [(k, v) for (w, k), v in counter.counts.items() if w == where]
        total = sum(v for _, v in items) / calls
        print(f"{where}: {total:.0f} bytecodes per rpc; top functions:")
        for (loc, name), v in sorted(items, key=lambda kv: -kv[1])[:top]:
            print(f"  {v / calls:7.1f}  {name}  ({loc})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=0, help="plain rpcs before counting")
    parser.add_argument("--calls", type=int, default=2000, help="rpcs to count calls over")
    parser.add_argument("--op", choices=("rpc", "write"), default="rpc", help="what to call")
    parser.add_argument("--opcodes", action="store_true", help="count bytecodes instead")
    parser.add_argument("--top", type=int, default=40, help="functions listed per thread")
    args = parser.parse_args()
    asyncio.run(run(args.n, args.calls, args.top, args.opcodes, args.op))


if __name__ == "__main__":
    main()
