"""A fragmented array over three hosts (network namespaces): a spread read takes each
chunk from the host holding it, as the hosts' own byte counters show; a read in one
transaction sends everything through the coordinator's link instead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyrlang_zarr.testing.netns import NetnsCluster
from tests.test_netns import require_netns

pytestmark = [pytest.mark.erlang, pytest.mark.netns, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20

# Run in the client namespace: create, write, then one read per line asked on stdin.
CLIENT = """
import asyncio, json, sys
import numpy as np
import pyrlang_zarr as pz

async def main(nodes):
    arr = await pz.create(array_id="spread", shape=(3 * 2**17,), chunks=(2**13,),
                          dtype="float64", node=nodes[0], nodes=nodes, fragments=16,
                          table_name="pz_spread", compressors=None)
    data = np.random.default_rng(1).random(3 * 2**17)
    await arr.set_slice(data, start=(0,), stop=data.shape)
    loop = asyncio.get_running_loop()
    for kind in ("spread", "transaction"):
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        got = await arr.get_slice(consistent=kind == "transaction")
        print(json.dumps({"kind": kind, "same": bool(np.array_equal(got, data))}), flush=True)

asyncio.run(main(sys.argv[1].split(",")))
"""


@pytest.fixture
def hosts() -> Iterator[NetnsCluster]:
    require_netns()
    with NetnsCluster(n=3) as c:
        yield c


def test_spread_read_takes_each_chunk_from_its_host(hosts: NetnsCluster) -> None:
    argv = hosts.ns_argv("client", [sys.executable, "-c", CLIENT, ",".join(hosts.nodes)])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ERLANG_COOKIE": hosts.cookie}
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    sent: dict[str, list[int]] = {}
    try:
        for kind in ("spread", "transaction"):
            assert proc.stdout.readline().strip() == "ready"
            before = [hosts.sent_bytes(i) for i in range(3)]
            proc.stdin.write("go\n")
            proc.stdin.flush()
            result = json.loads(proc.stdout.readline())
            assert result == {"kind": kind, "same": True}
            sent[kind] = [hosts.sent_bytes(i) - b for i, b in enumerate(before)]
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    # where the 3 MiB array's fragments are, as Mnesia says
    owners = hosts.erl_eval(
        0,
        "mnesia:activity(async_dirty, fun mnesia:table_info/2, [pz_spread, frag_dist], "
        "mnesia_frag).",
    )
    assert all(node in owners for node in hosts.nodes)
    # spread: every host sent its own share, none sent it all
    assert all(0.15 * 3 * MIB < b < 0.6 * 3 * MIB for b in sent["spread"]), sent
    # one transaction: the coordinator sent the whole array to the client
    assert sent["transaction"][0] > 0.95 * 3 * MIB, sent
