"""Zarr arrays stored in Mnesia, from a Python hidden node on an Erlang/OTP cluster."""

import logging

from pyrlang_zarr import errors
from pyrlang_zarr.array import MnesiaArray, create, open
from pyrlang_zarr.erldist import Node, Process
from pyrlang_zarr.errors import (
    AuthenticationError,
    NodeDown,
    NodeUnreachable,
    NotFound,
    PyrlangZarrError,
    RpcError,
    RpcTimeout,
    TableNotFound,
    TransactionError,
)
from pyrlang_zarr.store import MnesiaStore
from pyrlang_zarr.term import Atom, ExportFun, ImproperList, Pid, Port, Reference

# A library's logging is the application's to configure (failover warnings and the like).
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "Atom",
    "AuthenticationError",
    "ExportFun",
    "ImproperList",
    "MnesiaArray",
    "MnesiaStore",
    "Node",
    "NodeDown",
    "NodeUnreachable",
    "NotFound",
    "Pid",
    "Port",
    "Process",
    "PyrlangZarrError",
    "Reference",
    "RpcError",
    "RpcTimeout",
    "TableNotFound",
    "TransactionError",
    "create",
    "errors",
    "open",
]
