"""The Erlang distribution protocol: EPMD, handshake, framing, connections and the node."""

from pyrlang_zarr.erldist.node import Node, Process

__all__ = ["Node", "Process"]
