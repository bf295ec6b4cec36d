"""A partition on loopback nodes (kept apart by cookies), majority tables, and recovery."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest

import pyrlang_zarr as pz
from pyrlang_zarr import Atom, Node
from pyrlang_zarr.erldist.node_registry import shared_node
from pyrlang_zarr.errors import NoMajority, PossiblyStaleRead
from pyrlang_zarr.mnesia import MnesiaClient
from pyrlang_zarr.mnesia.partition import MnesiaEvents, recover_partition
from pyrlang_zarr.testing.cluster import LocalCluster
from tests.faults import NO_OVERLAP_PREVENTION, REPORT, TABLE_DIGEST, FaultRun

TAB = "zarr_storage"
CHUNK = 16


def table_digest(c: LocalCluster, i: int) -> str:
    """The whole table as node i holds it, hashed by Erlang itself."""
    return c.erl_eval(i, TABLE_DIGEST)


@pytest.mark.erlang
@pytest.mark.slow
async def test_partition_majority_refuses_minority_and_recovery_converges() -> None:
    with LocalCluster(n=3, ticktime=4, extra_args=NO_OVERLAP_PREVENTION) as c:
        node = shared_node(c.cookie)
        n1, n2, n3 = c.nodes
        aid = f"part-{uuid.uuid4().hex[:6]}"
        arr = await pz.create(
            array_id=aid,
            shape=(32 * CHUNK,),
            chunks=(CHUNK,),
            node=n1,
            cookie=c.cookie,
            nodes=c.nodes,
            majority=True,
        )
        await arr.set_slice(np.zeros(32 * CHUNK), start=(0,), stop=(32 * CHUNK,))
        async with MnesiaEvents(node, [n3]) as events:
            # cut n3 off: it can no longer authenticate with n1 and n2, nor they with it
            for other in (n1, n2):
                c.erl_eval(
                    2, f"erlang:set_cookie('{other}', pz_cut), erlang:disconnect_node('{other}')."
                )
            await _wait(lambda: _running(node, n3), lambda r: r == [n3])
            minority = MnesiaClient(node, TAB, n3)
            minority._discovered = True  # a client that can reach only the isolated node
            refused = 0
            for i in range(8):
                with pytest.raises(NoMajority):
                    await minority.write((aid.encode(), (i,)), b"minority")
                refused += 1
            acked = {}
            for i in range(8, 24):  # the majority side keeps writing
                await arr.set_slice(
                    np.full(CHUNK, float(i)), start=(i * CHUNK,), stop=((i + 1) * CHUNK,)
                )
                acked[i] = float(i)
            iso = await pz.open(array_id=aid, node=n3, cookie=c.cookie, majority=True)
            iso.store._client = minority
            with pytest.warns(PossiblyStaleRead):
                await iso.get_slice()
            # heal: Mnesia on n3 reports the partition when the nodes meet again
            c.erl_eval(
                2,
                f"erlang:set_cookie('{n1}', '{c.cookie}'), "
                f"erlang:set_cookie('{n2}', '{c.cookie}'), net_kernel:connect_node('{n1}').",
            )
            context, other = await events.wait_inconsistent(30)
            assert other in (n1, n2) and context == Atom("running_partitioned_network")
        await recover_partition(node, [n1, n2], [n3], [TAB])
        digests = {table_digest(c, i) for i in range(3)}
        data = await (await pz.open(array_id=aid, node=n3, cookie=c.cookie)).get_slice()
        lost = [i for i, v in acked.items() if not np.all(data[i * CHUNK : (i + 1) * CHUNK] == v)]
        REPORT.append(
            FaultRun(
                "loopback, 3 replicas, majority",
                "partition of 1 of 3, heal, recover",
                24,
                len(acked),
                refused,
                len(lost),
                f"{len(digests)} distinct replica digests",
            )
        )
        assert lost == [] and len(digests) == 1


async def _running(node: pz.Node, peer: str) -> list[str]:
    return sorted(
        map(str, await node.rpc(peer, "mnesia", "system_info", [Atom("running_db_nodes")]))
    )


async def _wait(probe, done, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not done(value := await probe()):
            await asyncio.sleep(0.2)
    return value


@pytest.mark.parametrize(
    "majority,minority",
    [(["a@b"], ["a@b"]), ([], ["a@b"]), (["a@b"], []), (["a@b", "c@d"], ["c@d"])],
)
def test_recover_partition_refuses_bad_sides(majority: list[str], minority: list[str]) -> None:
    node = Node(cookie="unused")  # never started: the check comes before any call
    with pytest.raises(ValueError, match="disjoint"):
        asyncio.run(recover_partition(node, majority, minority, [TAB]))
