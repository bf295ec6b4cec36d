"""Mnesia's answers mapped onto the library's exceptions.

The seed's error names stay recognisable: :class:`TableNotFound` is ``table_not_found``,
:class:`NotFound` is ``not_found``, :class:`TransactionError` is ``transaction_error``.
"""

from __future__ import annotations

from typing import Any

from pyrlang_zarr.errors import (
    MnesiaNotRunning,
    NoMajority,
    PyrlangZarrError,
    RpcError,
    TableNotFound,
    TransactionError,
)
from pyrlang_zarr.term import Atom
from pyrlang_zarr.term.format import format_term

_NO_EXISTS = Atom("no_exists")
_NODE_NOT_RUNNING = Atom("node_not_running")
_NO_MAJORITY = Atom("no_majority")
_EXIT = Atom("EXIT")
_ABORTED = Atom("aborted")


def abort_error(reason: Any, table: str, what: str) -> PyrlangZarrError:
    """The exception for ``{aborted, Reason}`` of a transaction on ``table``."""
    if type(reason) is tuple and reason:
        if reason[0] == _NO_EXISTS:
            return TableNotFound(f"table_not_found: Mnesia table {table!r} does not exist ({what})")
        if reason[0] == _NO_MAJORITY:
            return NoMajority(
                f"transaction_error: {what} refused: {table!r} is a majority table and this "
                "node sees fewer than half of its replicas (minority side of a partition); "
                "nothing was written",
                reason,
            )
        if reason[0] == _NODE_NOT_RUNNING:
            return MnesiaNotRunning(
                f"Mnesia is not running on {format_term(reason[1:])} ({what}); set the "
                "cluster up first (pyrlang_zarr.mnesia.ensure_table)"
            )
    return TransactionError(f"transaction_error: {what} aborted: {format_term(reason)}", reason)


def from_rpc_error(error: RpcError, table: str, what: str) -> PyrlangZarrError:
    """Dirty operations and ``mnesia:activity`` exit instead of returning ``{aborted, _}``."""
    reason = error.reason
    if type(reason) is tuple and len(reason) == 2 and reason[0] == _EXIT:
        exit_reason = reason[1]
        if type(exit_reason) is tuple and len(exit_reason) == 2 and exit_reason[0] == _ABORTED:
            return abort_error(exit_reason[1], table, what)
    return error
