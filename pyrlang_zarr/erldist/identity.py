"""Who this node is: its name, its creation, and the pids and references it makes.

The name is decided late, on the first connection, because Erlang refuses to mix short
(``name@host``) and long (``name@host.domain``) names: the first peer's form decides ours.
Pids and references carry the name and the creation, so they are made here.
"""

from __future__ import annotations

import ipaddress
import itertools
import secrets
import socket

from pyrlang_zarr.erldist.handshake import new_creation
from pyrlang_zarr.errors import NodeUnreachable
from pyrlang_zarr.term import Atom, Pid, Reference


def split_node_name(name: str) -> tuple[str, str]:
    """``'alive@host'`` -> ``('alive', 'host')``, with a clear error for anything else."""
    if not isinstance(name, str):
        raise TypeError(
            f"a node name must be a str such as 'node1@host', not {type(name).__name__}"
        )
    alive, sep, host = name.partition("@")
    if not sep or not alive or not host or "@" in host:
        raise ValueError(f"bad node name {name!r}: expected 'name@host'")
    return alive, host


def ref_ids(n: int) -> tuple[int, int, int]:
    """The three 32-bit words of our reference number ``n`` (18 bits in the first, as
    ``erts`` makes them)."""
    return (n & 0x3FFFF, n >> 18 & 0xFFFFFFFF, 0)


def is_long_host(host: str) -> bool:
    """Erlang's rule: a host with a dot (or an IP address) makes a long node name."""
    if "." in host:
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _local_address_towards(host: str | None) -> str:
    """Our IP address on the route to ``host`` (a UDP connect sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host or "127.0.0.1", 4369))
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"


class Identity:
    """Our node name (``requested``, else chosen on first need), creation and id counter."""

    def __init__(self, requested: str | None) -> None:
        self.name: str | None = requested
        self.creation = new_creation()
        self._atom: Atom | None = None
        self._ids = itertools.count(1)

    def ensure_name(self, long: bool, peer_host: str | None = None) -> str:
        """Our name, chosen now in the ``long`` or short form if not yet; a clear error if
        it was decided in the other form (a peer of the other form cannot be reached)."""
        if self.name is None:
            suffix = secrets.token_hex(4)
            if long:
                fqdn = socket.getfqdn()
                host = fqdn if "." in fqdn else _local_address_towards(peer_host)
            else:
                host = socket.gethostname().split(".")[0]
            self.name = f"pz-{suffix}@{host}"
        elif is_long_host(split_node_name(self.name)[1]) != long:
            ours, theirs = ("short", "long") if long else ("long", "short")
            peer = f"the peer's host {peer_host!r}" if peer_host else "the peer"
            raise NodeUnreachable(
                f"this node is {self.name!r}, a {ours} name, but {peer} makes a {theirs} name; "
                "Erlang does not mix the two forms: use one Node per form (pass name=...)"
            )
        return self.name

    def atom(self) -> Atom:
        """Our name as an atom; decided (short form) if no connection decided it yet. A name
        already decided is kept whatever its form: pids and refs of a node with a long name
        carry the long name."""
        atom = self._atom
        if atom is None or atom != self.name:
            name = self.name if self.name is not None else self.ensure_name(False)
            atom = self._atom = Atom(name)
        return atom

    def next_id(self) -> int:
        """The next number of this node run's counter (pids and references share it)."""
        return next(self._ids)

    def make_ref(self) -> Reference:
        """A reference unique to this node run (creation and a counter)."""
        return Reference(self.atom(), self.creation, ref_ids(next(self._ids)))

    def owns(self, ref: Reference) -> bool:
        """Whether ``ref`` was made by this node run (our name and creation)."""
        return ref.creation == self.creation and ref.node == self.name

    def make_pid(self) -> Pid:
        n = next(self._ids)
        return Pid(self.atom(), n & 0x7FFF, n >> 15 & 0x1FFF, self.creation)
