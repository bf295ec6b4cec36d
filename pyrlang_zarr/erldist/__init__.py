"""The Erlang distribution protocol: EPMD, handshake, framing, connections and the node.

The sans-IO parts (``handshake``, ``framing``, ``flags``, ``control``, ``session``) import no
sockets, no threads and no asyncio; ``Node``, ``Process`` and the shared-node registry load
the node (asyncio, sockets, the I/O thread) on first use (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyrlang_zarr._lazy import lazy_exports

if TYPE_CHECKING:
    from pyrlang_zarr.erldist.node import Node, Process
    from pyrlang_zarr.erldist.node_registry import close_shared_nodes, shared_node
    from pyrlang_zarr.erldist.tls import TlsConfig, TlsError

__all__ = ["Node", "Process", "TlsConfig", "TlsError", "close_shared_nodes", "shared_node"]

_LAZY = {
    "Node": "pyrlang_zarr.erldist.node",
    "Process": "pyrlang_zarr.erldist.node",
    "close_shared_nodes": "pyrlang_zarr.erldist.node_registry",
    "shared_node": "pyrlang_zarr.erldist.node_registry",
    "TlsConfig": "pyrlang_zarr.erldist.tls",
    "TlsError": "pyrlang_zarr.erldist.tls",
}


__getattr__, __dir__ = lazy_exports(globals(), _LAZY)
