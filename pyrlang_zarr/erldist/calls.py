"""Remote calls through each peer's ``rex`` server, and the replies waiting for them.

A call is a ``gen_server:call`` to ``rex`` sent from one internal pid with a fresh reference
as the tag, so many calls are in flight on one connection and each reply is routed by its
reference. Everything but the reference and the request is encoded once, when our pid is
made: the ``REG_SEND`` header to ``rex`` and the message up to the reference's three words
(:func:`encode_request` caches ``{call, M, F`` per module and function), so a call costs
its arguments' encoding and little more. A call is known by its *tag*, the integer of its
reference's three words, which a reply's bytes carry as they are. When a connection drops,
every call waiting on that peer fails at once with :class:`NodeDown`: its outcome on the
peer is unknown. A peer that owes replies and falls silent is probed, and dropped after
``liveness_timeout``: cut off without a reset (a pulled cable, a partition), its calls fail
in seconds rather than after a whole tick time.

Once a peer is connected over plain TCP, a call is encoded and written on the caller's own
thread (:meth:`Calls.start_direct`), and its reply is read there too (``readers.py``,
:meth:`Calls.on_tagged_reply_on`). The table
of calls in flight is one dict shared by the threads, each entry added and taken by one
atomic operation (whoever pops a call completes it: a reply or a lost connection, never
both); the rare questions by peer (which calls to fail, which peers owe replies) scan it.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from pyrlang_zarr.erldist import control as C
from pyrlang_zarr.erldist.handoff import Handoff, Pending
from pyrlang_zarr.erldist.identity import Identity, ref_ids
from pyrlang_zarr.erldist.io_thread import IoThread
from pyrlang_zarr.erldist.mailbox import resolve
from pyrlang_zarr.erldist.session import ReplyRoute
from pyrlang_zarr.erldist.sinks import ReplySink, Unreadable
from pyrlang_zarr.errors import DecodeError, NodeDown, RpcError
from pyrlang_zarr.term import (
    Atom,
    ImproperList,
    Pid,
    Reference,
    atoms,
    encode,
    encode_atom,
    encode_parts,
)
from pyrlang_zarr.term.format import format_term

if TYPE_CHECKING:
    from pyrlang_zarr.erldist.connection import DistConnection
    from pyrlang_zarr.erldist.peers import Peers

_REX = Atom("rex")
_USER = Atom("user")
#: a call whose reply only proves the peer alive
_PROBE: tuple[Atom, Atom, Atom, list[Any], Atom] = (
    atoms.CALL,
    Atom("erlang"),
    Atom("node"),
    [],
    _USER,
)


def own_binaries(term: Any) -> Any:
    """``term`` with every ``memoryview`` replaced by ``bytes`` of its own."""
    kind = type(term)
    if kind is memoryview:
        return term.tobytes()
    if kind is tuple:
        return tuple(own_binaries(t) for t in term)
    if kind is list:
        return [own_binaries(t) for t in term]
    if kind is dict:
        return {k: own_binaries(v) for k, v in term.items()}
    if kind is ImproperList:
        return ImproperList(tuple(own_binaries(t) for t in term.elements), own_binaries(term.tail))
    return term


_USER_BYTES = encode_atom(_USER)
_NIL_USER = b"j" + _USER_BYTES  # an empty argument list, then 'user'
_REQUEST_HEADS: dict[tuple[str, str], bytes] = {}  # {call, M, F  by (M, F)
_REQUEST_HEADS_LIMIT = 4096
_WORDS = struct.Struct(">III")


def encode_request(module: str, function: str, args: Sequence[Any]) -> list[bytes | memoryview]:
    """The ``{call, M, F, A, user}`` request for ``rex``, encoded (no version byte: it is an
    element of the ``$gen_call`` message), with clear errors for bad arguments."""
    if type(module) is not str or type(function) is not str:
        if not isinstance(module, str) or not isinstance(function, str):
            raise TypeError(f"rpc module and function must be str, got {module!r}, {function!r}")
        module, function = str(module), str(function)
    if type(args) is not list and type(args) is not tuple and not isinstance(args, list | tuple):
        raise TypeError(f"rpc args must be a list or tuple of arguments, not {type(args).__name__}")
    head = _REQUEST_HEADS.get((module, function))
    if head is None:
        head = b"h\x05" + encode_atom(atoms.CALL) + encode_atom(module) + encode_atom(function)
        if len(_REQUEST_HEADS) >= _REQUEST_HEADS_LIMIT:
            _REQUEST_HEADS.clear()
        _REQUEST_HEADS[(module, function)] = head
    if not args:
        return [head + _NIL_USER]
    parts = encode_parts(list(args))
    parts[0] = head + parts[0][1:]  # the first part is bytes: its version byte goes
    parts.append(_USER_BYTES)
    return parts


def tag_of(ids: tuple[int, ...]) -> int | None:
    """A call's tag: the integer of its reference's three 32-bit words, as they travel."""
    if len(ids) != 3:
        return None
    return ids[0] << 64 | ids[1] << 32 | ids[2]


def rpc_result(call: Pending, result: Any) -> Any:
    """``result``, unless it is ``{badrpc, Reason}``: then :class:`RpcError`."""
    if type(result) is tuple and len(result) == 2 and result[0] == atoms.BADRPC:
        raise RpcError(f"{call.what} failed: {format_term(result[1])}", result[1])
    return result


def _owned(call: Pending, result: Any, views: bool) -> tuple[Any, DecodeError | None]:
    """A reply's result with binaries of its own if the call wants them (a taken reply
    that did not parse: its error)."""
    if type(result) is Unreadable:
        why = result.error if isinstance(result.error, DecodeError) else repr(result.error)
        return None, DecodeError(f"the reply to {call.what} cannot be read: {why}")
    if not (views and call.copy):
        return result, None
    try:
        return own_binaries(result), None
    except RecursionError:
        return None, DecodeError(f"reply to {call.what} is nested too deep to copy")


class Liveness(Protocol):
    """The node's setting this module reads (each time: it may be changed live)."""

    liveness_timeout: float


