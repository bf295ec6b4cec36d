"""Plain zarr (its synchronous API) on a MnesiaStore: groups, attributes, any codec.

python examples/plain_zarr.py [--tls]               # starts a local Erlang node
"""

from __future__ import annotations

import argparse
import asyncio
import os

import numpy as np
import zarr
from zarr.codecs import BloscCodec

import pyrlang_zarr as pz
from pyrlang_zarr.erldist.tls import OPTFILE_ENV
from pyrlang_zarr.testing.cluster import LocalCluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tls", action="store_true", help="TLS distribution (certificates made)")
    args = parser.parse_args()
    with LocalCluster(n=1, tls=args.tls) as cluster:
        node, cookie = cluster.nodes[0], cluster.cookie
        # the stores' node finds the TLS settings here (as erl finds them in ERL_FLAGS)
        if cluster.client_optfile is not None:
            os.environ[OPTFILE_ENV] = str(cluster.client_optfile)
        else:
            os.environ.pop(OPTFILE_ENV, None)
        # nodes=[...]: the store sets Mnesia and the table up on them when it opens
        store = pz.MnesiaStore(array_id="survey", node=node, cookie=cookie, nodes=[node])
        root = zarr.open_group(store, mode="w")
        root.attrs["instrument"] = "spectrometer-7"
        temps = root.create_array(
            "temperature",
            shape=(365, 24),
            chunks=(30, 24),
            dtype="float32",
            compressors=[BloscCodec(cname="zstd", clevel=5)],
        )
        temps[:] = np.random.default_rng(0).normal(15, 8, (365, 24)).astype("float32")
        print(zarr.open_group(store, mode="r").tree())

        reader = zarr.open_group(
            pz.MnesiaStore(array_id="survey", node=node, cookie=cookie), mode="r"
        )
        print("attributes:", dict(reader.attrs))
        temperature = reader["temperature"]
        assert isinstance(temperature, zarr.Array)
        january = np.asarray(temperature[:31])
        print("January mean temperature:", float(january.mean()))

        async def keys() -> list[str]:
            return sorted([k async for k in store.list()])

        print("zarr keys stored as Mnesia records:", asyncio.run(keys()))


if __name__ == "__main__":
    main()
