"""Test helper: run Erlang logic on a peer with no code shipped (erl_eval on parsed text)."""

from __future__ import annotations

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
