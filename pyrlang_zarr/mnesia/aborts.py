"""Mnesia's aborts and exits mapped onto the library's exceptions (defined in
:mod:`pyrlang_zarr.errors`).

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
from pyrlang_zarr.term import atoms
from pyrlang_zarr.term.format import format_term


def abort_error(reason: Any, table: str, what: str) -> PyrlangZarrError:
    """The exception for ``{aborted, Reason}`` of a transaction on ``table``."""
    match reason:
        case tuple((atoms.NO_EXISTS, *_)):
            return TableNotFound(f"table_not_found: Mnesia table {table!r} does not exist ({what})")
        case tuple((atoms.NO_MAJORITY, *_)):
            return NoMajority(
                f"transaction_error: {what} refused: {table!r} is a majority table and this "
                "node sees fewer than half of its replicas (minority side of a partition); "
                "nothing was written",
                reason,
            )
        case tuple((atoms.NODE_NOT_RUNNING, *where)):
            return MnesiaNotRunning(
                f"Mnesia is not running on {format_term(tuple(where))} ({what}); set the "
                "cluster up first (pyrlang_zarr.mnesia.ensure_table)"
            )
    return TransactionError(f"transaction_error: {what} aborted: {format_term(reason)}", reason)


def from_rpc_error(error: RpcError, table: str, what: str) -> PyrlangZarrError:
    """Dirty operations and ``mnesia:activity`` exit instead of returning ``{aborted, _}``."""
    match error.reason:
        case tuple((atoms.EXIT, tuple((atoms.ABORTED, reason)))):
            return abort_error(reason, table, what)
    return error
