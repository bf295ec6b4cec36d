"""Real Erlang clusters for tests, examples and benchmarks (as ``zarr.testing`` is for zarr).

Not part of the library's layers: nothing in ``pyrlang_zarr`` outside this package imports it
except the command line's demo. ``LocalCluster`` starts nodes on loopback; ``NetnsCluster``
gives each node a host of its own (a network namespace; needs root and ``ip netns``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyrlang_zarr._lazy import lazy_exports

if TYPE_CHECKING:
    from pyrlang_zarr.testing.cluster import ErlCluster, ErlNode, LocalCluster
    from pyrlang_zarr.testing.netns import NetnsCluster

__all__ = ["ErlCluster", "ErlNode", "LocalCluster", "NetnsCluster"]

_HOMES = {
    "ErlCluster": "pyrlang_zarr.testing.cluster",
    "ErlNode": "pyrlang_zarr.testing.cluster",
    "LocalCluster": "pyrlang_zarr.testing.cluster",
    "NetnsCluster": "pyrlang_zarr.testing.netns",
}


__getattr__, __dir__ = lazy_exports(globals(), _HOMES)
