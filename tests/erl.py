"""Test helpers that look at a peer from the Erlang side, with no code shipped: run Erlang
logic there (erl_eval on parsed text), see lock conflicts, count calls of functions."""

from __future__ import annotations

import asyncio
from typing import Any

from pyrlang_zarr import Atom, Node, Pid


async def parse(node: Node, peer: str, expr: str) -> Any:
    ok, tokens, _end = await node.rpc(peer, "erl_scan", "string", [list(expr.encode())])
    assert ok == Atom("ok"), tokens
    ok, exprs = await node.rpc(peer, "erl_parse", "parse_exprs", [tokens])
    assert ok == Atom("ok"), exprs
    return exprs


async def spawn_eval(node: Node, peer: str, expr: str, **bindings: Any) -> Pid:
    """Spawn a process on ``peer`` evaluating ``expr`` with ``bindings`` (Erlang variables)."""
    exprs = await parse(node, peer, expr)
    binds = sorted((Atom(k), v) for k, v in bindings.items())
    pid = await node.rpc(peer, "erlang", "spawn", [Atom("erl_eval"), Atom("exprs"), [exprs, binds]])
    assert isinstance(pid, Pid)
    return pid


async def restarts(node: Node, peer: str) -> int:
    """Transactions Mnesia on ``peer`` has restarted so far (lock conflicts among them)."""
    count = await node.rpc(peer, "mnesia", "system_info", [Atom("transaction_restarts")])
    assert isinstance(count, int)
    return count


async def wait_for_lock_conflict(
    node: Node, peer: str, restarts_before: int, task: asyncio.Future[Any]
) -> None:
    """Wait until a transaction coordinated by ``peer`` has met a lock held by another,
    while ``task`` (the call that runs it) is still waiting for its answer.

    Mnesia makes a transaction younger than the lock holder restart (counted in
    ``transaction_restarts``) and an older one queue (``lock_queue``); either shows it.
    """
    for _ in range(1000):
        assert not task.done(), "the call did not wait for the lock"
        queued = await node.rpc(peer, "mnesia", "system_info", [Atom("lock_queue")])
        if queued or await restarts(node, peer) > restarts_before:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no lock conflict on {peer}")


MFA = tuple[str, str, int]


class CallCounts:
    """How often functions are called on ``peer``, counted by the node itself.

    ``erlang:trace_pattern(MFA, true, [call_count])`` counts calls from every process, with
    no tracer and nothing shipped; used as ``async with``, the counting stops on exit.
    """

    def __init__(self, node: Node, peer: str, mfas: list[MFA]) -> None:
        self.node, self.peer, self.mfas = node, peer, mfas

    def _mfa(self, mfa: MFA) -> tuple[Atom, Atom, int]:
        return (Atom(mfa[0]), Atom(mfa[1]), mfa[2])

    async def __aenter__(self) -> CallCounts:
        for mfa in self.mfas:
            args = [self._mfa(mfa), True, [Atom("call_count")]]
            matched = await self.node.rpc(self.peer, "erlang", "trace_pattern", args)
            assert matched == 1, f"{mfa} is not loaded on {self.peer}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for mfa in self.mfas:
            args = [self._mfa(mfa), False, [Atom("call_count")]]
            await self.node.rpc(self.peer, "erlang", "trace_pattern", args)

    async def counts(self) -> dict[MFA, int]:
        out = {}
        for mfa in self.mfas:
            info = [self._mfa(mfa), Atom("call_count")]
            tag, count = await self.node.rpc(self.peer, "erlang", "trace_info", info)
            assert tag == Atom("call_count") and isinstance(count, int), count
            out[mfa] = count
        return out
