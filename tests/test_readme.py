"""Every Python and shell block of README.md runs as shown, in order, like a reader would run
them: each ```python block as a script of its own, each ```bash block in ``bash -euo pipefail``,
in a fresh HOME (its ~/.erlang.cookie made by ``pyrlang-zarr cluster up``, the README's first
runnable block), with ``pyrlang-zarr`` and ``python`` on PATH and the package's fsspec entry
point visible as after ``pip install``.

A block is left out only when an HTML comment right before it says so, and why:
``<!-- not run: needs docker -->``. Blocks in other languages (```elixir, ```ini) are not run
here; the ```elixir block that creates ``from_elixir`` is stood in for by :data:`STAND_INS`,
which leaves in Mnesia what that block leaves (``exzarr=True`` writes the ``.zarray`` text
``ExZarr.save/2`` writes), so that the Python block reading it runs as shown.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

RUN = ("python", "bash")
NOT_RUN_HERE = ("elixir", "ini", "erlang")  # languages this test runs no block of
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.*?)\s*-->\s*\Z", re.DOTALL)

# ExZarr's side of *Sharing arrays with ExZarr*, for a machine without Elixir: the records
# its block leaves (an array saved by ExZarr.save/2, 100x100 written at the origin).
STAND_INS = {
    'array_id: "from_elixir"': """
import socket

import numpy as np
import pyrlang_zarr.sync as pzs

host = socket.gethostname().split(".")[0]
arr = pzs.create("from_elixir", shape=(1000, 1000), chunks=(100, 100), dtype="float64",
                 exzarr=True, compressor="zstd", node=f"node1@{host}", overwrite=True)
arr[0:100, 0:100] = np.ones((100, 100))
""",
}


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int  # of the opening fence, 1-based
    not_run: str | None  # the reason given in a `<!-- not run: ... -->` right before it


def blocks(text: str | None = None) -> list[Block]:
    text = README.read_text() if text is None else text
    out = []
    for m in FENCE.finditer(text):
        before = text[: m.start()]
        reason = NOT_RUN.search(before[-300:])
        out.append(
            Block(
                m.group(1).strip(),
                m.group(2),
                before.count("\n") + 1,
                None if reason is None else reason.group(1),
            )
        )
    return out


def to_run() -> list[Block]:
    return [b for b in blocks() if b.lang in RUN and b.not_run is None]


def test_every_block_is_run_or_says_why_not() -> None:
    found = blocks()
    assert len(found) >= 15
    for b in found:
        where = f"README.md:{b.line} (```{b.lang})"
        assert b.lang in RUN + NOT_RUN_HERE, (
            f"{where}: unknown language, mark it ```bash or ```python so it runs, or add it "
            "to NOT_RUN_HERE"
        )
        assert b.not_run is None or b.not_run, f"{where}: `not run:` needs a reason"
        assert b.not_run is None or b.lang in RUN, f"{where}: a `not run` on a block never run"
    assert len(to_run()) >= 12
    elixir = [b for b in found if b.lang == "elixir"]
    for key in STAND_INS:
        assert sum(key in b.code for b in elixir) == 1, f"no ```elixir block with {key}"


def test_blocks_are_scripts() -> None:
    """Top-level ``await`` is a SyntaxError in a script: every Python block compiles as one
    (and every shell block parses)."""
    for b in to_run():
        if b.lang == "python":
            compile(b.code, f"README.md:{b.line}", "exec")
        else:
            done = subprocess.run(
                ["bash", "-n"], input=b.code, capture_output=True, text=True, check=False
            )
            assert done.returncode == 0, f"README.md:{b.line}: {done.stderr}"


def test_the_seed_api_is_shown_async() -> None:
    """The first Python block is the seed's contract: the async create/open/slices."""
    first = next(b for b in to_run() if b.lang == "python")
    for call in (
        "await pz.create(",
        "await arr.set_slice(",
        "await arr.get_slice(",
        "await pz.open(",
    ):
        assert call in first.code


def installed_like(tmp: Path) -> Path:
    """A bin directory with the console script and ``python``, and a dist-info with the
    entry points."""
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
    (bin_dir / "python").symlink_to(sys.executable)  # as in a virtual environment
    return site


@pytest.mark.erlang
@pytest.mark.slow
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
    steps: list[tuple[str, str, str]] = []  # (what, language, code)
    for b in blocks():
        if b.not_run is not None:
            continue
        if b.lang in RUN:
            steps.append((f"README.md:{b.line}", b.lang, b.code))
        for key, code in STAND_INS.items():
            if b.lang == "elixir" and key in b.code:
                steps.append((f"stand-in for README.md:{b.line}", "python", code))
    try:
        for what, lang, code in steps:
            argv = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable]
            done = subprocess.run(
                argv,
                input=code if lang == "python" else None,
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert done.returncode == 0, (
                f"{what} ({lang}) failed with {done.returncode}:\n{code}\n"
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
