"""Import boundaries: the codec and the sans-IO protocol load without zarr, numpy or the node;
the package's names load on first use and are all still there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import pyrlang_zarr as pz
import pyrlang_zarr.erldist

ROOT = Path(__file__).resolve().parent.parent

# Heavy third-party packages, and the parts of the stdlib and of our own package that only
# the node (asyncio, sockets, threads) or the zarr layer need.
ZARR_NUMPY = {"zarr", "numpy"}
IO = {"asyncio", "socket", "selectors", "ssl", "threading", "concurrent.futures"}
NODE = {
    "pyrlang_zarr.erldist.node",
    "pyrlang_zarr.erldist.connection",
    "pyrlang_zarr.erldist.io_thread",
    "pyrlang_zarr.erldist.mailbox",
    "pyrlang_zarr.erldist.node_registry",
    "pyrlang_zarr.erldist.peers",
    "pyrlang_zarr.erldist.calls",
    "pyrlang_zarr.erldist.handoff",
    "pyrlang_zarr.erldist.epmd",
}
UPPER = {"pyrlang_zarr.array", "pyrlang_zarr.store", "pyrlang_zarr.mnesia"}


def imported_by(statement: str) -> set[str]:
    """Modules a fresh interpreter loads for ``statement`` (beyond what it had at start)."""
    code = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        f"{statement}\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    # run in ROOT: ``-c`` puts the working directory first on sys.path, so this tree is tested
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def hits(loaded: set[str], forbidden: set[str]) -> set[str]:
    """Members of ``loaded`` that are, or are inside, a ``forbidden`` module."""
    return {m for m in loaded for f in forbidden if m == f or m.startswith(f + ".")}


def test_term_loads_no_zarr_numpy_or_node() -> None:
    loaded = imported_by("import pyrlang_zarr.term")
    assert "pyrlang_zarr.term.decode" in loaded  # the codec itself did load
    assert not hits(loaded, ZARR_NUMPY | IO | NODE | UPPER)


def test_sans_io_protocol_loads_no_sockets_threads_or_node() -> None:
    stmt = "import pyrlang_zarr.erldist.handshake, pyrlang_zarr.erldist.framing"
    loaded = imported_by(stmt)
    assert "pyrlang_zarr.erldist.handshake" in loaded
    assert not hits(loaded, ZARR_NUMPY | IO | NODE | UPPER | {"pyrlang_zarr.term"})


def test_package_import_is_cheap() -> None:
    loaded = imported_by("import pyrlang_zarr")
    assert not hits(loaded, ZARR_NUMPY | IO | NODE | UPPER | {"pyrlang_zarr.term"})
    assert {m for m in loaded if m.startswith("pyrlang_zarr")} == {
        "pyrlang_zarr",
        "pyrlang_zarr._lazy",
        "pyrlang_zarr.errors",
    }


def test_first_use_loads_the_home_module() -> None:
    assert "pyrlang_zarr.term.types" in imported_by("import pyrlang_zarr; pyrlang_zarr.Atom")
    assert "zarr" in imported_by("from pyrlang_zarr import create")
    loaded = imported_by("from pyrlang_zarr.erldist import Node")
    assert "pyrlang_zarr.erldist.node" in loaded and not hits(loaded, ZARR_NUMPY)


EXPORTS = [
    "Atom",
    "AuthenticationError",
    "ChangeEvent",
    "ExportFun",
    "ImproperList",
    "MnesiaArray",
    "MnesiaStore",
    "Node",
    "NodeDown",
    "NodeUnreachable",
    "NotFound",
    "Pid",
    "Port",
    "Process",
    "PyrlangZarrError",
    "Reference",
    "RpcError",
    "RpcTimeout",
    "TableNotFound",
    "Transaction",
    "TransactionError",
    "Watch",
    "create",
    "errors",
    "get_slices",
    "open",
    "transaction",
]


def test_every_export_is_still_there() -> None:
    from pyrlang_zarr.array import MnesiaArray, create, open
    from pyrlang_zarr.erldist.node import Node, Process
    from pyrlang_zarr.store import MnesiaStore
    from pyrlang_zarr.term import types

    assert sorted(pz.__all__) == EXPORTS
    assert set(EXPORTS) <= set(dir(pz))
    namespace: dict[str, object] = {}
    exec("from pyrlang_zarr import *", namespace)
    assert set(EXPORTS) <= set(namespace)
    for name in EXPORTS:
        assert namespace[name] is getattr(pz, name)
    assert (pz.create, pz.open, pz.MnesiaArray) == (create, open, MnesiaArray)
    assert (pz.MnesiaStore, pz.Node, pz.Process) == (MnesiaStore, Node, Process)
    assert pz.Atom is types.Atom and pz.errors.NodeDown is pz.NodeDown
    from pyrlang_zarr.transactions import Transaction, get_slices, transaction
    from pyrlang_zarr.watch import ChangeEvent, Watch

    assert (pz.transaction, pz.get_slices, pz.Transaction) == (transaction, get_slices, Transaction)
    assert (pz.Watch, pz.ChangeEvent) == (Watch, ChangeEvent)
    assert (pyrlang_zarr.erldist.Node, pyrlang_zarr.erldist.Process) == (Node, Process)
    assert {"Node", "Process"} <= set(dir(pyrlang_zarr.erldist))


def test_unknown_names_are_attribute_errors() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = pz.nothing_here
    with pytest.raises(ImportError):
        exec("from pyrlang_zarr.erldist import nothing_here", {})
