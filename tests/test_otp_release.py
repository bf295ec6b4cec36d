"""Which Erlang/OTP the test nodes run.

``$PZ_ERL`` chooses the ``erl`` that :class:`LocalCluster` starts (``.ci/otp27.sh`` provisions
OTP 27, ``.ci/otp27-erl`` runs it); ``$PZ_OTP_RELEASE`` makes this test fail unless the nodes
really run that release, so a CI pass meant for a newer OTP cannot quietly test the old one.
"""

from __future__ import annotations

import os

import pytest

from pyrlang_zarr import Atom, Node
from pyrlang_zarr.testing.cluster import LocalCluster

pytestmark = pytest.mark.erlang

OLDEST = 25
"""The oldest release the suite is run on."""

# Evaluated on a node: the releases of the throwaway hidden helper nodes erl_eval starts.
HELPER_RELEASES = (
    "[erpc:call(N, erlang, system_info, [otp_release]) || N <- nodes(hidden),"
    ' lists:prefix("pzeval-", atom_to_list(N))]'
)


async def test_nodes_and_helper_run_the_chosen_otp(node: Node, cluster: LocalCluster) -> None:
    releases = set()
    for peer in cluster.nodes:
        answer = await node.rpc(peer, "erlang", "system_info", [Atom("otp_release")])
        releases.add(int(bytes(answer)))
    assert len(releases) == 1, releases
    (release,) = releases
    expected = os.environ.get("PZ_OTP_RELEASE")
    if expected:
        assert release == int(expected), (
            f"nodes run OTP {release}, not {expected}; PZ_ERL={os.environ.get('PZ_ERL')!r}"
        )
    assert release >= OLDEST
    # erl_eval's helper node is started with the same erl as the nodes
    assert cluster.erl_eval(0, HELPER_RELEASES) == f'["{release}"]'
