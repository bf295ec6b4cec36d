"""Errors a user can act on: a stopped Mnesia, a RAM schema, failed reads; one warning per
failover; the library's NullHandler."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest

import pyrlang_zarr as pz
from pyrlang_zarr.errors import MnesiaNotRunning, TransactionError
from pyrlang_zarr.testing.cluster import LocalCluster

pytestmark = pytest.mark.erlang


def test_the_library_logs_to_a_null_handler() -> None:
    handlers = logging.getLogger("pyrlang_zarr").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


async def test_stopped_mnesia_then_a_ram_schema() -> None:
    async with LocalCluster(n=1) as c:
        node = c.nodes[0]
        with pytest.raises(MnesiaNotRunning) as stopped:
            await pz.open("x", node=node, cookie=c.cookie)
        text = str(stopped.value)
        assert "Mnesia is not running on" in text and "nodes=[...]" in text
        assert "nothing was written" in text and "may or may not" not in text  # a read

        c.erl_eval(0, "mnesia:start()")  # no disc schema: Mnesia runs on a RAM one
        with pytest.raises(TransactionError) as ram:
            await pz.create("x", shape=(4,), chunks=(2,), node=node, cookie=c.cookie, nodes=[node])
        assert "RAM schema" in str(ram.value) and "ram_copies=True" in str(ram.value)
        arr = await pz.create(
            "x", shape=(4,), chunks=(2,), node=node, cookie=c.cookie, nodes=[node], ram_copies=True
        )
        await arr.set_slice(np.ones(4))
        assert (await arr.get_slice()).sum() == 4


async def test_one_warning_per_failover(caplog: pytest.LogCaptureFixture) -> None:
    async with LocalCluster(n=2) as c:
        arr = await pz.create(
            "fo", shape=(8,), chunks=(2,), node=c.nodes[0], cookie=c.cookie, nodes=c.nodes
        )
        await arr.set_slice(np.arange(8.0))
        assert (await arr.get_slice()).sum() == 28
        await asyncio.to_thread(c.kill, 0)
        with caplog.at_level(logging.WARNING, logger="pyrlang_zarr"):
            results = await asyncio.gather(*(arr.get_slice() for _ in range(8)))
            await arr.set_slice(np.zeros(2), (0,), (2,))
        assert all(r.sum() == 28 for r in results)
        warnings = [r for r in caplog.records if r.name.startswith("pyrlang_zarr")]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert f"{c.nodes[1]} now coordinates" in warnings[0].getMessage()
