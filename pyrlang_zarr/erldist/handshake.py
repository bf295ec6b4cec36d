"""The client side of the distribution handshake (version 6, OTP 23+), as a state machine.

Fed whole handshake packets (the length already stripped) and returning the packets to send,
it never touches a socket; ``connection.py`` drives it. Handshake packets carry a 2-byte
length over TCP, and a 4-byte one over TLS (``inet_tls_dist`` runs its socket with
``{packet, 4}`` from the start). Rules follow OTP's
``dist_util.erl``: send_name ``'N'``, status, challenge ``'N'``, challenge reply, challenge ack,
and the peer's digest is checked (mutual authentication).

A peer challenge equal to a challenge of ours still waiting for its ack (on any connection of
this process) is refused: otherwise a peer that does not know the cookie, reached twice at once
(two names it answers for), could send our challenge from connection A back to us on B, and our
digest on B would be exactly the ack that A waits for (challenge reflection).
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import struct
import threading
import weakref
from dataclasses import dataclass

from pyrlang_zarr.erldist import flags as F
from pyrlang_zarr.errors import AuthenticationError, NodeUnreachable, ProtocolError


def digest(challenge: int, cookie: str) -> bytes:
    """``MD5(Cookie ++ integer_to_list(Challenge))``, as ``dist_util:gen_digest/2``."""
    return hashlib.md5(cookie.encode("latin-1") + str(challenge).encode("ascii")).digest()


def new_creation() -> int:
    """A fresh non-zero 32-bit creation: pids and refs of an earlier run never match ours."""
    return secrets.randbelow(0xFFFFFFFF - 4) + 4


def frame(packet: bytes, length_bytes: int = 2) -> bytes:
    """A handshake packet with its length prefix (2 bytes; 4 over TLS)."""
    if length_bytes == 4:
        return struct.pack(">I", len(packet)) + packet
    return struct.pack(">H", len(packet)) + packet


# Handshakes whose challenge reply is sent and whose ack is awaited, process-wide (every Node,
# every I/O thread). Weak: a handshake dropped without an end leaves by itself.
_awaiting_ack: weakref.WeakSet[ClientHandshake] = weakref.WeakSet()
_awaiting_lock = threading.Lock()


def _is_ours(challenge: int) -> bool:
    """Whether ``challenge`` is one we sent and whose ack has not come yet."""
    with _awaiting_lock:
        return any(hs._our_challenge == challenge for hs in _awaiting_ack)


class State(enum.Enum):
    AWAIT_STATUS = "waiting for the status"
    AWAIT_CHALLENGE = "waiting for the challenge"
    AWAIT_ACK = "waiting for the challenge ack"
    CONNECTED = "connected"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Peer:
    """What the handshake learnt about the node at the other end."""

    name: str
    flags: int
    creation: int


class ClientHandshake:
    """We connect, the peer accepts. ``start()`` then ``packet_received()`` until ``peer``."""

    def __init__(
        self,
        our_name: str,
        peer_name: str,
        cookie: str,
        *,
        creation: int,
        flags: int = F.OUR_FLAGS,
        challenge: int | None = None,
        length_bytes: int = 2,
    ) -> None:
        if length_bytes not in (2, 4):
            raise ValueError(f"handshake packets have 2- or 4-byte lengths, not {length_bytes}")
        self.length_bytes = length_bytes
        self.our_name = our_name
        self.peer_name = peer_name
        self._cookie = cookie
        self.creation = creation
        self.flags = flags
        self._our_challenge = secrets.randbits(32) if challenge is None else challenge
        self.state = State.AWAIT_STATUS
        self.peer: Peer | None = None

    def __repr__(self) -> str:  # never show the cookie
        return f"<ClientHandshake {self.our_name} -> {self.peer_name}: {self.state.value}>"

    def start(self) -> bytes:
        """The framed send_name packet."""
        name = self.our_name.encode("utf-8")
        packet = b"N" + struct.pack(">QIH", self.flags, self.creation, len(name)) + name
        return frame(packet, self.length_bytes)

    def packet_received(self, packet: bytes | bytearray | memoryview) -> bytes | None:
        """Handle one packet; return the framed reply to send, if any."""
        packet = bytes(packet)
        try:
            if self.state is State.AWAIT_STATUS:
                return self._on_status(packet)
            if self.state is State.AWAIT_CHALLENGE:
                return self._on_challenge(packet)
            if self.state is State.AWAIT_ACK:
                self._on_ack(packet)
                return None
        except Exception:
            self._end(State.FAILED)
            raise
        raise ProtocolError(f"handshake packet {packet[:16]!r} after the handshake {self.state}")

    def _end(self, state: State) -> None:
        self.state = state
        self._forget_challenge()

    def _forget_challenge(self) -> None:
        with _awaiting_lock:
            _awaiting_ack.discard(self)

    def connection_lost(self) -> Exception:
        """The error that a closed socket means in the current state."""
        self._forget_challenge()
        if self.state is State.AWAIT_ACK:
            return AuthenticationError(
                f"{self.peer_name} closed the connection after our challenge reply: it refused "
                "our digest, so the cookie is wrong for that node"
            )
        if self.state is State.AWAIT_STATUS:
            tls = ""
            if self.length_bytes == 4:  # inside TLS: a TLS 1.3 refusal may come as this
                tls = "; or it refused our TLS certificate after the TLS handshake"
            return NodeUnreachable(
                f"{self.peer_name} closed the connection before accepting our name "
                f"{self.our_name!r} (short vs long node names must match the cluster's "
                f"form{tls})"
            )
        return NodeUnreachable(f"{self.peer_name} closed the connection during the handshake")

    def _on_status(self, packet: bytes) -> bytes | None:
        if packet[:1] != b"s":
            raise ProtocolError(f"expected a status packet from {self.peer_name}, got {packet!r}")
        status = packet[1:]
        if status in (b"ok", b"ok_simultaneous"):
            self.state = State.AWAIT_CHALLENGE
            return None
        if status == b"alive":
            # The peer still holds a connection under our name (an earlier run of ours that it
            # has not noticed is gone); "true" tells it to drop that one and go on with us.
            self.state = State.AWAIT_CHALLENGE
            return frame(b"strue", self.length_bytes)
        if status == b"not_allowed":
            raise NodeUnreachable(
                f"{self.peer_name} does not allow our connection (not_allowed): it needs "
                "distribution flags we lack, or net_kernel:allow/1 excludes us"
            )
        if status == b"nok":
            raise NodeUnreachable(f"{self.peer_name} refused the connection (nok)")
        raise ProtocolError(f"{self.peer_name} sent an unknown handshake status {status!r}")

    def _on_challenge(self, packet: bytes) -> bytes:
        if packet[:1] != b"N" or len(packet) < 19:
            raise ProtocolError(
                f"expected a challenge ('N', OTP 23+) from {self.peer_name}, got {packet[:24]!r}"
            )
        peer_flags, challenge, creation, nlen = struct.unpack_from(">QIIH", packet, 1)
        if len(packet) < 19 + nlen:
            raise ProtocolError(f"challenge from {self.peer_name} is truncated")
        name = packet[19 : 19 + nlen].decode("utf-8", "replace")
        if name != self.peer_name:
            raise NodeUnreachable(
                f"the node reached for {self.peer_name!r} calls itself {name!r}; use that name"
            )
        missing = F.MANDATORY_25 & ~peer_flags
        if missing:
            raise ProtocolError(f"{name} lacks mandatory distribution flags {F.describe(missing)}")
        if challenge == self._our_challenge or _is_ours(challenge):
            raise AuthenticationError(
                f"{name} sent as its challenge one of our own challenges still awaiting its "
                "ack: a reflection attack by a peer that does not know the cookie"
            )
        self.peer = Peer(name, peer_flags, creation)
        reply = b"r" + struct.pack(">I", self._our_challenge) + digest(challenge, self._cookie)
        with _awaiting_lock:
            _awaiting_ack.add(self)
        self.state = State.AWAIT_ACK
        return frame(reply, self.length_bytes)

    def _on_ack(self, packet: bytes) -> None:
        if packet[:1] != b"a" or len(packet) != 17:
            raise ProtocolError(f"expected a challenge ack from {self.peer_name}, got {packet!r}")
        if not secrets.compare_digest(packet[1:], digest(self._our_challenge, self._cookie)):
            raise AuthenticationError(
                f"{self.peer_name} answered our challenge with a wrong digest: it does not "
                "know our cookie"
            )
        self._end(State.CONNECTED)
