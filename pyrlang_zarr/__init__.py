"""Zarr arrays stored in Mnesia, from a Python hidden node on an Erlang/OTP cluster.

The names below load on first use (PEP 562): ``import pyrlang_zarr`` costs only the exception
classes, and ``pyrlang_zarr.term`` or ``pyrlang_zarr.erldist.handshake`` can be imported
without zarr, numpy or the asyncio node. ``from pyrlang_zarr import create`` and ``pz.create``
work as for any attribute; the first use of an array name imports zarr and numpy.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pyrlang_zarr import errors
from pyrlang_zarr._lazy import lazy_exports
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

if TYPE_CHECKING:
    from pyrlang_zarr.array import MnesiaArray, create, open
    from pyrlang_zarr.erldist.node import Node, Process
    from pyrlang_zarr.store import MnesiaStore
    from pyrlang_zarr.term import Atom, ExportFun, ImproperList, Pid, Port, Reference
    from pyrlang_zarr.transactions import Transaction, get_slices, transaction
    from pyrlang_zarr.watch import ChangeEvent, Watch

# A library's logging is the application's to configure (failover warnings and the like).
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "Atom",
    "AuthenticationError",
    "ChangeEvent",
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
    "Transaction",
    "TransactionError",
    "Watch",
    "create",
    "errors",
    "get_slices",
    "open",
    "transaction",
]

# Where each lazily loaded name lives. The array and store modules pull in zarr and numpy,
# the node module asyncio, sockets and threads; the term types need neither.
_LAZY = {
    "MnesiaArray": "pyrlang_zarr.array",
    "create": "pyrlang_zarr.array",
    "open": "pyrlang_zarr.array",
    "MnesiaStore": "pyrlang_zarr.store",
    "Node": "pyrlang_zarr.erldist.node",
    "Process": "pyrlang_zarr.erldist.node",
    "Atom": "pyrlang_zarr.term",
    "ExportFun": "pyrlang_zarr.term",
    "ImproperList": "pyrlang_zarr.term",
    "Pid": "pyrlang_zarr.term",
    "Port": "pyrlang_zarr.term",
    "Reference": "pyrlang_zarr.term",
    "Transaction": "pyrlang_zarr.transactions",
    "transaction": "pyrlang_zarr.transactions",
    "get_slices": "pyrlang_zarr.transactions",
    "Watch": "pyrlang_zarr.watch",
    "ChangeEvent": "pyrlang_zarr.watch",
}


__getattr__, __dir__ = lazy_exports(globals(), _LAZY)
