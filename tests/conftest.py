"""Shared fixtures (real Erlang nodes started for the test run), and what the markers mean.

Markers, registered in pyproject.toml (``--strict-markers``):

- ``erlang``: needs real Erlang/OTP nodes. Skipped, saying so, when ``erl`` is not on PATH;
  in CI (``CI`` set) a missing ``erl`` stops the run instead.
- ``netns``: needs root, ``ip netns``, ``unshare`` and ``erl`` (separate hosts as network
  namespaces). Skipped with what is missing; in CI the tests run and fail with it.
- ``slow``: about 5 s or more each (tick timeouts, faults, state machines, fuzzing, whole
  examples); ``-m "not slow"`` for a quick run.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest

from pyrlang_zarr import Node
from pyrlang_zarr.testing.cluster import LocalCluster

ERLANG_MISSING = "needs Erlang/OTP: `erl` is not on PATH (Debian: apt-get install erlang-nox)"

_SKIPPED = pytest.StashKey[Counter[tuple[str, str]]]()


def _skip(config: pytest.Config, items: list[pytest.Item], marker: str, reason: str) -> None:
    for item in items:
        item.add_marker(pytest.mark.skip(reason=reason))
    config.stash.setdefault(_SKIPPED, Counter())[(marker, reason)] += len(items)


@pytest.hookimpl(trylast=True)  # after -m / -k have deselected what will not run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ci = bool(os.environ.get("CI"))
    erlang = [item for item in items if item.get_closest_marker("erlang")]
    no_erl = bool(erlang) and shutil.which(os.environ.get("PZ_ERL") or "erl") is None
    if no_erl:
        if ci:
            raise pytest.UsageError("CI must run the integration tests: erl is missing")
        _skip(config, erlang, "erlang", ERLANG_MISSING)
    netns = [
        item
        for item in items
        if item.get_closest_marker("netns") and not (no_erl and item.get_closest_marker("erlang"))
    ]
    if netns and not ci:
        from pyrlang_zarr.testing.netns import available

        reason = available()
        if reason is not None:
            _skip(config, netns, "netns", f"needs network namespaces: {reason}")


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """Two real nodes shared by every test module: tests must not stop or break them (a test
    that does starts a cluster of its own)."""
    with LocalCluster(n=2) as c:
        yield c


@pytest.fixture
async def node(cluster: LocalCluster) -> AsyncIterator[Node]:
    """A hidden node of our own, with ``cluster``'s cookie."""
    async with Node(cookie=cluster.cookie) as n:
        yield n


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests import attacks, faults

    if faults.REPORT:
        terminalreporter.section("faults injected and writes acknowledged / lost")
        for line in faults.table():
            terminalreporter.write_line(line)
    if attacks.REPORT:
        terminalreporter.section("hostile peers: attacks tried and their outcome")
        for line in attacks.table():
            terminalreporter.write_line(line)
    skipped = terminalreporter.config.stash.get(_SKIPPED, None)
    if skipped:
        terminalreporter.section("not run here")
        for (marker, reason), count in sorted(skipped.items()):
            terminalreporter.write_line(f"{count} tests marked {marker}: {reason}")
