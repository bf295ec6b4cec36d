"""Partitions: noticing them, and bringing the minority back to the majority's data.

Mnesia never merges two sides that both ran while apart. When they meet again each node
reports ``{inconsistent_database, running_partitioned_network, Other}`` and they keep
running with different data. With ``majority`` tables only the majority side can have
committed writes, so the recovery is safe and mechanical:

1. on each minority node, make the majority nodes its *master nodes*
   (``mnesia:set_master_nodes/1``),
2. restart Mnesia there: tables load from the masters, so the minority's copies are
   replaced by the majority's,
3. clear the master nodes again so later restarts load the usual way.

:class:`MnesiaEvents` subscribes a process of ours to Mnesia's system events on each node
(``mnesia_subscr:subscribe/2``) so the condition is seen the moment Mnesia sees it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from pyrlang_zarr.erldist import Node, Process
from pyrlang_zarr.errors import NodeDown, TransactionError
from pyrlang_zarr.mnesia.setup import start_mnesia, wait_loaded
from pyrlang_zarr.term import Atom, atoms
from pyrlang_zarr.term.format import format_term

log = logging.getLogger(__name__)


class MnesiaEvents:
    """Mnesia system events of ``nodes``, as ``(node_event_tuple)`` terms.

    ``inconsistent`` collects every ``(Context, Node)`` of an ``inconsistent_database``
    event seen so far; each is also logged as a warning.
    """

    def __init__(self, node: Node, nodes: Sequence[str]) -> None:
        self.node = node
        self.nodes = list(nodes)
        self.inconsistent: list[tuple[Any, str]] = []
        self._proc: Process | None = None

    async def __aenter__(self) -> MnesiaEvents:
        self._proc = self.node.process()
        for peer in self.nodes:
            await self.subscribe(peer)
        return self

    async def subscribe(self, peer: str) -> None:
        """Receive ``peer``'s events too (again, after a lost connection dropped us there:
        Mnesia forgets a subscriber it cannot reach)."""
        assert self._proc is not None, "use MnesiaEvents as an async context manager"
        args = [self._proc.pid, Atom("system")]
        try:
            result = await self.node.rpc(peer, "mnesia_subscr", "subscribe", args)
        except NodeDown:
            # a connection from before a partition can look alive until first used; the
            # peer resets it then. Subscribing is idempotent: once more, on a new connection.
            result = await self.node.rpc(peer, "mnesia_subscr", "subscribe", args)
        if not (type(result) is tuple and result[0] == atoms.OK):
            raise TransactionError(
                f"could not subscribe to Mnesia events on {peer}: {format_term(result)}", result
            )
        if peer not in self.nodes:
            self.nodes.append(peer)

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None:
            await self._proc.close()

    async def next(self, timeout: float | None = None) -> Any:
        """The next system event (``TimeoutError`` if none comes within ``timeout``)."""
        assert self._proc is not None, "use MnesiaEvents as an async context manager"
        while True:
            message = await self._proc.receive(timeout)
            match message:
                case tuple(
                    (
                        atoms.MNESIA_SYSTEM_EVENT,
                        tuple((atoms.INCONSISTENT_DATABASE, context, peer)) as event,
                    )
                ):
                    self.inconsistent.append((context, str(peer)))
                    log.warning(
                        "Mnesia reports an inconsistent database (%s) with %s: the cluster "
                        "was partitioned and both sides ran; recover with recover_partition()",
                        context,
                        peer,
                    )
                    return event
                case tuple((atoms.MNESIA_SYSTEM_EVENT, event)):
                    return event

    async def wait_inconsistent(self, timeout: float) -> tuple[Any, str]:
        """Wait for the first ``inconsistent_database`` event."""
        async with asyncio.timeout(timeout):
            while not self.inconsistent:
                await self.next()
        return self.inconsistent[0]


async def recover_partition(
    node: Node,
    majority: Sequence[str],
    minority: Sequence[str],
    tables: Sequence[str],
    *,
    timeout: float = 60.0,
) -> None:
    """Make every node of ``minority`` drop its copies and reload ``tables`` from
    ``majority``; on return all replicas hold the majority's data."""
    if not majority or not minority or set(majority) & set(minority):
        raise ValueError("majority and minority must be non-empty, disjoint lists of nodes")
    masters = [Atom(n) for n in majority]
    tabs = [Atom(t) for t in tables]
    for peer in minority:
        for m in majority:  # the Erlang nodes may still be apart after the link came back
            await node.rpc(peer, "net_kernel", "connect_node", [Atom(m)], timeout=timeout)
        await _ok(node, peer, "set_master_nodes", [masters], timeout)
        await _ok(node, peer, "stop", [], timeout)
        await start_mnesia(node, peer, timeout)
        await wait_loaded(node, peer, tabs, timeout)
        await _ok(node, peer, "set_master_nodes", [[]], timeout)
        log.info("%s reloaded %s from %s", peer, list(tables), list(majority))


async def _ok(node: Node, peer: str, function: str, args: list[Any], timeout: float) -> None:
    result = await node.rpc(peer, "mnesia", function, args, timeout=timeout)
    if result not in (atoms.OK, Atom("stopped")):
        raise TransactionError(
            f"mnesia:{function} on {peer} during recovery: {format_term(result)}", result
        )