class Calls:
    """Pending remote calls by reference, and by peer (to fail them when the peer goes)."""

    def __init__(
        self,
        identity: Identity,
        handoff: Handoff,
        peers: Peers,
        settings: Liveness,
        replies: ReplyRoute | None = None,
    ) -> None:
        self._identity = identity
        self._handoff = handoff
        self._peers = peers
        self._settings = settings
        self._replies = replies  # told the first bytes of our replies once the pid exists
        if replies is not None:
            replies.deliver = self.on_tagged_reply
            replies.deliver_on = self.on_tagged_reply_on
            replies.sink_for = self.sink_for
        self.pid: Pid | None = None  # the pid every call is sent from, made on first use
        self._header: list[bytes | memoryview] = []  # REG_SEND from pid to rex, encoded
        # the header, then the $gen_call message up to the reference's three words
        self._head = b""
        self._pending: dict[int, Pending] = {}  # by tag; shared with callers' threads

    def is_reply_to(self, pid: Pid) -> bool:
        """Whether a message to ``pid`` is a reply (whose large binaries may stay views)."""
        return pid == self.pid

    # -- on the IO loop -------------------------------------------------------------------
    def start(self, peer: str, request: list[bytes | memoryview], call: Pending) -> None:
        """Send the ``$gen_call`` (its ``request`` encoded) to ``peer``'s ``rex``, or queue
        it behind the connection attempt."""
        if call.future.done():  # cancelled before it started
            return
        try:
            self._peers.get(peer)  # first: it decides our name, which the pid carries
            if self.pid is None:
                self._make_pid()
            tag, head = self._tagged_head()
        except Exception as exc:
            self._handoff.fail(call, exc)
            return
        call.tag = tag
        self._pending[tag] = call
        self._peers.submit(peer, [head, *request], None)

    def _make_pid(self) -> None:
        """On the IO loop: our calls' pid, and what every call sends before its reference."""
        identity = self._identity
        pid = identity.make_pid()
        self._header = encode_parts((C.REG_SEND, pid, atoms.EMPTY, _REX))
        zero_ref = encode(Reference(pid.node, identity.creation, (0, 0, 0)))
        self._head = (
            b"".join(self._header)
            + b"\x83h\x03"
            + encode_atom(atoms.GEN_CALL)
            + b"h\x02"
            + encode(pid)[1:]
            + zero_ref[1:-12]  # NEWER_REFERENCE_EXT, our node and creation: no words yet
        )
        if self._replies is not None:
            self._replies.prefix = (
                b"p" + encode((C.SEND, atoms.EMPTY, pid)) + b"\x83h\x02" + zero_ref[1:-12]
            )
        self.pid = pid  # last: other threads read pid, then the head

    def _tagged_head(self) -> tuple[int, bytes]:
        """A new call's tag and the bytes of its packet up to its request."""
        words = _WORDS.pack(*ref_ids(self._identity.next_id()))
        return int.from_bytes(words, "big"), self._head + words

    def _tag(self, ref: Any) -> int | None:
        """The tag of a decoded reference, if it is one of ours."""
        if type(ref) is not Reference or not self._identity.owns(ref):
            return None
        return tag_of(ref.ids)

    def sink_for(self, tag: int) -> ReplySink | None:
        """On the reading thread: the sink of the call tagged ``tag``, if it waits and has
        one."""
        call = self._pending.get(tag)
        return None if call is None else call.sink

    def _pop(self, tag: int) -> Pending | None:
        return self._pending.pop(tag, None)

    def on_reply(self, event: C.Send) -> None:
        """A message to our pid: ``{Ref, Result}`` completes the call tagged ``Ref``."""
        message = event.message
        if not (type(message) is tuple and len(message) == 2):
            return
        tag = self._tag(message[0])
        if tag is not None:
            self._complete(tag, message[1], event.views)

    def on_tagged_reply(self, event: C.Reply) -> None:
        """A reply recognised by its bytes: completes the call tagged ``event.tag``."""
        self._complete(event.tag, event.result, event.views)

    def _complete(self, tag: int, result: Any, views: bool) -> None:
        call = self._pending.pop(tag, None)
        if call is None:
            return  # timed out or cancelled: dropped
        result, error = _owned(call, result, views)
        self._handoff.complete(call, result, error, receiving=True)

    def on_tagged_reply_on(self, event: C.Reply, here: asyncio.AbstractEventLoop) -> None:
        """A reply read on a caller's loop ``here``: completes its call at once if it is
        one of ``here``'s, else hands it to the call's own loop."""
        call = self._pending.pop(event.tag, None)
        if call is None:
            return
        result, error = _owned(call, event.result, event.views)
        if call.loop is here:
            resolve(call.future, result, error)
            return
        try:
            call.loop.call_soon_threadsafe(resolve, call.future, result, error)
        except RuntimeError:  # that caller's loop is closed: nobody waits any more
            pass

    def on_undecodable(self, event: C.Undecodable) -> bool:
        """A message to our pid that could not be decoded: if its tag names a call waiting
        here, that call alone fails with :class:`DecodeError` (the connection goes on).
        Returns whether it did."""
        tag = self._tag(event.tag)
        call = None if tag is None else self._pop(tag)
        if call is None:
            return False
        error = DecodeError(
            f"the reply to {call.what} cannot be decoded: {event.error}. It is a term Python "
            "cannot represent as given (or a malformed one); only this call failed, the "
            "connection and the calls on it go on"
        )
        self._handoff.fail(call, error, receiving=True)
        return True

    def fail_peer(self, peer: str, error: BaseException, *, lost: bool) -> None:
        """Every call waiting on ``peer`` fails with ``error``; a ``lost`` connection's calls
        with a :class:`NodeDown` that says their outcome is unknown."""
        pending = self._pending
        calls = [
            call
            for tag, waiting in list(pending.items())
            if waiting.peer == peer and (call := pending.pop(tag, None)) is not None
        ]
        for call in calls:
            what = f"{error} (during {call.what}; outcome unknown)"
            self._handoff.fail(call, NodeDown(what) if lost else error)

    def watch_liveness(self) -> None:
        """Every quarter of ``liveness_timeout``: probe the silent peers that owe replies;
        drop those silent for the whole ``liveness_timeout``."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        limit = self._settings.liveness_timeout
        owing = {call.peer for call in list(self._pending.values())}
        for peer in owing:
            conn = self._peers.connection(peer)
            if conn is None:
                continue
            silent = now - conn.last_recv
            if silent > limit:
                conn.abort(
                    NodeDown(
                        f"{peer} sent nothing for {silent:.1f} s while calls were waiting "
                        "(cut off or hung)"
                    )
                )
            elif silent > limit / 4:
                self._probe(conn)
        if not self._peers.closed:
            loop.call_later(limit / 4, self.watch_liveness)

    def _probe(self, conn: DistConnection) -> None:
        """Ask ``conn``'s peer for something cheap: any reply proves it alive."""
        if self.pid is None:
            return
        probe = (atoms.GEN_CALL, (self.pid, self._identity.make_ref()), _PROBE)
        try:
            conn.send_parts(self._header + encode_parts(probe))
        except NodeDown:
            pass

    # -- from any thread ------------------------------------------------------------------
    def start_direct(
        self,
        conn: DistConnection,
        request: list[bytes | memoryview],
        call: Pending,
        loop: asyncio.AbstractEventLoop,
        alone: bool = False,
    ) -> bool:
        """On the caller's thread: write the call (its ``request`` encoded) on ``conn``
        (connected, plain TCP), corked until the end of ``loop``'s iteration unless it is
        ``alone`` (no other call of ``loop`` in flight). ``False`` if the first call has not
        made our pid yet (then :meth:`start` must run on the IO loop)."""
        if self.pid is None:
            return False
        tag, head = self._tagged_head()
        call.tag = tag
        self._pending[tag] = call  # before sending: the reply may come at once
        try:
            conn.send_parts([head, *request], loop, alone=alone)
        except BaseException:
            self._pop(tag)
            raise
        return True

    def forget(self, io: IoThread, call: Pending) -> None:
        """``call`` timed out or was cancelled: its reply, if it comes, is dropped."""

        if call.tag is not None:
            self._pop(call.tag)
            return

        def forget() -> None:  # after start, which the IO loop runs first
            if call.tag is not None:
                self._pop(call.tag)

        try:
            io.loop.call_soon_threadsafe(forget)
        except RuntimeError:
            pass
