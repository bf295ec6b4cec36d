"""Every term type through a real OTP node: as a distribution message, and through Erlang's
own ``term_to_binary/1`` and ``binary_to_term/1``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from pyrlang_zarr import Atom, Node
from pyrlang_zarr.erldist.node_registry import shared_node
from pyrlang_zarr.term import ImproperList, ListKey, OpaqueFun, decode_term, encode
from pyrlang_zarr.testing.cluster import LocalCluster
from tests.test_term_properties import FUNS, normalised, terms

pytestmark = pytest.mark.erlang


def same(a: Any, b: Any) -> bool:
    """Type-checking equality; maps compare without regard to key order (Erlang sorts)."""
    if type(a) is not type(b):
        return False
    if type(a) in (tuple, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return len(a) == len(b) and all(
            any(same(k, j) and same(v, w) for j, w in b.items()) for k, v in a.items()
        )
    if type(a) is ImproperList:
        return same(a.elements, b.elements) and same(a.tail, b.tail)
    if type(a) is float:
        return a.hex() == b.hex()
    if type(a) is OpaqueFun:
        return True  # encoders differ in a fun's bytes: the node compares funs (=:=)
    return bool(a == b)


async def through_node(node: Node, peer: str, term: Any) -> None:
    expected = normalised(term)
    # as a message: we encode, the node decodes, re-encodes its reply, we decode
    echoed = await node.rpc(peer, "erlang", "hd", [[term]])
    assert same(echoed, expected), (echoed, expected)
    # Erlang's encoder: the node encodes with term_to_binary/1, we decode the bytes
    theirs = await node.rpc(peer, "erlang", "term_to_binary", [term])
    ours = decode_term(theirs)
    assert same(ours, expected)
    # Erlang's decoder: binary_to_term/1 reads the bytes we produced
    back = await node.rpc(peer, "erlang", "binary_to_term", [encode(term)])
    assert same(back, expected)
    # and by Erlang's own exact equality, every path gives the term we started from
    for value in (echoed, ours, back):
        assert await node.rpc(peer, "erlang", "=:=", [value, term]) is True


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(terms)
def test_generated_terms_round_trip_through_a_real_node(cluster: LocalCluster, term: Any) -> None:
    node = shared_node(cluster.cookie)
    asyncio.run(through_node(node, cluster.nodes[0], term))


async def test_real_closures_and_node_made_terms(node: Node, cluster: LocalCluster) -> None:
    peer = cluster.nodes[0]
    for fun in FUNS:
        await through_node(node, peer, fun)
    # terms only a node makes: its pids, refs, ports, a real fun, compressed binaries
    made = await node.rpc(peer, "erlang", "list_to_tuple", [[]])
    assert made == ()
    pid = await node.rpc(peer, "erlang", "whereis", [Atom("rex")])
    ref = await node.rpc(peer, "erlang", "make_ref", [])
    port = await node.rpc(peer, "erlang", "hd", [await node.rpc(peer, "erlang", "ports", [])])
    fun = await node.rpc(peer, "erlang", "make_fun", [Atom("lists"), Atom("seq"), 2])
    for term in (pid, ref, port, fun, (pid, [ref, {port: fun}])):
        await through_node(node, peer, term)
    blob = await node.rpc(
        peer, "erlang", "term_to_binary", [[b"x" * 5000, list(range(300))], [Atom("compressed")]]
    )
    assert blob[1] == 80  # a compressed term
    assert decode_term(blob) == [b"x" * 5000, list(range(300))]
    big = 2**3000 + 7
    assert await node.rpc(peer, "erlang", "-", [big, 7]) == 2**3000
    assert await node.rpc(peer, "erlang", "float", [-(2**60)]) == -(2.0**60)


async def test_maps_with_string_keys_from_a_real_node(node: Node, cluster: LocalCluster) -> None:
    peer = cluster.nodes[0]
    made = await node.rpc(peer, "maps", "from_list", [[(list(b"name"), b"x"), ([1, [2]], 2)]])
    assert made == {ListKey(b"name"): b"x", ListKey([1, ListKey([2])]): 2}
    assert await node.rpc(peer, "erlang", "map_get", [list(b"name"), made]) == b"x"
    assert await node.rpc(peer, "erlang", "map_size", [made]) == 2  # it went back as a map
