"""Mnesia's abort reasons -> the library's exceptions (pyrlang_zarr.mnesia.aborts), pure: the
terms are built from pyrlang_zarr.term types and sent through the codec, as they arrive."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given

from pyrlang_zarr.errors import (
    MnesiaNotRunning,
    NoMajority,
    RpcError,
    TableNotFound,
    TransactionError,
)
from pyrlang_zarr.mnesia.aborts import abort_error, from_rpc_error
from pyrlang_zarr.term import Atom, ExportFun, Pid, Reference, decode_term, encode
from tests.test_term_properties import terms

TAB = "zarr_storage"
NODE = Atom("pz1@host")


def wire(term: Any) -> Any:
    """``term`` as it comes off the wire: encoded, then decoded."""
    return decode_term(encode(term))


def test_no_exists_is_table_not_found() -> None:
    err = abort_error(wire((Atom("no_exists"), Atom(TAB))), TAB, "write")
    assert type(err) is TableNotFound
    assert err.code == "table_not_found"
    assert "table_not_found" in str(err) and repr(TAB) in str(err) and "write" in str(err)


@pytest.mark.parametrize(
    "reason",
    [
        (Atom("no_exists"), Atom(f"{TAB}_frag3")),
        (Atom("no_exists"), [Atom(f"{TAB}_frag3"), (b"a", Atom("metadata"))]),
        (Atom("error"), (Atom("node_not_running"), Atom("nowhere"))),
    ],
    ids=["no_exists", "no_exists-key", "select-nowhere"],
)
def test_a_fragment_out_of_reach_is_said_so_not_a_missing_table(reason: Any) -> None:
    """A fragment with no copy to reach (its nodes down, or being added) is not a table
    that does not exist: it says which, and that the table is there."""
    err = abort_error(wire(reason), TAB, "read")
    assert type(err) is TransactionError
    assert "has no copy that can be reached" in str(err) and repr(TAB) in str(err)
    if reason[0] == Atom("no_exists"):
        assert f"fragment {TAB}_frag3" in str(err)
    # another table's fragment, or the table itself, still does not exist
    other = abort_error(wire((Atom("no_exists"), Atom("other_frag2"))), TAB, "read")
    assert type(other) is TableNotFound


def test_no_majority_is_no_majority_with_its_reason() -> None:
    reason = wire((Atom("no_majority"), Atom(TAB)))
    err = abort_error(reason, TAB, "set_slice")
    assert type(err) is NoMajority and isinstance(err, TransactionError)
    assert err.reason == reason and err.code == "transaction_error"
    assert "minority" in str(err) and "nothing was written" in str(err)


def test_node_not_running_names_the_node() -> None:
    err = abort_error(wire((Atom("node_not_running"), NODE)), TAB, "read")
    assert type(err) is MnesiaNotRunning
    assert "pz1@host" in str(err) and "read" in str(err)


@pytest.mark.parametrize(
    "reason",
    [
        Atom("some_reason"),
        (Atom("bad_type"), Atom(TAB), Atom("disc_copies"), NODE),
        (Atom("cyclic"), NODE, (Atom(TAB), (b"arr", (0, 1))), Atom("write"), Pid(NODE, 7, 0, 3)),
        (Atom("badarg"), [ExportFun(Atom("mnesia"), Atom("write"), 1), b"x"]),
        (Atom("timeout"), Reference(NODE, 3, (1, 2, 3))),
        (),
        (Atom("no_exists"),),  # shape of the reason is not checked beyond its tag ...
        [Atom("no_exists"), Atom(TAB)],  # ... but a list is not a tuple
        b"no_exists",
        {Atom("no_majority"): Atom(TAB)},
        123,
    ],
)
def test_any_other_reason_is_a_transaction_error_carrying_it(reason: Any) -> None:
    reason = wire(reason)
    err = abort_error(reason, TAB, "write")
    if reason == (Atom("no_exists"),):
        assert type(err) is TableNotFound
        return
    assert type(err) is TransactionError
    assert err.reason == reason
    assert str(err).startswith("transaction_error: write aborted: ")


SPECIAL = {
    "no_exists": TableNotFound,
    "no_majority": NoMajority,
    "node_not_running": MnesiaNotRunning,
}


@given(terms)
def test_every_term_maps_to_one_of_ours(term: Any) -> None:
    reason = wire(term)
    err = abort_error(reason, TAB, "write")
    tag = reason[0] if type(reason) is tuple and reason else None
    expected = SPECIAL[tag] if type(tag) is Atom and tag in SPECIAL else TransactionError
    assert type(err) is expected
    if expected is TransactionError:
        assert isinstance(err, TransactionError) and err.reason is reason


def exit_aborted(reason: Any) -> Any:
    """``{'EXIT', {aborted, Reason}}``: how a dirty operation or an activity reports an abort
    through rpc (``{badrpc, ...}`` becomes :class:`RpcError` with this as its reason)."""
    return wire((Atom("EXIT"), (Atom("aborted"), reason)))


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ((Atom("no_exists"), Atom(TAB)), TableNotFound),
        ((Atom("no_majority"), Atom(TAB)), NoMajority),
        ((Atom("node_not_running"), NODE), MnesiaNotRunning),
        ((Atom("bad_type"), Atom(TAB)), TransactionError),
    ],
)
def test_exit_aborted_through_rpc_is_mapped(reason: Any, expected: type[Exception]) -> None:
    err = from_rpc_error(RpcError("badrpc", exit_aborted(reason)), TAB, "delete")
    assert type(err) is expected


@pytest.mark.parametrize(
    "reason",
    [
        Atom("nodedown"),
        (Atom("EXIT"), Atom("killed")),
        (Atom("EXIT"), (Atom("aborted"), Atom("x"), Atom("extra"))),
        (Atom("EXIT"), (Atom("badarg"), [])),
        (Atom("EXIT"), (Atom("aborted"), Atom("x")), Atom("extra")),
        (Atom("exit"), (Atom("aborted"), (Atom("no_exists"), Atom(TAB)))),
        [Atom("EXIT"), (Atom("aborted"), (Atom("no_exists"), Atom(TAB)))],
        None,
    ],
)
def test_other_rpc_errors_are_left_alone(reason: Any) -> None:
    error = RpcError("badrpc", wire(reason) if reason is not None else None)
    assert from_rpc_error(error, TAB, "read") is error
