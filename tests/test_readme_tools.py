"""Every code block of the tools section runs as shown, in order, like a user would run it:
a fresh HOME (its ~/.erlang.cookie made by `cluster up`), `pyrlang-zarr` on PATH, and the
package's fsspec entry point visible as after `pip install`.

The section lives in TOOLS_README_SECTION.md until it is merged into README.md, between
``<!-- tools:begin -->`` and ``<!-- tools:end -->``; the test reads whichever exists.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.erlang

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def section() -> str | None:
    own = ROOT / "TOOLS_README_SECTION.md"
    if own.exists():
        return own.read_text()
    found = re.search(
        r"<!-- tools:begin -->(.*)<!-- tools:end -->", (ROOT / "README.md").read_text(), re.S
    )
    return found.group(1) if found else None


def blocks() -> list[tuple[str, str]]:
    text = section()
    return [] if text is None else [(m.group(1), m.group(2)) for m in BLOCK.finditer(text)]


def installed_like(tmp: Path) -> Path:
    """A bin directory with the console script, and a dist-info with the entry points."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    site = tmp / "site"
    info = site / "pyrlang_zarr_readme-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pyrlang-zarr-readme\nVersion: 0\n")
    groups = "".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items())
        for group, eps in project["entry-points"].items()
    )
    (info / "entry_points.txt").write_text(groups)
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for name, target in project["scripts"].items():
        module, func = target.split(":")
        script = bin_dir / name
        script.write_text(
            f"#!{sys.executable}\nimport sys\nfrom {module} import {func}\nsys.exit({func}())\n"
        )
        script.chmod(0o755)
    return site


@pytest.mark.skipif(not blocks(), reason="no tools section found")
def test_every_block_runs_as_shown(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    site = installed_like(tmp_path)
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("ERLANG_COOKIE", "RELEASE_COOKIE", "XDG_STATE_HOME", "PYRLANG_ZARR_CLUSTER_DIR")
    }
    env.update(
        HOME=str(home),
        PATH=f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}",
        PYTHONPATH=f"{ROOT}{os.pathsep}{site}",
    )
    host = socket.gethostname().split(".")[0]
    try:
        for i, (kind, code) in enumerate(blocks()):
            argv = ["bash", "-euo", "pipefail", "-c", code] if kind == "bash" else [sys.executable]
            done = subprocess.run(
                argv,
                input=code if kind == "python" else None,
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert done.returncode == 0, (
                f"block {i} ({kind}) failed with {done.returncode}:\n{code}\n"
                f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
            )
    finally:  # whatever the blocks left running
        subprocess.run(
            [sys.executable, "-m", "pyrlang_zarr", "cluster", "down"],
            env=env,
            cwd=work,
            capture_output=True,
            timeout=120,
            check=False,
        )
        stop = f"rpc:call('alpha@{host}', init, stop, []), halt()."
        subprocess.run(
            [
                "erl",
                "-sname",
                f"pzstop{secrets.token_hex(3)}",
                "-hidden",
                "-noinput",
                "-eval",
                stop,
            ],
            env=env,
            cwd=work,
            capture_output=True,
            timeout=60,
            check=False,
        )
