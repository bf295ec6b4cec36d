"""``StoreSettings``: where a store's records live and how it talks to the cluster.

One frozen value, validated once, shared by :class:`~pyrlang_zarr.store.MnesiaStore`
(construction, pickling, ``with_read_only``) and the array API's ``create``/``open``. The
cookie and the TLS settings are neither shown nor compared: two stores of the same array are
equal whoever's cookie they hold and however they connect. Whether a store may write is not
a setting: it is zarr's ``read_only``, on the store.

Pickled (dask task graphs, multiprocessing), the settings leave the cookie out: a worker
finds it as ``erl`` does (``ERLANG_COOKIE``, ``RELEASE_COOKIE``, ``~/.erlang.cookie``), so a
task graph does not carry the cluster's secret to every worker, log and cache it passes.
``pickle_cookie=True`` carries it, for workers that have no other way. TLS settings pickle as
the paths of a :class:`~pyrlang_zarr.erldist.tls.TlsConfig` (an optfile path is read into
one when the settings are made); an ``ssl.SSLContext`` does not pickle, and says so.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pyrlang_zarr.erldist.node import split_node_name
from pyrlang_zarr.erldist.tls import TlsConfig, normalize
from pyrlang_zarr.mnesia.setup import check_frag_args
from pyrlang_zarr.term import Atom

DEFAULT_TABLE = "zarr_storage"


@dataclass(frozen=True, slots=True, init=False)
class StoreSettings:
    """The settings of one array's store.

    ``array_id`` names the array (records are keyed ``{array_id, ...}``, the id a binary,
    or an atom if it is an :class:`~pyrlang_zarr.Atom`, as Elixir applications may key
    ExZarr arrays) in Mnesia table ``table_name``. ``node`` is the Erlang node to talk to
    (default: the first of ``nodes``); ``nodes`` the table's replicas: when given, Mnesia
    and the table are set up on them when a writable store opens, and calls fail over among
    them. ``ram_copies`` picks RAM-only replicas for a new table; ``majority`` makes its
    writes need a majority of replicas; ``durable`` forces each commit to disc; ``timeout``
    bounds each call (seconds, ``None``: no bound). ``fragments=N`` creates the table in N
    fragments over ``nodes`` (``mnesia_frag``), each on ``frag_copies`` nodes;
    ``disc_only_copies`` keeps a new table's records on disc only. ``cookie`` and ``tls`` default as
    :class:`~pyrlang_zarr.Node`'s (``tls``: a ``TlsConfig``, an ``ssl_dist_optfile`` path,
    an ``ssl.SSLContext``, ``False`` for plain TCP, ``None`` for
    ``$PYRLANG_ZARR_SSL_DIST_OPTFILE`` if set). ``pickle_cookie=True`` keeps the cookie in
    pickles (by default a pickle holds none: see the module's docstring).
    """

    array_id: str
    atom_id: bool = field(init=False, repr=False)  # Atom("x") == "x": compared apart
    node: str
    nodes: tuple[str, ...]
    table_name: str
    ram_copies: bool
    majority: bool
    durable: bool
    timeout: float | None
    fragments: int | None
    frag_copies: int | None
    disc_only_copies: bool
    cookie: str | None = field(repr=False, compare=False)
    tls: TlsConfig | ssl.SSLContext | bool | None = field(repr=False, compare=False)
    pickle_cookie: bool = field(repr=False, compare=False)

    def __init__(
        self,
        array_id: str,
        *,
        node: str | None = None,
        nodes: Sequence[str] | None = None,
        table_name: str = DEFAULT_TABLE,
        ram_copies: bool = False,
        majority: bool = False,
        durable: bool = False,
        timeout: float | None = 60.0,
        fragments: int | None = None,
        frag_copies: int | None = None,
        disc_only_copies: bool = False,
        cookie: str | None = None,
        tls: Any = None,
        pickle_cookie: bool = False,
    ) -> None:
        if not isinstance(array_id, str):
            raise TypeError(f"array_id must be a str, not {type(array_id).__name__}")
        if not array_id:
            raise ValueError("array_id must be a non-empty string")
        if nodes is not None:
            if isinstance(nodes, str) or not isinstance(nodes, Sequence) or not nodes:
                raise ValueError(f"nodes must be a non-empty list of node names, got {nodes!r}")
            replicas = tuple(dict.fromkeys(nodes))
        else:
            replicas = ()
        if node is None:
            if not replicas:
                raise ValueError(
                    "pass node='name@host' (the Erlang node to talk to) or nodes=[...]"
                )
            node = replicas[0]
        for name in (node, *replicas):
            split_node_name(name)  # TypeError/ValueError naming the bad one
        if not isinstance(table_name, str) or not table_name:
            raise ValueError(f"table_name must be a non-empty str, got {table_name!r}")
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not timeout > 0  # NaN too
        ):
            raise ValueError(
                f"timeout must be a positive number of seconds or None, got {timeout!r}"
            )
        check_frag_args(
            replicas or (node,), fragments, frag_copies, bool(ram_copies), bool(disc_only_copies)
        )
        if cookie is not None and not isinstance(cookie, str):
            raise TypeError("cookie must be a str")
        tls = normalize(tls)  # an optfile is read now: a bad one fails before anything is sent
        put = object.__setattr__  # frozen: set once, here
        put(self, "array_id", array_id)
        put(self, "atom_id", type(array_id) is Atom)
        put(self, "node", node)
        put(self, "nodes", replicas)
        put(self, "table_name", table_name)
        put(self, "ram_copies", bool(ram_copies))
        put(self, "majority", bool(majority))
        put(self, "durable", bool(durable))
        put(self, "timeout", timeout)
        put(self, "fragments", fragments)
        put(self, "frag_copies", frag_copies)
        put(self, "disc_only_copies", bool(disc_only_copies))
        put(self, "cookie", cookie)
        put(self, "tls", tls)
        put(self, "pickle_cookie", bool(pickle_cookie))

    def __copy__(self) -> StoreSettings:
        return self  # frozen: a copy is the same value (and, in-process, keeps the cookie)

    def __deepcopy__(self, memo: dict[int, Any]) -> StoreSettings:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle without the cookie unless ``pickle_cookie``; refuse an ``SSLContext``."""
        if isinstance(self.tls, ssl.SSLContext):
            raise TypeError(
                "a store made with tls=ssl.SSLContext cannot be pickled (an SSLContext does "
                "not pickle): pass TlsConfig(certfile, keyfile, cafile) or the cluster's "
                "ssl_dist_optfile, which pickle as paths"
            )
        options = {
            "node": self.node,
            "nodes": self.nodes or None,
            "table_name": self.table_name,
            "ram_copies": self.ram_copies,
            "majority": self.majority,
            "durable": self.durable,
            "timeout": self.timeout,
            "fragments": self.fragments,
            "frag_copies": self.frag_copies,
            "disc_only_copies": self.disc_only_copies,
            "cookie": self.cookie if self.pickle_cookie else None,
            "tls": self.tls,
            "pickle_cookie": self.pickle_cookie,
        }
        return (_rebuild, (self.array_id, options))


def _rebuild(array_id: str, options: dict[str, Any]) -> StoreSettings:
    return StoreSettings(array_id, **options)
