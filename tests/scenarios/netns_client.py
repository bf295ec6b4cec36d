"""The Python side of the multi-host fault scenarios, run in the client namespace.

It talks to the test process that owns the harness through its stdin/stdout: a line
``@kill 0`` / ``@cut 2`` / ``@heal 2`` / ``@connect 2 0`` asks for a fault or a repair and
waits for ``ok``; the last line is ``RESULT <json>``.

    python -m tests.scenarios.netns_client <scenario> '<config json>'
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import numpy as np

import pyrlang_zarr as pz
from pyrlang_zarr.erldist.node_registry import shared_node
from pyrlang_zarr.errors import PyrlangZarrError
from pyrlang_zarr.mnesia.partition import MnesiaEvents, recover_partition

CHUNK = 64


def ask(request: str) -> None:
    """Ask the harness for a fault; blocks until it is done."""
    print("@" + request, flush=True)
    answer = sys.stdin.readline().strip()
    if answer != "ok":
        raise RuntimeError(f"harness answered {answer!r} to {request!r}")


async def one_write(arr: pz.MnesiaArray, i: int) -> float:
    value = float(i + 1)
    await arr.set_slice(np.full(CHUNK, value), start=(i * CHUNK,), stop=((i + 1) * CHUNK,))
    return value


async def check(arr: pz.MnesiaArray, acked: dict[int, float]) -> list[int]:
    data = await arr.get_slice()
    return [i for i, v in acked.items() if not np.all(data[i * CHUNK : (i + 1) * CHUNK] == v)]


async def kill_during_writes(cfg: dict[str, Any]) -> dict[str, Any]:
    """64 one-chunk writes; the connected replica is killed (-9) while write 20 is in flight."""
    nodes = cfg["nodes"]
    arr = await pz.create(
        array_id="kill64",
        shape=(64 * CHUNK,),
        chunks=(CHUNK,),
        node=nodes[0],
        cookie=cfg["cookie"],
        nodes=nodes,
    )
    acked: dict[int, float] = {}
    refused: list[int] = []
    for i in range(64):
        task = asyncio.ensure_future(one_write(arr, i))
        if i == 20:
            await asyncio.to_thread(ask, "kill 0")
        try:
            acked[i] = await task
        except PyrlangZarrError as exc:
            refused.append(i)
            print(f"write {i} refused: {exc}", file=sys.stderr)
    lost = await check(arr, acked)  # through the same array object
    assert arr.store._client is not None
    return {
        "acked": len(acked),
        "refused": len(refused),
        "lost": lost,
        "coordinator": arr.store._client.coordinator,
    }


async def partition(cfg: dict[str, Any]) -> dict[str, Any]:
    """Majority table on 3 hosts; host3 is cut off; the majority keeps writing; heal,
    recover, and every acknowledged write must be on every replica."""
    nodes = cfg["nodes"]
    n1, n2, n3 = nodes
    node = shared_node(cfg["cookie"])
    arr = await pz.create(
        array_id="split",
        shape=(48 * CHUNK,),
        chunks=(CHUNK,),
        node=n1,
        cookie=cfg["cookie"],
        nodes=nodes,
        majority=True,
    )
    acked: dict[int, float] = {}
    for i in range(16):
        acked[i] = await one_write(arr, i)
    async with MnesiaEvents(node, [n1, n2]) as events:
        await asyncio.to_thread(ask, "cut 2")
        # the majority side goes on writing (Mnesia first waits to see host3 gone)
        for i in range(16, 48):
            acked[i] = await one_write(arr, i)
        await asyncio.to_thread(ask, "minority-write 2")
        await asyncio.to_thread(ask, "heal 2")
        await events.subscribe(n3)  # the rejoining side reports it; hear it there too
        await asyncio.to_thread(ask, "connect 2 0")
        context, other = await events.wait_inconsistent(60)
    await recover_partition(node, [n1, n2], [n3], ["zarr_storage"])
    through_n3 = await pz.open(array_id="split", node=n3, cookie=cfg["cookie"])
    lost = await check(through_n3, acked)
    return {"acked": len(acked), "lost": lost, "event": [str(context), other]}


SCENARIOS = {"kill_during_writes": kill_during_writes, "partition": partition}


def main() -> None:
    name, cfg = sys.argv[1], json.loads(sys.argv[2])
    result = asyncio.run(SCENARIOS[name](cfg))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
