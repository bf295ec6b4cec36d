"""Our processes, and the signals between them and Erlang's: links, exits and monitors.

A :class:`Process` is a pid with a mailbox. :class:`Processes` is the node's table of them
(by pid and by registered name); it delivers messages and acts on the typed signal events
of :mod:`~pyrlang_zarr.erldist.control`, as a process trapping exits would: exit signals
and monitor notices become messages in the mailbox, never a crash.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol

from pyrlang_zarr.erldist import control as C
from pyrlang_zarr.erldist.identity import Identity
from pyrlang_zarr.erldist.mailbox import Mailbox
from pyrlang_zarr.term import Atom, Pid, Reference, atoms

if TYPE_CHECKING:
    from pyrlang_zarr.erldist.node import Node

log = logging.getLogger(__name__)

_NORMAL = Atom("normal")
_NOPROC = Atom("noproc")
_NOCONNECTION = Atom("noconnection")
_PROCESS = Atom("process")


class SignalSender(Protocol):
    """Sends a control message without a message part to ``node`` (the node's send path);
    with ``quiet``, an unreachable node is not an error (exit signals on the way out)."""

    def __call__(
        self, node: str, control: tuple[Any, ...], *, quiet: bool = False
    ) -> Awaitable[None]: ...


class SignalWriter(Protocol):
    """The connection a signal arrived on: replies to it go straight back."""

    def send(
        self, control: tuple[Any, ...], message: Any = None, *, has_message: bool = True
    ) -> None: ...


class Process:
    """A process of ours: a pid that Erlang code can send to, link to and monitor.

    Messages arrive in :meth:`receive`; exit signals from linked processes arrive as
    ``(Atom('EXIT'), From, Reason)`` and monitor notices as
    ``(Atom('DOWN'), Ref, Atom('process'), From, Reason)``, as for a process trapping exits.
    """

    def __init__(self, node: Node, pid: Pid, table: Processes) -> None:
        self.node = node
        self.pid = pid
        self.mailbox = Mailbox()
        self.links: set[Pid] = set()
        self.monitored_by: dict[Reference, Pid] = {}  # monitors others hold on us
        self.monitoring: dict[Reference, Pid] = {}  # monitors we hold on others
        self.unlinking: dict[Pid, int] = {}  # unlinks sent, waiting for their UNLINK_ID_ACK
        self.closed = False
        self._table = table

    def __repr__(self) -> str:
        return f"<Process {self.pid}>"

    async def receive(self, timeout: float | None = None) -> Any:
        """The next message; ``TimeoutError`` when none arrives within ``timeout`` seconds."""
        return await self.mailbox.get(timeout)

    async def send(self, dest: Pid | tuple[str, str], message: Any) -> None:
        """Send to a pid or to a registered name ``(name, node)``."""
        await self.node.send(dest, message, sender=self.pid)

    async def link(self, pid: Pid) -> None:
        self.links.add(pid)
        self.unlinking.pop(pid, None)
        await self._table.signal(pid.node, (C.LINK, self.pid, pid))

    async def unlink(self, pid: Pid) -> None:
        """Remove the link to ``pid`` with ``UNLINK_ID`` (the form OTP 26+ expects; OTP
        23-25 know it too): until the peer's ``UNLINK_ID_ACK`` comes, an exit signal of the
        old link from ``pid`` is dropped, as Erlang drops it."""
        self.links.discard(pid)
        unlink_id = self.unlinking[pid] = self._table.next_unlink_id()
        await self._table.signal(pid.node, (C.UNLINK_ID, unlink_id, self.pid, pid))

    async def monitor(self, pid: Pid) -> Reference:
        ref = self.node.make_ref()
        self.monitoring[ref] = pid
        await self._table.signal(pid.node, (C.MONITOR_P, self.pid, pid, ref))
        return ref

    async def demonitor(self, ref: Reference) -> None:
        pid = self.monitoring.pop(ref, None)
        if pid is not None:
            await self._table.signal(pid.node, (C.DEMONITOR_P, self.pid, pid, ref))

    async def close(self, reason: Any = _NORMAL) -> None:
        """Exit: linked processes get an exit signal, monitors a DOWN, with ``reason``."""
        if self.closed:
            return
        self.closed = True
        self._table.forget(self)
        signal = self._table.signal
        for pid in self.links:
            await signal(pid.node, (C.EXIT, self.pid, pid, reason), quiet=True)
        for ref, pid in self.monitored_by.items():
            await signal(pid.node, (C.MONITOR_P_EXIT, self.pid, pid, ref, reason), quiet=True)
        self.links.clear()
        self.monitored_by.clear()

    async def __aenter__(self) -> Process:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Processes:
    """The node's processes by pid and by registered name, and what signals do to them."""

    def __init__(
        self,
        node: Node,
        identity: Identity,
        signal: SignalSender,
        *,
        reserved: frozenset[str] = frozenset(),
    ) -> None:
        self._node = node
        self._identity = identity
        self.signal = signal
        self._reserved = reserved  # names the node answers to itself (services.py)
        self._by_pid: dict[Pid, Process] = {}
        self._by_name: dict[str, Process] = {}
        self._unlink_ids = itertools.count(1)

    def next_unlink_id(self) -> int:
        return next(self._unlink_ids)

    def spawn(self, name: str | None = None) -> Process:
        if name is not None and name in self._reserved:
            raise ValueError(
                f"{name!r} is a name this node answers to itself "
                f"({', '.join(sorted(self._reserved))}); choose another"
            )
        if name is not None and name in self._by_name:
            raise ValueError(f"a process is already registered as {name!r}")
        proc = Process(self._node, self._identity.make_pid(), self)
        self._by_pid[proc.pid] = proc
        if name is not None:
            self._by_name[name] = proc
        return proc

    def forget(self, proc: Process) -> None:
        """``proc`` exited: its pid and any name it was registered under are free."""
        self._by_pid.pop(proc.pid, None)
        for name in [n for n, p in self._by_name.items() if p is proc]:
            del self._by_name[name]

    def close_all(self) -> None:
        """The node is closing: every process is closed, without signals."""
        for proc in self._by_pid.values():
            proc.closed = True

    # -- messages -------------------------------------------------------------------------
    def deliver(self, to: Pid, message: Any) -> None:
        proc = self._by_pid.get(to)
        if proc is not None:
            proc.mailbox.put(message)

    def deliver_named(self, name: str, message: Any) -> bool:
        """Deliver to our process registered as ``name``; False if there is none."""
        proc = self._by_name.get(name)
        if proc is None:
            return False
        proc.mailbox.put(message)
        return True

    def _target(self, target: Pid | Atom) -> Process | None:
        if type(target) is Pid:
            return self._by_pid.get(target)
        return self._by_name.get(str(target))

    # -- signals from peers ---------------------------------------------------------------
    def on_signal(self, conn: SignalWriter, event: C.ControlMessage) -> None:
        """Act on a link, exit or monitor signal that arrived on ``conn``."""
        match event:
            case C.Link(sender, to):
                proc = self._by_pid.get(to)
                if proc is None:
                    conn.send((C.EXIT, to, sender, _NOPROC), has_message=False)
                else:
                    proc.links.add(sender)
            case C.Unlink(sender, to) | C.UnlinkId(_, sender, to):
                proc = self._by_pid.get(to)
                if proc is not None:
                    proc.links.discard(sender)
                if isinstance(event, C.UnlinkId):
                    conn.send((C.UNLINK_ID_ACK, event.id, to, sender), has_message=False)
            case C.UnlinkIdAck(unlink_id, sender, to):
                proc = self._by_pid.get(to)
                if proc is not None and proc.unlinking.get(sender) == unlink_id:
                    del proc.unlinking[sender]
            case C.Exit(sender, to, reason):
                proc = self._by_pid.get(to)
                if proc is not None and sender not in proc.unlinking:  # else: unlinked already
                    proc.links.discard(sender)
                    proc.mailbox.put((atoms.EXIT, sender, reason))
            case C.Exit2(sender, to, reason):  # exit/2: no link involved
                proc = self._by_pid.get(to)
                if proc is not None:
                    proc.links.discard(sender)
                    proc.mailbox.put((atoms.EXIT, sender, reason))
            case C.MonitorP(sender, target, ref):
                proc = self._target(target)
                if proc is None and type(target) is Atom and str(target) in self._reserved:
                    pass  # a built-in server: it lives as long as the connection
                elif proc is None:
                    conn.send((C.MONITOR_P_EXIT, target, sender, ref, _NOPROC), has_message=False)
                else:
                    proc.monitored_by[ref] = sender
            case C.DemonitorP(_, target, ref):
                proc = self._target(target)
                if proc is not None:
                    proc.monitored_by.pop(ref, None)
            case C.MonitorPExit(sender, to, ref, reason):
                proc = self._by_pid.get(to)
                if proc is not None and proc.monitoring.pop(ref, None) is not None:
                    proc.mailbox.put((atoms.DOWN, ref, _PROCESS, sender, reason))
            case _:
                log.debug("ignored control message %r", event)

    def peer_lost(self, peer: str) -> None:
        """The connection to ``peer`` is gone: links to it exit and monitors on it fire with
        ``noconnection``, and its monitors on us are dropped."""
        for proc in list(self._by_pid.values()):
            for pid in [p for p in proc.links if p.node == peer]:
                proc.links.discard(pid)
                proc.mailbox.put((atoms.EXIT, pid, _NOCONNECTION))
            for ref, pid in list(proc.monitoring.items()):
                if pid.node == peer:
                    del proc.monitoring[ref]
                    proc.mailbox.put((atoms.DOWN, ref, _PROCESS, pid, _NOCONNECTION))
            for ref, pid in list(proc.monitored_by.items()):
                if pid.node == peer:
                    del proc.monitored_by[ref]
            for pid in [p for p in proc.unlinking if p.node == peer]:
                del proc.unlinking[pid]
