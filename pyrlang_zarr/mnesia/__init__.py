"""Mnesia driven from outside over rpc: setup, transactions, listing, typed errors."""

from pyrlang_zarr.mnesia.client import Delete, MnesiaClient, Write
from pyrlang_zarr.mnesia.setup import (
    TableFacts,
    TableInfo,
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
    "describe_table",
    "ensure_mnesia",
    "ensure_table",
]
