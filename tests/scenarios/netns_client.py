"""The Python side of the multi-host fault scenarios, run in the client namespace.

It talks to the test process that owns the harness through its stdin/stdout: a line
``@kill 0`` / ``@cut 2`` / ``@heal 2`` / ``@connect 2 0`` / ``@slow 0 2`` asks for a fault or
a repair and waits for ``ok``; the last line is ``RESULT <json>``.

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
from pyrlang_zarr.mnesia import MnesiaClient, Write, ensure_table
from pyrlang_zarr.mnesia.partition import MnesiaEvents, recover_partition
from pyrlang_zarr.term import Atom, ExportFun

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
        cookie=cfg.get("cookie"),
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
    return {
        "acked": len(acked),
        "refused": len(refused),
        "lost": lost,
        "coordinator": (await arr.store.client()).coordinator,
    }


async def partition(cfg: dict[str, Any]) -> dict[str, Any]:
    """Majority table on 3 hosts; host3 is cut off; the majority keeps writing; heal,
    recover, and every acknowledged write must be on every replica."""
    nodes = cfg["nodes"]
    n1, n2, n3 = nodes
    node = shared_node(cfg.get("cookie"))
    arr = await pz.create(
        array_id="split",
        shape=(48 * CHUNK,),
        chunks=(CHUNK,),
        node=n1,
        cookie=cfg.get("cookie"),
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
    through_n3 = await pz.open(array_id="split", node=n3, cookie=cfg.get("cookie"))
    lost = await check(through_n3, acked)
    return {"acked": len(acked), "lost": lost, "event": [str(context), other]}


TAB = "zarr_storage"
BIG = 2 * 1024  # bytes per probe value: more than the slowed link lets through at once


def probe_key(i: int) -> tuple[bytes, tuple[int]]:
    return (b"raw", (i,))


def probe_value(i: int) -> bytes:
    return i.to_bytes(4, "big") * (BIG // 4)


async def read_after_write(cfg: dict[str, Any]) -> dict[str, Any]:
    """Every write API through node1 while what host1 sends to host3 crawls; right after
    each acknowledgement, host3's own copy is read (a dirty read, as the store reads).

    A control first commits with plain ``mnesia:transaction``, which returns before the
    slowed replica has the commit: its reads must miss, or the slowdown shows nothing.
    """
    nodes = cfg["nodes"]
    n1, _n2, n3 = nodes
    node = shared_node(cfg.get("cookie"))
    await ensure_table(node, nodes, TAB)
    values = BIG // 8  # float64 values per chunk of the array, stored as they are
    arr = await pz.create(
        array_id="raw-arr",
        shape=(4 * values,),
        chunks=(values,),
        compressors=None,
        node=n1,
        cookie=cfg.get("cookie"),
        nodes=nodes,
    )
    writer = MnesiaClient(node, TAB, n1)
    reader = MnesiaClient(node, TAB, n3)  # host3's local copy: mnesia:dirty_read there
    await writer.write(probe_key(999), b"present")  # deleted under the slow link below
    await reader.read(probe_key(0))  # connected to host3 before its link is slowed
    await asyncio.to_thread(ask, "slow 0 2")

    control = []
    for i in range(3):
        record = (Atom(TAB), probe_key(100 + i), probe_value(100 + i))
        done = await node.rpc(
            n1, "mnesia", "transaction", [ExportFun("mnesia", "write", 1), [record]]
        )
        assert done == (Atom("atomic"), Atom("ok")), done
        control.append(await reader.read(probe_key(100 + i)) != probe_value(100 + i))

    async def check(name: str, k: Any, expected: bytes | None) -> None:
        got = await reader.read(k)
        seen[name] = (bytes(got) if got is not None else None) == expected

    seen: dict[str, bool] = {}
    await writer.write(probe_key(1), probe_value(1))
    await check("write", probe_key(1), probe_value(1))
    await writer.write_many([(probe_key(2), probe_value(2))])
    await check("write_many", probe_key(2), probe_value(2))
    await writer.batch([Write(probe_key(3), probe_value(3))])
    await check("batch", probe_key(3), probe_value(3))
    await writer.checked_batch([], [Write(probe_key(4), probe_value(4))])
    await check("checked_batch", probe_key(4), probe_value(4))
    assert await writer.insert_if_absent(probe_key(5), probe_value(5))
    await check("insert_if_absent", probe_key(5), probe_value(5))
    assert await writer.compare_and_set(probe_key(5), probe_value(5), probe_value(6))
    await check("compare_and_set", probe_key(5), probe_value(6))
    await writer.delete(probe_key(999))
    await check("delete", probe_key(999), None)
    chunk = np.frombuffer(probe_value(8), dtype="<f8")
    await arr.set_slice(chunk, start=(values,), stop=(2 * values,))
    await check("set_slice", (b"raw-arr", (pz.Atom("chunk"), (1,))), chunk.tobytes())
    return {"control_misses": sum(control), "control": len(control), "seen": seen}


SCENARIOS = {
    "kill_during_writes": kill_during_writes,
    "partition": partition,
    "read_after_write": read_after_write,
}


def main() -> None:
    name, cfg = sys.argv[1], json.loads(sys.argv[2])
    result = asyncio.run(SCENARIOS[name](cfg))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
