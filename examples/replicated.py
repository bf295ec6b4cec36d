"""A replicated array on a 3-node cluster: written through one node, read through another,
and still readable when the node it was written through is gone.

    python examples/replicated.py [--tls]               # starts 3 local Erlang nodes
    python examples/replicated.py --nodes a@h b@h c@h [--overwrite]
        [--cookie-file FILE] [--tls-optfile FILE]     # an existing cluster (TLS: its optfile)

The cookie comes from ``--cookie-file``, ``ERLANG_COOKIE`` or ``~/.erlang.cookie``, never
from the command line.

An existing ``shared_array`` is left alone unless ``--overwrite`` is given.
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


async def replicated(
    nodes: list[str], cookie: str | None, cluster: LocalCluster | None, overwrite: bool = False
) -> None:
    arr = await pz.create(
        array_id="shared_array",
        shape=(512, 512),
        chunks=(128, 128),
        dtype="float32",
        node=nodes[0],
        cookie=cookie,
        nodes=nodes,  # a replica of the table on each node
        overwrite=overwrite,
    )
    data = np.random.default_rng(0).standard_normal((512, 512)).astype("float32")
    await arr.set_slice(data, start=(0, 0), stop=(512, 512))
    print(f"wrote 512x512 float32 through {nodes[0]}, replicated on {', '.join(nodes)}")

    for other in nodes[1:]:
        copy = await pz.open(array_id="shared_array", node=other, cookie=cookie)
        same = np.array_equal(await copy.get_slice(), data)
        print(f"  read back through {other}: identical = {same}")

    if cluster is not None:
        cluster.kill(0)
        print(f"killed {nodes[0]} (SIGKILL)")
        survivor = await pz.open(array_id="shared_array", node=nodes[2], cookie=cookie)
        same = np.array_equal(await survivor.get_slice(), data)
        print(f"  read back through {nodes[2]} after the kill: identical = {same}")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", nargs=3, help="three Erlang nodes of an existing cluster")
    parser.add_argument(
        "--cookie-file",
        metavar="FILE",
        help="file holding the cookie, mode 400 (default: ERLANG_COOKIE or ~/.erlang.cookie)",
    )
    parser.add_argument(
        "--tls-optfile",
        metavar="FILE",
        help="the cluster runs TLS distribution: its ssl_dist_optfile (or a client's)",
    )
    parser.add_argument(
        "--tls", action="store_true", help="start the local nodes with TLS distribution"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing shared_array")
    return parser


def main() -> None:
    args = make_parser().parse_args()
    with contextlib.ExitStack() as stack:
        cluster = None
        cookie: str | None
        if args.nodes is None:
            cluster = stack.enter_context(LocalCluster(n=3, tls=args.tls))
            nodes, cookie = cluster.nodes, cluster.cookie
            optfile = cluster.client_optfile
        else:
            nodes = args.nodes
            cookie = read_cookie_file(args.cookie_file) if args.cookie_file else None
            optfile = args.tls_optfile
        # the library finds TLS settings here, as its nodes' erl find theirs in ERL_FLAGS
        if optfile is not None:
            os.environ[OPTFILE_ENV] = str(optfile)
        else:
            os.environ.pop(OPTFILE_ENV, None)
        try:
            asyncio.run(replicated(nodes, cookie, cluster, args.overwrite))
        except ContainsArrayError:
            sys.exit(
                f"shared_array already exists on {nodes[0]}: pass --overwrite to replace it "
                "(or remove it: pyrlang-zarr rm mnesia://NODE/zarr_storage/shared_array)"
            )


if __name__ == "__main__":
    main()
