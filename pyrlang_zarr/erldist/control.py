"""Control messages (``erts/emulator/beam/dist.h``): op codes, typed events and their parser.

A pass-through packet carries a control tuple whose first element is the op, and for some
ops a message term. :func:`parse_control` turns the two into one frozen event, checking the
tuple's arity and the types of the elements the node relies on, so the handlers never index
a tuple and never meet a pid that is not a :class:`Pid`. A well-framed but malformed control
message raises :class:`MalformedControl`; the node ignores it, as OTP's ``dist.c`` ignores
nothing but a hidden node can afford to.

Variants collapse into one event each: ``SEND``/``SEND_TT``/``SEND_SENDER``/``SEND_SENDER_TT``
are all :class:`Send`; ``EXIT``, ``EXIT_TT``, ``PAYLOAD_EXIT`` and ``PAYLOAD_EXIT_TT`` are all
:class:`Exit` with the reason taken from the tuple or from the message part. Trace tokens are
checked for presence and dropped: this node takes no part in sequential tracing. Ops we do
not act on (``NODE_LINK``, ``GROUP_LEADER``, spawn and alias ops, unknown ops) parse to
:class:`Unhandled`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from pyrlang_zarr.errors import DecodeError, ProtocolError
from pyrlang_zarr.term import Atom, Pid, Reference

LINK = 1
SEND = 2
EXIT = 3
UNLINK = 4
NODE_LINK = 5
REG_SEND = 6
GROUP_LEADER = 7
EXIT2 = 8
SEND_TT = 12
EXIT_TT = 13
REG_SEND_TT = 16
EXIT2_TT = 18
MONITOR_P = 19
DEMONITOR_P = 20
MONITOR_P_EXIT = 21
SEND_SENDER = 22
SEND_SENDER_TT = 23
PAYLOAD_EXIT = 24
PAYLOAD_EXIT_TT = 25
PAYLOAD_EXIT2 = 26
PAYLOAD_EXIT2_TT = 27
PAYLOAD_MONITOR_P_EXIT = 28
SPAWN_REQUEST = 29
SPAWN_REQUEST_TT = 30
SPAWN_REPLY = 31
SPAWN_REPLY_TT = 32
ALIAS_SEND = 33
ALIAS_SEND_TT = 34
UNLINK_ID = 35
UNLINK_ID_ACK = 36

#: ops whose message part is delivered to the pid in element 2 (index 2).
SENDS_TO_PID = frozenset({SEND, SEND_TT, SEND_SENDER, SEND_SENDER_TT})

#: the message part of a packet that has none (a decoded term is never ``None``).
NO_MESSAGE: Any = None


class MalformedControl(ProtocolError):
    """A control message of a known op with the wrong arity, element types or message part."""

    def __init__(self, message: str, term: Any) -> None:
        super().__init__(message)
        self.term = term


# -- events --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Send:
    """A message for our pid ``to``. ``views``: its large binaries may be memoryviews of the
    received packet (decided before decoding, for replies to our rpc pid only)."""

    to: Pid
    message: Any
    sender: Pid | None = None  # SEND_SENDER only
    views: bool = False


@dataclass(frozen=True, slots=True)
class RegSend:
    """A message for our process registered as ``name``."""

    sender: Pid
    name: Atom
    message: Any


@dataclass(frozen=True, slots=True)
class Link:
    sender: Pid
    to: Pid


@dataclass(frozen=True, slots=True)
class Unlink:
    """The old unlink (op 4), without an id and without an ack."""

    sender: Pid
    to: Pid


@dataclass(frozen=True, slots=True)
class UnlinkId:
    """An unlink that wants an ``UNLINK_ID_ACK`` with the same ``id``."""

    id: int
    sender: Pid
    to: Pid


@dataclass(frozen=True, slots=True)
class UnlinkIdAck:
    id: int
    sender: Pid
    to: Pid


@dataclass(frozen=True, slots=True)
class Exit:
    """An exit signal along a link (``EXIT``, ``EXIT_TT`` and their payload forms)."""

    sender: Pid
    to: Pid
    reason: Any


@dataclass(frozen=True, slots=True)
class Exit2:
    """``exit(Pid, Reason)`` from any process (``EXIT2``, ``EXIT2_TT``, payload forms)."""

    sender: Pid
    to: Pid
    reason: Any


@dataclass(frozen=True, slots=True)
class MonitorP:
    """``sender`` monitors our process ``target`` (a pid, or a registered name)."""

    sender: Pid
    target: Pid | Atom
    ref: Reference


@dataclass(frozen=True, slots=True)
class DemonitorP:
    sender: Pid
    target: Pid | Atom
    ref: Reference


@dataclass(frozen=True, slots=True)
class MonitorPExit:
    """A process that our ``to`` monitored (by pid or name) is gone: a DOWN for ``ref``."""

    sender: Pid | Atom
    to: Pid
    ref: Reference
    reason: Any


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A well-framed packet whose control message decoded but whose message part did not
    (a legal Erlang term Python cannot represent, such as ``#{1 => a, 1.0 => b}``, or a
    malformed one). Only that message is lost: the connection goes on. ``to`` is where it
    was going (a pid, or a registered name), ``tag`` the first element of the message if it
    is a tuple whose first element could be read (a reply's reference), else ``None``."""

    op: int
    to: Pid | Atom | None
    tag: Any
    error: DecodeError


