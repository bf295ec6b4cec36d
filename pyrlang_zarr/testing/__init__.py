"""Real Erlang clusters for tests, examples and benchmarks (as ``zarr.testing`` is for zarr).

Not part of the library's layers: nothing in ``pyrlang_zarr`` outside this package imports it
except the command line's demo. ``LocalCluster`` starts nodes on loopback; ``NetnsCluster``
gives each node a host of its own (a network namespace; needs root and ``ip netns``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(home), name)
