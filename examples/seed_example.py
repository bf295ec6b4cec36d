"""The seed's example (ExZarr's Mnesia backend docs) in Python.

Creates ``experiment_001`` (1000x1000 float64, 100x100 chunks) in Mnesia, writes a block,
reads it back. Against an existing cluster pass ``--node`` (the cookie comes from
``--cookie-file``, ``ERLANG_COOKIE`` or ``~/.erlang.cookie``, never from the command line;
``--tls-optfile`` for a cluster running TLS distribution); without it the example starts a
local Erlang node of its own (``--tls``: with TLS distribution) and stops it afterwards. An
existing ``experiment_001`` is left alone unless ``--overwrite`` is given.

    python examples/seed_example.py [--tls]
    python examples/seed_example.py --node node1@host [--cookie-file F] [--tls-optfile F]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys

import numpy as np
from zarr.errors import ContainsArrayError

import pyrlang_zarr as pz
from pyrlang_zarr.erldist.tls import OPTFILE_ENV
from pyrlang_zarr.testing.cluster import LocalCluster
from pyrlang_zarr.url import read_cookie_file


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


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node", help="an Erlang node of an existing cluster (name@host)")
    parser.add_argument(
        "--cookie-file",
        metavar="FILE",
        help="file holding its cookie, mode 400 (default: ERLANG_COOKIE or ~/.erlang.cookie)",
    )
    parser.add_argument(
        "--tls-optfile",
        metavar="FILE",
        help="the cluster runs TLS distribution: its ssl_dist_optfile (or a client's)",
    )
    parser.add_argument(
        "--tls", action="store_true", help="start the local node with TLS distribution"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing experiment_001"
    )
    return parser


def main() -> None:
    args = make_parser().parse_args()
    with contextlib.ExitStack() as stack:
        cookie: str | None
        if args.node is None:
            cluster = stack.enter_context(LocalCluster(n=1, tls=args.tls))
            print(f"started a local Erlang node: {cluster.nodes[0]}" + (" (TLS)" * args.tls))
            node, cookie = cluster.nodes[0], cluster.cookie
            optfile = cluster.client_optfile
        else:
            node = args.node
            cookie = read_cookie_file(args.cookie_file) if args.cookie_file else None
            optfile = args.tls_optfile
        # the library finds TLS settings here, as its nodes' erl find theirs in ERL_FLAGS
        if optfile is not None:
            os.environ[OPTFILE_ENV] = str(optfile)
        else:
            os.environ.pop(OPTFILE_ENV, None)
        try:
            asyncio.run(seed_example(node, cookie, args.overwrite))
        except ContainsArrayError:
            sys.exit(
                f"experiment_001 already exists on {node}: pass --overwrite to replace it "
                "(or remove it: pyrlang-zarr rm mnesia://NODE/zarr_storage/experiment_001)"
            )


if __name__ == "__main__":
    main()
