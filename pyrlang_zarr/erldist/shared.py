"""The old name of :mod:`pyrlang_zarr.erldist.node_registry`, kept for existing imports."""

from __future__ import annotations

from pyrlang_zarr.erldist.node_registry import close_shared_nodes, shared_node

__all__ = ["close_shared_nodes", "shared_node"]
