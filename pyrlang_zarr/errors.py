"""One exception hierarchy for everything the library raises on purpose.

Bad arguments raise the built-in ``ValueError``/``TypeError`` before anything is sent; the
classes here describe what went wrong with the cluster, the connection or the data.
"""

from __future__ import annotations

from typing import Any


class PyrlangZarrError(Exception):
    """Base class of every error raised by pyrlang_zarr about the cluster or its data."""


class DecodeError(PyrlangZarrError, ValueError):
    """Bytes that are not a valid External Term Format term (or not one we can decode)."""


class EncodeError(PyrlangZarrError, TypeError):
    """A Python value that has no Erlang term form."""


class ProtocolError(PyrlangZarrError):
    """The peer broke the distribution protocol (bad handshake packet, bad frame, ...)."""


class AuthenticationError(PyrlangZarrError):
    """The cookie was refused by the peer, or the peer could not prove it knows the cookie."""


class NodeUnreachable(PyrlangZarrError, ConnectionError):
    """No connection could be made: no EPMD on the host, name not registered, port refused."""


class NodeDown(PyrlangZarrError, ConnectionError):
    """The connection to a node was lost; calls in flight on it have an unknown outcome."""


class RpcTimeout(PyrlangZarrError, TimeoutError):
    """A remote call got no answer within its timeout; its outcome is unknown."""


class HandshakeTimeout(PyrlangZarrError, TimeoutError):
    """The peer accepted the TCP connection but did not complete the handshake in time."""


class RpcError(PyrlangZarrError):
    """A remote call failed on the peer: ``{badrpc, Reason}``. ``reason`` is the decoded term."""

    def __init__(self, message: str, reason: Any = None) -> None:
        super().__init__(message)
        self.reason = reason


class TableNotFound(PyrlangZarrError):
    """The Mnesia table does not exist (ExZarr's ``table_not_found``)."""

    code = "table_not_found"


class NotFound(PyrlangZarrError, KeyError):
    """A record that must exist does not (ExZarr's ``not_found``)."""

    code = "not_found"

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else self.code


class TransactionError(PyrlangZarrError):
    """A Mnesia transaction aborted (ExZarr's ``transaction_error``); ``reason`` is the term."""

    code = "transaction_error"

    def __init__(self, message: str, reason: Any = None) -> None:
        super().__init__(message)
        self.reason = reason


class IncompatibleTable(PyrlangZarrError, ValueError):
    """An existing Mnesia table has a shape that our records cannot live in."""


class MnesiaNotRunning(PyrlangZarrError):
    """Mnesia is not running on the node asked (set the cluster up first)."""


class NoMajority(TransactionError):
    """A write to a ``majority`` table was refused: the node sees too few of its replicas
    (it is on the minority side of a partition). Nothing was written."""


class PossiblyStaleRead(UserWarning):
    """A read was served by a node that sees fewer than half of the table's replicas: it may
    be on the minority side of a partition and miss writes the majority has taken since."""
