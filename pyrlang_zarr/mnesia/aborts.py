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
from pyrlang_zarr.term import Atom, atoms
from pyrlang_zarr.term.format import format_term

_ERROR = Atom("error")
_NOWHERE = Atom("nowhere")


def abort_error(reason: Any, table: str, what: str) -> PyrlangZarrError:
    """The exception for ``{aborted, Reason}`` of a transaction on ``table``."""
    fragment = unreadable_fragment(reason, table)
    if fragment is not None:
        return TransactionError(
            f"transaction_error: {what} aborted: {fragment} of {table!r} has no copy that can "
            "be reached from this node (the nodes holding it are down or not loaded, or it is "
            f"being added): {format_term(reason)}",
            reason,
        )
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


def unreadable_fragment(reason: Any, table: str) -> str | None:
    """Which fragment of the fragmented ``table`` the abort ``reason`` says has no copy to
    reach (``{no_exists, Fragment}`` or ``[Fragment, Key]``, or ``mnesia_frag``'s select
    finding one with no copy to read from: ``{error, {node_not_running, nowhere}}``):
    while fragments are added, a new one for a moment; else, its nodes are down."""
    match reason:
        case (atoms.NO_EXISTS, [Atom() as name, *_]) | (atoms.NO_EXISTS, Atom() as name):
            return f"fragment {name}" if str(name).startswith(f"{table}_frag") else None
        case (_ERROR, (atoms.NODE_NOT_RUNNING, _NOWHERE)):
            return "a fragment"
    return None


def from_rpc_error(error: RpcError, table: str, what: str) -> PyrlangZarrError:
    """Dirty operations and ``mnesia:activity`` exit instead of returning ``{aborted, _}``."""
    match error.reason:
        case tuple((atoms.EXIT, tuple((atoms.ABORTED, reason)))):
            return abort_error(reason, table, what)
    return error
