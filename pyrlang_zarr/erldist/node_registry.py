"""The per-process registry of shared nodes: one hidden node per cookie, for every store.

A store is configuration (it pickles without a connection); the node it talks through is
made on first use, kept for the life of the process, and made again in a forked child (the
node resets itself there). :func:`close_shared_nodes` closes them, say before the loop they
were used from ends; the next :func:`shared_node` makes a fresh one.
"""

from __future__ import annotations

import asyncio
import threading

from pyrlang_zarr.erldist.cookie import resolve_cookie
from pyrlang_zarr.erldist.node import Node

_nodes: dict[str, Node] = {}
_lock = threading.Lock()


def shared_node(cookie: str | None = None) -> Node:
    """The process-wide node for ``cookie`` (resolved as :class:`Node` resolves it); a new
    one if the last was closed."""
    secret = resolve_cookie(cookie)
    with _lock:
        node = _nodes.get(secret)
        if node is None or node.closed:
            node = _nodes[secret] = Node(cookie=secret)
        return node


async def close_shared_nodes() -> None:
    """Close every shared node (calls in flight fail with ``NodeDown``) and forget them."""
    with _lock:
        nodes = list(_nodes.values())
        _nodes.clear()
    await asyncio.gather(*(node.close() for node in nodes))
