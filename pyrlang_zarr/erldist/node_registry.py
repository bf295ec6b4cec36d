"""The per-process registry of shared nodes: one hidden node per cookie and TLS setting, for
every store.

A store is configuration (it pickles without a connection); the node it talks through is
made on first use, kept for the life of the process, and made again in a forked child (the
node resets itself there). :func:`close_shared_nodes` closes them, say before the loop they
were used from ends; the next :func:`shared_node` makes a fresh one.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import threading

from pyrlang_zarr.erldist.cookie import resolve_cookie
from pyrlang_zarr.erldist.node import Node
from pyrlang_zarr.erldist.tls import TlsConfig, resolve_tls

_nodes: dict[tuple[str, TlsConfig | ssl.SSLContext | None], Node] = {}
_lock = threading.Lock()


def shared_node(
    cookie: str | None = None,
    tls: TlsConfig | ssl.SSLContext | str | os.PathLike[str] | bool | None = None,
) -> Node:
    """The process-wide node for ``cookie`` and ``tls`` (each resolved as :class:`Node`
    resolves it: ``None`` reads the environment); a new one if the last was closed."""
    secret = resolve_cookie(cookie)
    how = resolve_tls(tls)
    with _lock:
        node = _nodes.get((secret, how))
        if node is None or node.closed:
            node = _nodes[(secret, how)] = Node(cookie=secret, tls=False if how is None else how)
        return node


async def close_shared_nodes() -> None:
    """Close every shared node (calls in flight fail with ``NodeDown``) and forget them."""
    with _lock:
        nodes = list(_nodes.values())
        _nodes.clear()
    await asyncio.gather(*(node.close() for node in nodes))
