"""Follow an array live while an Erlang process appends rows to it.

    python examples/live_follow.py [--rows N]           # starts 2 local Erlang nodes
    python examples/live_follow.py --nodes a@h b@h [--rows N] [--cookie-file FILE]

An instrument on the cluster (here an Erlang process this example starts on the second node,
from an expression parsed here: nothing is installed) writes one row of readings per tick,
as ExZarr's Mnesia backend would: a plain ``mnesia:write`` of the chunk record
``{zarr_storage, {Id, {chunk, {Row, 0}}}, Bytes}``. Python watches the array and reads each
row the moment its write commits, with no polling. The cookie comes from
``--cookie-file``, ``ERLANG_COOKIE`` or ``~/.erlang.cookie``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid

import numpy as np

import pyrlang_zarr as pz
from pyrlang_zarr.mnesia.expr import tree
from pyrlang_zarr.term import Atom
from pyrlang_zarr.testing.cluster import LocalCluster
from pyrlang_zarr.url import read_cookie_file

WIDTH = 16  # readings per row; one row is one chunk

# The instrument: every Interval ms, one more row, each its own Mnesia transaction.
INSTRUMENT = """
begin
    Append = fun Append(_, []) -> done;
                 Append(Row, [Bytes | Rest]) ->
                     timer:sleep(Interval),
                     {atomic, ok} = mnesia:transaction(fun() ->
                         mnesia:write({zarr_storage, {Id, {chunk, {Row, 0}}}, Bytes})
                     end),
                     Append(Row + 1, Rest)
             end,
    Append(0, Rows)
end.
"""


async def follow(nodes: list[str], cookie: str | None, rows: int) -> None:
    arr = await pz.create(
        array_id=f"telemetry-{uuid.uuid4().hex[:6]}",
        shape=(rows, WIDTH),
        chunks=(1, WIDTH),
        dtype="float64",
        node=nodes[0],
        cookie=cookie,
        nodes=nodes,
        exzarr=True,  # ExZarr's format: the instrument writes raw little-endian rows
        compressor=None,
    )
    readings = np.random.default_rng(7).standard_normal((rows, WIDTH)).cumsum(axis=0)
    client = await arr.store.client()
    async with arr.watch() as live:
        print(f"watching {arr.array_id} through {live.node}")
        bindings = {
            "Id": arr.array_id.encode(),
            "Rows": [row.astype("<f8").tobytes() for row in readings],
            "Interval": 50,
        }
        binds = sorted((Atom(k), v) for k, v in bindings.items())
        args = [Atom("erl_eval"), Atom("expr"), [tree(INSTRUMENT), binds]]
        await client.node.rpc(nodes[-1], "erlang", "spawn", args)
        print(f"instrument started on {nodes[-1]}: {rows} rows, one every 50 ms")
        seen = 0
        t0 = time.perf_counter()
        async for event in live:
            if event.kind == "resync" or event.region is None:
                continue  # would mean: read everything again; not with this little data
            start, stop = event.region
            row = await arr.get_slice(start, stop)
            same = np.array_equal(row[0], readings[start[0]])
            print(f"  row {start[0]:3d}: mean {row.mean():+.3f}  matches the instrument: {same}")
            seen += 1
            if seen == rows:
                break
    print(f"followed {seen} rows live in {time.perf_counter() - t0:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", nargs="+", metavar="NODE", help="an existing cluster")
    parser.add_argument("--cookie-file", help="the cluster's cookie (else the usual places)")
    parser.add_argument("--rows", type=int, default=20, help="rows the instrument writes")
    args = parser.parse_args()
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    cookie = read_cookie_file(args.cookie_file) if args.cookie_file else None
    with contextlib.ExitStack() as stack:
        if args.nodes:
            nodes = args.nodes
        else:
            cluster = stack.enter_context(LocalCluster(n=2))
            nodes, cookie = cluster.nodes, cluster.cookie
        asyncio.run(follow(nodes, cookie, args.rows))


if __name__ == "__main__":
    main()
