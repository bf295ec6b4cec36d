"""The Erlang distribution protocol: EPMD, handshake, framing, connections and the node."""

from pyrlang_zarr.dist.node import Node, Process

__all__ = ["Node", "Process"]
