"""Mnesia driven from outside over rpc: setup, transactions, listing, typed errors."""

from pyrlang_zarr.mnesia.client import Delete, MnesiaClient, Write
from pyrlang_zarr.mnesia.setup import (
    TableFacts,
    TableInfo,
    add_fragments,
    add_pool_nodes,
    describe_table,
    ensure_mnesia,
    ensure_table,
)

__all__ = [
    "Delete",
    "MnesiaClient",
    "TableFacts",
    "TableInfo",
    "Write",
    "add_fragments",
    "add_pool_nodes",
    "describe_table",
    "ensure_mnesia",
    "ensure_table",
]
