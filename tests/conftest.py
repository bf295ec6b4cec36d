"""Shared fixtures: real Erlang nodes started for the test run, stopped afterwards."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator

import pytest

from pyrlang_zarr import Node
from pyrlang_zarr.testing.cluster import LocalCluster


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if shutil.which("erl") is None:
        if os.environ.get("CI"):
            raise pytest.UsageError("CI must run the integration tests: erl is missing")
        skip = pytest.mark.skip(reason="needs Erlang/OTP: install Debian's erlang-nox")
        for item in items:
            if "cluster" in getattr(item, "fixturenames", ()):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """Two real nodes shared by the tests that do not stop or break nodes."""
    with LocalCluster(n=2) as c:
        yield c


@pytest.fixture
async def node(cluster: LocalCluster) -> AsyncIterator[Node]:
    async with Node(cookie=cluster.cookie) as n:
        yield n


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests import faults

    if faults.REPORT:
        terminalreporter.section("faults injected and writes acknowledged / lost")
        for line in faults.table():
            terminalreporter.write_line(line)
