"""The Erlang distribution protocol: EPMD, handshake, framing, connections and the node."""

from pyrlang_zarr.erldist.node import Node, Process
from pyrlang_zarr.erldist.node_registry import close_shared_nodes, shared_node

__all__ = ["Node", "Process", "close_shared_nodes", "shared_node"]
