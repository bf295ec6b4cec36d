"""Erlang logic sent as data: expressions parsed by the peer once, then run by ``erl_eval``.

Some operations must decide on the server (insert if absent, compare and set, force the log
to disc after a commit). Nothing is installed on the cluster: the expression text is parsed
on the peer with ``erl_scan``/``erl_parse`` the first time, its syntax tree is cached here,
and each call sends that tree with the variable bindings to ``erl_eval:expr/5``, which
returns only the value (the bindings, chunk bytes included, are not shipped back).
"""

from __future__ import annotations

from typing import Any

from pyrlang_zarr.erldist import Node
from pyrlang_zarr.errors import ProtocolError
from pyrlang_zarr.term import Atom

_OK = Atom("ok")
_NONE = Atom("none")
_VALUE = Atom("value")


# Syntax trees are plain data, the same on every node: one cache for the whole process.
_TREES: dict[str, Any] = {}


class Expressions:
    """Erlang expressions evaluated on peers; each text is parsed once per process."""

    def __init__(self, node: Node) -> None:
        self._node = node

    async def tree(self, peer: str, text: str) -> Any:
        tree = _TREES.get(text)
        if tree is None:
            scanned = await self._node.rpc(peer, "erl_scan", "string", [list(text.encode())])
            if scanned[0] != _OK:
                raise ProtocolError(f"erl_scan refused our expression: {scanned!r}")
            parsed = await self._node.rpc(peer, "erl_parse", "parse_exprs", [scanned[1]])
            if parsed[0] != _OK or len(parsed[1]) != 1:
                raise ProtocolError(f"erl_parse refused our expression: {parsed!r}")
            tree = _TREES[text] = parsed[1][0]
        return tree

    async def eval(
        self, peer: str, text: str, bindings: dict[str, Any], *, timeout: float | None
    ) -> Any:
        """The value of ``text`` on ``peer`` with Erlang variables bound from ``bindings``."""
        tree = await self.tree(peer, text)
        binds = sorted((Atom(k), v) for k, v in bindings.items())
        return await self._node.rpc(
            peer, "erl_eval", "expr", [tree, binds, _NONE, _NONE, _VALUE], timeout=timeout
        )
