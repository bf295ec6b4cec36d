"""What this node answers as an Erlang node: the registered names a cluster talks to.

Every Erlang node runs ``net_kernel`` and ``rex``, and a cluster takes their answers for
granted. ``net_adm:ping/1`` (an operator's first check) is a ``gen_server`` call to
``net_kernel``; when no answer comes, it calls ``erlang:disconnect_node/1``, which would drop
our connection and fail every call in flight on it. So this node answers:

- ``net_kernel``: ``{is_auth, Node}`` -> ``yes`` (``net_adm:ping`` gets ``pong``), as OTP's
  ``net_kernel`` answers; ``longnames`` -> whether our name is long. Any other call gets
  ``{error, notsup}`` at once instead of waiting out the caller's timeout.
- ``rex``, the server of classic ``rpc``: this node runs no Erlang code, so a call
  (``gen_server`` form or the C-node form ``{From, {call, M, F, A, GL}}``) gets
  ``{badrpc, notsup}`` at once, the answer ``rpc:call/4`` itself gives for a node that cannot
  spawn (OTP 25's ``rpc:call`` uses ``erpc``, which needs ``DFLAG_SPAWN``: we leave it out, so
  the caller's node refuses locally, promptly, and the connection stays). ``sbcast`` and
  ``send`` (``rpc:sbcast/3``, ``rpc:multi_server_call/3``) deliver to our registered
  processes and answer as ``rex`` does.

Monitors on these names are accepted and held (``gen_server:call`` monitors the name it
calls; a real node's ``net_kernel`` never goes down while the connection is up), so no
``noproc`` DOWN makes the caller give up. Casts and unknown messages are dropped with a debug
log, as the real servers drop them. Nothing here may raise into the connection's reader.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from pyrlang_zarr.erldist import control as C
from pyrlang_zarr.erldist.identity import Identity, is_long_host, split_node_name
from pyrlang_zarr.term import Atom, Pid, atoms

log = logging.getLogger(__name__)

NET_KERNEL = Atom("net_kernel")
REX = Atom("rex")
#: the names this node answers to itself; our processes cannot be registered under them
NAMES = frozenset({str(NET_KERNEL), str(REX)})

_IS_AUTH = Atom("is_auth")
_LONGNAMES = Atom("longnames")
_ERROR = Atom("error")
_NOTSUP = Atom("notsup")
_BLOCK_CALL = Atom("block_call")
_SBCAST = Atom("sbcast")
_SEND = Atom("send")
_NONEXISTING_NAME = Atom("nonexisting_name")
_REFUSED = (atoms.BADRPC, _NOTSUP)


class ReplyWriter(Protocol):
    """The connection the request arrived on: replies go straight back on it."""

    def send(
        self, control: tuple[Any, ...], message: Any = None, *, has_message: bool = True
    ) -> None: ...


#: delivers a message to our process registered under a name; False if there is none
NamedDelivery = Callable[[str, Any], bool]


class Services:
    """The built-in servers, answering on the connection each request came on."""

    def __init__(self, identity: Identity, deliver_named: NamedDelivery) -> None:
        self._identity = identity
        self._deliver_named = deliver_named

    @staticmethod
    def handles(name: str) -> bool:
        return name in NAMES

    def on_message(self, conn: ReplyWriter, event: C.RegSend) -> None:
        """A message to ``net_kernel`` or ``rex``: answer it, or drop it with a log."""
        try:
            if event.name == NET_KERNEL:
                self._net_kernel(conn, event.message)
            else:
                self._rex(conn, event.message)
        except Exception:  # a reply we cannot encode, a closed connection: never the reader's
            log.exception("error answering %r sent to %s", event.message, event.name)

    # -- net_kernel -----------------------------------------------------------------------
    def _net_kernel(self, conn: ReplyWriter, message: Any) -> None:
        call = _gen_call(message)
        if call is None:
            log.debug("net_kernel dropped %r", message)
            return
        sender, tag, request = call
        if type(request) is tuple and len(request) == 2 and request[0] == _IS_AUTH:
            reply: Any = atoms.YES
        elif request == _LONGNAMES:
            reply = self._longnames()
        else:
            log.debug("net_kernel refused %r from %s", request, sender)
            reply = (_ERROR, _NOTSUP)
        _reply(conn, sender, (tag, reply))

    def _longnames(self) -> bool:
        name = self._identity.name
        return name is not None and is_long_host(split_node_name(name)[1])

    # -- rex ------------------------------------------------------------------------------
    def _rex(self, conn: ReplyWriter, message: Any) -> None:
        call = _gen_call(message)
        if call is not None:
            sender, tag, request = call
            log.debug("rex refused %r from %s: this node runs no Erlang code", request, sender)
            _reply(conn, sender, (tag, _REFUSED))
            return
        if not (type(message) is tuple and len(message) == 2 and type(message[0]) is Pid):
            log.debug("rex dropped %r", message)  # casts ({'$gen_cast', ...}) and the unknown
            return
        sender, request = message
        if type(request) is not tuple or not request:
            log.debug("rex dropped %r", message)
            return
        op = request[0]
        if op == atoms.CALL and len(request) == 5:  # the C-node form: {rex, Reply} back
            _reply(conn, sender, (REX, _REFUSED))
        elif op == _SBCAST and len(request) == 3 and type(request[1]) is Atom:
            name, payload = request[1], request[2]
            if self._deliver_named(str(name), payload):
                _reply(conn, sender, (REX, self._identity.atom(), self._identity.atom()))
            else:
                _reply(conn, sender, (REX, self._identity.atom(), (_NONEXISTING_NAME, name)))
        elif op == _SEND and len(request) == 3 and type(request[1]) is Atom:
            name, payload = request[1], request[2]
            if not self._deliver_named(str(name), (sender, payload)):
                _reply(conn, sender, (REX, self._identity.atom(), (_NONEXISTING_NAME, name)))
        else:
            log.debug("rex dropped %r", message)


def _gen_call(message: Any) -> tuple[Pid, Any, Any] | None:
    """``(From, Tag, Request)`` of a ``{'$gen_call', {From, Tag}, Request}`` message. The tag
    may be a reference or OTP 24+'s ``[alias | Ref]``: either way the reply ``{Tag, Reply}``
    sent to ``From`` is what the caller's ``receive`` waits for."""
    if not (type(message) is tuple and len(message) == 3 and message[0] == atoms.GEN_CALL):
        return None
    source = message[1]
    if not (type(source) is tuple and len(source) == 2 and type(source[0]) is Pid):
        return None
    return source[0], source[1], message[2]


def _reply(conn: ReplyWriter, to: Pid, message: Any) -> None:
    conn.send((C.SEND, atoms.EMPTY, to), message)
