"""The seed's example (ExZarr's Mnesia backend docs) in Python.

Creates ``experiment_001`` (1000x1000 float64, 100x100 chunks) in Mnesia, writes a block,
reads it back. Against an existing cluster pass ``--node`` (the cookie comes from
``--cookie``, ``ERLANG_COOKIE`` or ``~/.erlang.cookie``); without it the example starts a
local Erlang node of its own and stops it afterwards. An existing ``experiment_001`` is left
alone unless ``--overwrite`` is given.

    python examples/seed_example.py
    python examples/seed_example.py --node node1@host [--overwrite]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

import numpy as np
from zarr.errors import ContainsArrayError

import pyrlang_zarr as pz
from pyrlang_zarr.testing.cluster import LocalCluster


async def seed_example(node: str, cookie: str | None, overwrite: bool = False) -> None:
    # Create array with Mnesia storage (Mnesia and the table are set up on `nodes` if needed)
    arr = await pz.create(
        array_id="experiment_001",
        shape=(1000, 1000),
        chunks=(100, 100),
        dtype="float64",
        node=node,
        cookie=cookie,
        nodes=[node],
        overwrite=overwrite,
    )
    print(f"created {arr}")

    # Write and read data
    data = np.arange(100 * 100, dtype="float64").reshape(100, 100)
    await arr.set_slice(data, start=(0, 0), stop=(100, 100))
    result = await arr.get_slice(start=(0, 0), stop=(100, 100))
    assert np.array_equal(result, data)
    print(f"wrote and read back a {result.shape} block: sum = {result.sum():.0f}")

    # The same array, opened again by id
    again = await pz.open(array_id="experiment_001", node=node, cookie=cookie)
    print(
        f"opened {again}: chunk (0, 0) mean = {(await again.get_slice((0, 0), (100, 100))).mean()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node", help="an Erlang node of an existing cluster (name@host)")
    parser.add_argument("--cookie", help="its cookie (default: ERLANG_COOKIE or ~/.erlang.cookie)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing experiment_001"
    )
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.node is None:
            cluster = stack.enter_context(LocalCluster(n=1))
            print(f"started a local Erlang node: {cluster.nodes[0]}")
            node, cookie = cluster.nodes[0], cluster.cookie
        else:
            node, cookie = args.node, args.cookie
        try:
            asyncio.run(seed_example(node, cookie, args.overwrite))
        except ContainsArrayError:
            sys.exit(
                f"experiment_001 already exists on {node}: pass --overwrite to replace it "
                "(or remove it: pyrlang-zarr rm mnesia://NODE/zarr_storage/experiment_001)"
            )


if __name__ == "__main__":
    main()
