"""The markers' promise: without Erlang (or network namespaces) the suite ends in skips that
say what is missing, never in failures or errors; in CI a missing ``erl`` stops the run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def path_without(tool: str, tmp_path: Path) -> str:
    """A PATH with everything on ours except ``tool`` (one folder of symlinks)."""
    bin_dir = tmp_path / f"bin-without-{tool}"
    bin_dir.mkdir(parents=True)
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not folder or not Path(folder).is_dir():
            continue
        for entry in Path(folder).iterdir():
            link = bin_dir / entry.name
            if entry.name != tool and not link.exists() and not link.is_symlink():
                link.symlink_to(entry)
    return str(bin_dir)


def pytest_run(path: str, *args: str, ci: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_CURRENT_TEST")}
    env["PATH"] = path
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )


@pytest.mark.slow
def test_whole_suite_without_erl_only_skips(tmp_path: Path) -> None:
    done = pytest_run(path_without("erl", tmp_path), "--deselect", "tests/test_markers.py")
    last = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # "2 xfailed" (expected failures) is no failure: whole words only
    assert not re.search(r"\b(failed|errors?)\b", last) and "skipped" in last, last
    assert "tests marked erlang: needs Erlang/OTP: `erl` is not on PATH" in done.stdout


def test_ci_without_erl_is_a_usage_error(tmp_path: Path) -> None:
    done = pytest_run(path_without("erl", tmp_path), "tests/test_cluster.py", ci=True)
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    assert "CI must run the integration tests: erl is missing" in done.stderr


def test_netns_tests_skip_with_what_is_missing(tmp_path: Path) -> None:
    done = pytest_run(
        path_without("ip", tmp_path), "tests/test_netns.py", "tests/test_netns_faults.py"
    )
    last = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "passed" not in last and "failed" not in last and "error" not in last, last
    # root: `ip` is what is missing; not root: root is; no erl: that is said first
    assert "tests marked netns: needs network namespaces:" in done.stdout or (
        "tests marked erlang: needs Erlang/OTP" in done.stdout
    )


def test_every_marker_is_registered(pytestconfig: pytest.Config) -> None:
    registered = {line.split(":")[0] for line in pytestconfig.getini("markers")}
    assert {"erlang", "netns", "slow"} <= registered
    assert pytestconfig.option.strict_markers
