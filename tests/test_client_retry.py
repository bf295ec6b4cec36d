"""The failover rule of ``MnesiaClient``, driven directly: a fake node stands in for the
cluster and answers (or fails) each remote call as the test says. No Erlang here: the same
rule against real nodes is in test_failover.py.

The rule (README, *Failover*): a call whose node cannot serve it (down, cut off, hung,
Mnesia stopped, minority side) moves to the next replica and that one becomes the
coordinator; a write whose outcome is unknown is applied again there; an error from a node
that *did* serve the call (an abort, a missing table) is not retried anywhere.
"""

from __future__ import annotations

from typing import Any

import pytest

from pyrlang_zarr import Atom, ExportFun
from pyrlang_zarr.errors import (
    MnesiaNotRunning,
    NodeDown,
    NodeUnreachable,
    NoMajority,
    RpcError,
    RpcTimeout,
    TableNotFound,
    TransactionError,
)
from pyrlang_zarr.mnesia import MnesiaClient, Write

TAB = "zarr_storage"
A, B, C = "a@h", "b@h", "c@h"
ATOMIC_OK = (Atom("atomic"), Atom("ok"))


class FakeNode:
    """Records every rpc as ``(peer, module, function, args)``; ``answers[peer]`` is a list
    of what that peer does with its next calls: a value to return, or an exception to raise.
    Calls beyond the list succeed with ``default``."""

    def __init__(self, answers: dict[str, list[Any]], default: Any = ATOMIC_OK) -> None:
        self.answers = {peer: list(todo) for peer, todo in answers.items()}
        self.default = default
        self.calls: list[tuple[str, str, str, list[Any]]] = []
        self.replicas: list[Atom] = []  # what mnesia:table_info(Tab, all_nodes) says

    async def rpc(self, peer: str, module: str, function: str, args: list[Any], **_: Any) -> Any:
        if (module, function) == ("mnesia", "table_info"):
            return self.replicas
        if (module, function, args) == ("mnesia", "system_info", [Atom("is_running")]):
            return Atom("yes")  # asked after no_exists: a missing table, or Mnesia stopped?
        self.calls.append((peer, module, function, args))
        todo = self.answers.get(peer, [])
        answer = todo.pop(0) if todo else self.default
        if isinstance(answer, BaseException):
            raise answer
        return answer


def client(fake: FakeNode, coordinator: str = A, replicas: tuple[str, ...] = (A, B, C)) -> Any:
    return MnesiaClient(fake, TAB, coordinator, replicas=replicas)  # type: ignore[arg-type]


def unknown_outcome(peer: str) -> NodeDown:
    return NodeDown(
        f"connection to {peer} lost (during mnesia:sync_transaction/2; outcome unknown)"
    )


@pytest.mark.parametrize(
    "failure",
    [
        unknown_outcome(A),  # died with the write in flight
        RpcTimeout("no answer from a@h: outcome unknown"),  # hung with the write in flight
        NodeUnreachable("no EPMD on h"),  # never sent
        MnesiaNotRunning("Mnesia is not running on a@h"),
        NoMajority("a@h is on the minority side"),
    ],
    ids=["node-down", "timeout", "unreachable", "mnesia-stopped", "minority"],
)
async def test_write_the_coordinator_cannot_serve_is_applied_on_the_next_replica(
    failure: Exception,
) -> None:
    fake = FakeNode({A: [failure]})
    c = client(fake)
    await c.write((b"arr", (0,)), b"chunk")
    (first, second) = fake.calls
    assert first[0] == A and second[0] == B
    assert first[1:] == second[1:]  # the very same commit, applied again
    assert second[1:3] == ("mnesia", "sync_transaction")
    assert second[3] == [ExportFun("mnesia", "write", 1), [(Atom(TAB), (b"arr", (0,)), b"chunk")]]
    assert c.coordinator == B


async def test_the_new_coordinator_sticks() -> None:
    fake = FakeNode({A: [unknown_outcome(A)]})
    c = client(fake)
    await c.write((b"arr", (0,)), b"one")
    await c.batch([Write((b"arr", (1,)), b"two")])
    assert [peer for peer, *_ in fake.calls] == [A, B, B]


async def test_each_replica_is_tried_once_in_order() -> None:
    fake = FakeNode({A: [unknown_outcome(A)], B: [unknown_outcome(B)]})
    c = client(fake)
    await c.write((b"arr", (0,)), b"v")
    assert [peer for peer, *_ in fake.calls] == [A, B, C]
    assert len({tuple(map(repr, call[1:])) for call in fake.calls}) == 1
    assert c.coordinator == C


async def test_replicas_mnesia_reports_are_candidates_too() -> None:
    fake = FakeNode({A: [unknown_outcome(A)]})
    fake.replicas = [Atom(A), Atom("d@h")]
    c = client(fake, replicas=())
    await c.write((b"arr", (0,)), b"v")
    assert [peer for peer, *_ in fake.calls] == [A, "d@h"]


async def test_no_replica_left_says_the_outcome_is_unknown() -> None:
    fake = FakeNode({p: [unknown_outcome(p)] for p in (A, B, C)})
    c = client(fake)
    with pytest.raises(NodeDown, match="outcome unknown") as info:
        await c.write((b"arr", (0,)), b"v")
    assert [peer for peer, *_ in fake.calls] == [A, B, C]
    assert all(p in str(info.value) for p in (A, B, C))


async def test_minority_everywhere_is_no_majority() -> None:
    fake = FakeNode({p: [NoMajority(f"{p} is on the minority side")] for p in (A, B, C)})
    with pytest.raises(NoMajority):
        await client(fake).write((b"arr", (0,)), b"v")
    assert len(fake.calls) == 3


@pytest.mark.parametrize(
    "answer,error",
    [
        ((Atom("aborted"), (Atom("bad_type"), Atom(TAB))), TransactionError),
        ((Atom("aborted"), (Atom("no_exists"), Atom(TAB))), TableNotFound),
        (RpcError("mnesia:sync_transaction/2 failed: undef", Atom("undef")), RpcError),
    ],
    ids=["aborted", "no-table", "badrpc"],
)
async def test_an_answer_from_the_node_is_not_retried_elsewhere(
    answer: Any, error: type[Exception]
) -> None:
    fake = FakeNode({A: [answer]})
    c = client(fake)
    with pytest.raises(error):
        await c.write((b"arr", (0,)), b"v")
    assert [peer for peer, *_ in fake.calls] == [A]
    assert c.coordinator == A


async def test_reads_fail_over_too() -> None:
    fake = FakeNode({A: [unknown_outcome(A)]}, default=[[(Atom(TAB), (b"arr", (0,)), b"v")]])
    c = client(fake)
    assert await c.read_many([(b"arr", (0,))]) == [b"v"]
    assert [peer for peer, *_ in fake.calls] == [A, B]