class Reply:
    """A reply to one of our remote calls, recognised by its first bytes before anything
    was decoded (``session.py``): ``tag`` is the call's (``calls.py``), ``result`` the
    reply's second element. ``views`` as for :class:`Send`. No dataclass: one is made for
    every reply, and a plain ``__init__`` costs half a frozen one's."""

    __slots__ = ("result", "tag", "views")

    def __init__(self, tag: int, result: Any, views: bool) -> None:
        self.tag = tag
        self.result = result
        self.views = views

    def __repr__(self) -> str:
        return f"Reply(tag={self.tag:#x}, result={self.result!r}, views={self.views})"


@dataclass(frozen=True, slots=True)
class Unhandled:
    """A control message this node does not act on (spawn, alias, group leader, unknown)."""

    op: int
    term: tuple[Any, ...]


ControlMessage: TypeAlias = (
    Send
    | RegSend
    | Link
    | Unlink
    | UnlinkId
    | UnlinkIdAck
    | Exit
    | Exit2
    | MonitorP
    | DemonitorP
    | MonitorPExit
    | Undecodable
    | Unhandled
    | Reply
)


# -- the parser ----------------------------------------------------------------------------
def _bad(term: tuple[Any, ...], what: str) -> MalformedControl:
    return MalformedControl(f"malformed control message {term!r}: {what}", term)


def _arity(term: tuple[Any, ...], n: int) -> None:
    if len(term) != n:
        raise _bad(term, f"op {term[0]} needs {n} elements, got {len(term)}")


def _pid(term: tuple[Any, ...], i: int) -> Pid:
    value = term[i]
    if type(value) is not Pid:
        raise _bad(term, f"element {i + 1} must be a pid, got {type(value).__name__}")
    return value


def _ref(term: tuple[Any, ...], i: int) -> Reference:
    value = term[i]
    if type(value) is not Reference:
        raise _bad(term, f"element {i + 1} must be a reference, got {type(value).__name__}")
    return value


def _proc(term: tuple[Any, ...], i: int) -> Pid | Atom:
    value = term[i]
    if not isinstance(value, Pid | Atom):
        raise _bad(term, f"element {i + 1} must be a pid or a name, got {type(value).__name__}")
    return value


def _payload(term: tuple[Any, ...], message: Any) -> Any:
    if message is NO_MESSAGE:
        raise _bad(term, f"op {term[0]} needs a message part")
    return message


_new = object.__new__
_set_to, _set_message, _set_sender, _set_views = (
    Send.__dict__[f].__set__ for f in ("to", "message", "sender", "views")
)


def _fast_send(to: Pid, message: Any, sender: Pid | None, views: bool) -> Send:
    """``Send(to, message, sender, views)`` without the frozen ``__init__``'s four
    ``object.__setattr__`` calls: this runs for every message received, rpc replies too."""
    event: Send = _new(Send)
    _set_to(event, to)
    _set_message(event, message)
    _set_sender(event, sender)
    _set_views(event, views)
    return event


def _send(t: tuple[Any, ...], message: Any, views: bool) -> Send:
    op = t[0]
    _arity(t, 4 if op == SEND_TT or op == SEND_SENDER_TT else 3)
    to = _pid(t, 2)
    sender = _pid(t, 1) if op == SEND_SENDER or op == SEND_SENDER_TT else None
    return _fast_send(to, _payload(t, message), sender, views)


def _reg_send(t: tuple[Any, ...], message: Any, views: bool) -> RegSend:
    _arity(t, 5 if t[0] == REG_SEND_TT else 4)
    name = t[3]
    if type(name) is not Atom:
        raise _bad(t, f"element 4 must be a registered name, got {type(name).__name__}")
    return RegSend(_pid(t, 1), name, _payload(t, message))


def _link(t: tuple[Any, ...], message: Any, views: bool) -> Link:
    _arity(t, 3)
    return Link(_pid(t, 1), _pid(t, 2))


def _unlink(t: tuple[Any, ...], message: Any, views: bool) -> Unlink:
    _arity(t, 3)
    return Unlink(_pid(t, 1), _pid(t, 2))


