"""``StoreSettings``: where a store's records live and how it talks to the cluster.

One frozen value, validated once, shared by :class:`~pyrlang_zarr.store.MnesiaStore`
(construction, pickling, ``with_read_only``) and the array API's ``create``/``open``. The
cookie is carried (a pickled store must connect again) but is neither shown nor compared:
two stores of the same array are equal whoever's cookie they hold. Whether a store may
write is not a setting: it is zarr's ``read_only``, on the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pyrlang_zarr.erldist.node import split_node_name
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
    bounds each call (seconds, ``None``: no bound). ``cookie`` defaults as
    :class:`~pyrlang_zarr.Node`'s.
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
    cookie: str | None = field(repr=False, compare=False)

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
        cookie: str | None = None,
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
        if cookie is not None and not isinstance(cookie, str):
            raise TypeError("cookie must be a str")
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
        put(self, "cookie", cookie)
