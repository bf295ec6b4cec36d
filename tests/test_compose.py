"""docker-compose.yml describes the topology the multi-host tests build (no Docker here)."""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path
from typing import Any

import yaml

from pyrlang_zarr.testing.cluster import DIST_BUFFER_FLAGS, SMALL_MACHINE_FLAGS
from pyrlang_zarr.testing.netns import node_name

ROOT = Path(__file__).resolve().parent.parent
N = 3  # the netns fault tests run NetnsCluster(n=3)


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def erl_argv(service: dict[str, Any]) -> list[str]:
    """The erl command line inside ``sh -c '...'``, with compose's $$ unescaped."""
    outer = shlex.split(service["command"])
    assert outer[:2] == ["sh", "-c"]
    inner = shlex.split(outer[2].replace("$$", "$"))
    assert inner[:2] == ["exec", "erl"]
    return inner[2:]


def test_three_erlang_hosts_named_as_the_harness_names_them() -> None:
    services = compose()["services"]
    expected = [node_name(i) for i in range(N)]
    names = []
    for i in range(1, N + 1):
        svc = services[f"host{i}"]
        assert svc["hostname"] == f"host{i}"
        assert svc["image"].startswith("erlang:25")
        argv = erl_argv(svc)
        names.append(argv[argv.index("-sname") + 1])
        assert argv[argv.index("-setcookie") + 1] == "$ERLANG_COOKIE"
        assert "-noinput" in argv
        # the same scheduler and distribution-buffer flags as the test clusters
        joined = " ".join(argv)
        assert " ".join(SMALL_MACHINE_FLAGS) in joined and " ".join(DIST_BUFFER_FLAGS) in joined
        # its own Mnesia directory on its own volume
        mnesia_dir = argv[argv.index("-mnesia") + 2].strip('"')
        volume = svc["volumes"][0]
        assert volume == f"mnesia-host{i}:{mnesia_dir}"
    assert names == expected == [f"node{i}@host{i}" for i in range(1, N + 1)]
    assert set(compose()["volumes"]) == {f"mnesia-host{i}" for i in range(1, N + 1)}


def test_one_cookie_for_every_service() -> None:
    services = compose()["services"]
    cookies = {svc["environment"]["ERLANG_COOKIE"] for svc in services.values()}
    assert len(cookies) == 1


def test_client_runs_an_example_against_those_nodes() -> None:
    client = compose()["services"]["client"]
    assert set(client["depends_on"]) == {f"host{i}" for i in range(1, N + 1)}
    script = shlex.split(client["command"])[2].replace("$$", "$")
    assert 'pip install -q -e ".[test]"' in script
    run = shlex.split(script.split("&&")[-1])
    assert run[:2] == ["python", "examples/replicated.py"]
    assert run[run.index("--nodes") + 1 : run.index("--nodes") + 1 + N] == [
        f"node{i}@host{i}" for i in range(1, N + 1)
    ]
    # the example's own parser accepts the command line compose gives it
    spec = importlib.util.spec_from_file_location("replicated", ROOT / "examples/replicated.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    args = example.make_parser().parse_args(run[2:])
    assert args.nodes == [node_name(i) for i in range(N)]
    assert args.cookie == "$ERLANG_COOKIE"