def _unlink_id(t: tuple[Any, ...], message: Any, views: bool) -> UnlinkId | UnlinkIdAck:
    _arity(t, 4)
    id_ = t[1]
    if type(id_) is not int:
        raise _bad(t, f"element 2 must be an integer id, got {type(id_).__name__}")
    cls = UnlinkId if t[0] == UNLINK_ID else UnlinkIdAck
    return cls(id_, _pid(t, 2), _pid(t, 3))


def _exit_parser(cls: type[Exit] | type[Exit2], plain: int, tt: int, payload: int) -> _Parser:
    """Parser of one exit family: reason in the tuple (``plain``: ``{Op, From, To, Reason}``;
    ``tt``: ``{Op, From, To, Token, Reason}``) or in the message part (``payload`` op with
    ``{Op, From, To}``, its ``_TT`` form with a token after ``To``)."""

    def parse(t: tuple[Any, ...], message: Any, views: bool) -> Exit | Exit2:
        op = t[0]
        if op == plain:
            _arity(t, 4)
            reason = t[3]
        elif op == tt:
            _arity(t, 5)
            reason = t[4]
        else:
            _arity(t, 3 if op == payload else 4)
            reason = _payload(t, message)
        return cls(_pid(t, 1), _pid(t, 2), reason)

    return parse


def _monitor_p(t: tuple[Any, ...], message: Any, views: bool) -> MonitorP | DemonitorP:
    _arity(t, 4)
    cls = MonitorP if t[0] == MONITOR_P else DemonitorP
    return cls(_pid(t, 1), _proc(t, 2), _ref(t, 3))


def _monitor_p_exit(t: tuple[Any, ...], message: Any, views: bool) -> MonitorPExit:
    if t[0] == MONITOR_P_EXIT:
        _arity(t, 5)
        reason = t[4]
    else:
        _arity(t, 4)
        reason = _payload(t, message)
    return MonitorPExit(_proc(t, 1), _pid(t, 2), _ref(t, 3), reason)


_Parser: TypeAlias = Callable[[tuple[Any, ...], Any, bool], ControlMessage]

_PARSERS: dict[int, _Parser] = {
    SEND: _send,
    SEND_TT: _send,
    SEND_SENDER: _send,
    SEND_SENDER_TT: _send,
    REG_SEND: _reg_send,
    REG_SEND_TT: _reg_send,
    LINK: _link,
    UNLINK: _unlink,
    UNLINK_ID: _unlink_id,
    UNLINK_ID_ACK: _unlink_id,
    MONITOR_P: _monitor_p,
    DEMONITOR_P: _monitor_p,
    MONITOR_P_EXIT: _monitor_p_exit,
    PAYLOAD_MONITOR_P_EXIT: _monitor_p_exit,
}
for _op in (EXIT, EXIT_TT, PAYLOAD_EXIT, PAYLOAD_EXIT_TT):
    _PARSERS[_op] = _exit_parser(Exit, EXIT, EXIT_TT, PAYLOAD_EXIT)
for _op in (EXIT2, EXIT2_TT, PAYLOAD_EXIT2, PAYLOAD_EXIT2_TT):
    _PARSERS[_op] = _exit_parser(Exit2, EXIT2, EXIT2_TT, PAYLOAD_EXIT2)


def parse_control(term: Any, message: Any = NO_MESSAGE, views: bool = False) -> ControlMessage:
    """The event for control tuple ``term`` and its message part (``NO_MESSAGE`` if none).

    Raises :class:`MalformedControl` when ``term`` is not a tuple with an integer op, or when
    a known op has the wrong arity, element types or a missing message part. ``views`` is
    passed on to :class:`Send` (the message was decoded with binaries as memoryviews).
    """
    if type(term) is not tuple or not term or type(term[0]) is not int:
        raise MalformedControl(f"a control message must be a tuple {{Op, ...}}, got {term!r}", term)
    if term[0] == SEND and len(term) == 3 and type(term[2]) is Pid and message is not NO_MESSAGE:
        return _fast_send(term[2], message, None, views)  # most packets: checked inline
    parser = _PARSERS.get(term[0])
    if parser is None:
        return Unhandled(term[0], term)
    return parser(term, message, views)


def send_target(term: Any) -> Any:
    """The destination of a send-to-pid control tuple, else ``None``; read before the message
    part is decoded, to decide whether its binaries may stay views."""
    if type(term) is tuple and len(term) > 2 and term[0] in SENDS_TO_PID:
        return term[2]
    return None


def destination(term: Any) -> Pid | Atom | None:
    """Where a message-carrying control tuple sends its message (a pid, or a registered
    name for ``REG_SEND``), if it can be told; for messages that cannot be decoded."""
    to = send_target(term)
    if type(to) is Pid:
        return to
    if type(term) is tuple and len(term) > 3 and term[0] in (REG_SEND, REG_SEND_TT):
        name = term[3]
        if type(name) is Atom:
            return name
    return None
