"""The README's main command and the examples run end to end on clusters they start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.erlang, pytest.mark.slow]


def run(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_main_job() -> None:
    out = run("-m", "pyrlang_zarr", "demo")
    assert out.strip().endswith("done")
    assert out.count("identical = True") == 2


def test_seed_example() -> None:
    assert "sum = 49995000" in run("examples/seed_example.py")


def test_replicated_example() -> None:
    out = run("examples/replicated.py")
    assert out.count("identical = True") == 3 and "after the kill" in out


def test_plain_zarr_example() -> None:
    out = run("examples/plain_zarr.py")
    assert "spectrometer-7" in out and "'temperature/zarr.json'" in out
