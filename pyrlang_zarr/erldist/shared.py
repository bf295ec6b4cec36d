"""One hidden node per process and cookie, shared by every store and array that needs one.

A store is configuration (it pickles without a connection); the node it talks through is
made on first use, kept for the life of the process, and made again in a forked child.
"""

from __future__ import annotations

import threading

from pyrlang_zarr.erldist.cookie import resolve_cookie
from pyrlang_zarr.erldist.node import Node

_nodes: dict[str, Node] = {}
_lock = threading.Lock()


def shared_node(cookie: str | None = None) -> Node:
    """The process-wide node for ``cookie`` (resolved as :class:`Node` resolves it)."""
    secret = resolve_cookie(cookie)
    with _lock:
        node = _nodes.get(secret)
        if node is None:
            node = _nodes[secret] = Node(cookie=secret)
        return node
