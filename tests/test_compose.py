"""docker-compose.yml describes the topology the multi-host tests build (no Docker here), and
docker-compose.tls.yml the same over TLS distribution. The nodes' entrypoint script is run
for real (with a stand-in ``erl``): the cookie reaches ``~/.erlang.cookie``, never argv."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pyrlang_zarr.erldist.tls import OPTFILE_ENV, read_optfile
from pyrlang_zarr.testing import certs
from pyrlang_zarr.testing.cluster import DIST_BUFFER_FLAGS, SMALL_MACHINE_FLAGS, LocalCluster
from pyrlang_zarr.testing.netns import node_name

ROOT = Path(__file__).resolve().parent.parent
N = 3  # the netns fault tests run NetnsCluster(n=3)
REQUIRED = re.compile(r"^\$\{ERLANG_COOKIE:\?[^}]+\}$")  # set, or compose refuses to start


def compose(name: str = "docker-compose.yml") -> dict[str, Any]:
    return yaml.safe_load((ROOT / name).read_text())


def node_script(service: dict[str, Any]) -> str:
    """The script inside ``sh -c '...'``, with compose's $$ unescaped."""
    outer = shlex.split(service["command"])
    assert outer[:2] == ["sh", "-c"]
    return outer[2].replace("$$", "$")


def erl_argv(service: dict[str, Any]) -> list[str]:
    """The erl command line the script ends with (``exec erl ...``)."""
    inner = shlex.split(node_script(service).split("&&")[-1])
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
        assert "-noinput" in argv
        # server flags; the test clusters' small-machine flags only on request (ERL_AFLAGS)
        joined = " ".join(argv)
        assert " ".join(DIST_BUFFER_FLAGS) in joined
        assert not set(SMALL_MACHINE_FLAGS[::2]) & set(argv)
        assert svc["environment"]["ERL_AFLAGS"] == "${PZ_SMALL_MACHINE_FLAGS:-}"
        assert "-kernel inet_dist_listen_min 9100 inet_dist_listen_max 9100" in joined
        # its own Mnesia directory on its own volume
        mnesia_dir = argv[argv.index("-mnesia") + 2].strip('"')
        volume = svc["volumes"][0]
        assert volume == f"mnesia-host{i}:{mnesia_dir}"
    assert names == expected == [f"node{i}@host{i}" for i in range(1, N + 1)]
    assert set(compose()["volumes"]) == {f"mnesia-host{i}" for i in range(1, N + 1)}


def test_one_cookie_required_for_every_service_and_never_on_a_command_line() -> None:
    services = compose()["services"]
    cookies = {svc["environment"]["ERLANG_COOKIE"] for svc in services.values()}
    assert len(cookies) == 1
    (cookie,) = cookies
    assert REQUIRED.match(cookie), f"no default cookie: {cookie}"  # not ${ERLANG_COOKIE:-...}
    for svc in services.values():
        assert "-setcookie" not in svc["command"] and "--cookie" not in svc["command"]


def test_node_entrypoint_puts_the_cookie_in_a_private_file(tmp_path: Path) -> None:
    """The host1 script, run with a stand-in ``erl`` that records its argv and environment."""
    bin_dir, home = tmp_path / "bin", tmp_path / "home"
    bin_dir.mkdir()
    home.mkdir()
    fake_erl = bin_dir / "erl"
    fake_erl.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$HOME/argv"\nenv > "$HOME/env"\n')
    fake_erl.chmod(0o755)
    cookie = "compose-cookie-7d1e"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home), "ERLANG_COOKIE": cookie}
    script = node_script(compose()["services"]["host1"])
    done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    path = home / ".erlang.cookie"
    assert path.read_text() == cookie
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert cookie not in (home / "argv").read_text()
    assert cookie not in (home / "env").read_text()  # dropped before erl starts
    assert "-sname\nnode1@host1\n" in (home / "argv").read_text()


def test_small_machine_flags_are_documented_as_the_test_clusters_use_them() -> None:
    header = (ROOT / "docker-compose.yml").read_text()
    assert f'export PZ_SMALL_MACHINE_FLAGS="{" ".join(SMALL_MACHINE_FLAGS)}"' in header
    assert "--exit-code-from client" in header


def test_host1_is_published_on_loopback_for_a_notebook() -> None:
    services = compose()["services"]
    assert services["host1"]["ports"] == ["127.0.0.1:4369:4369", "127.0.0.1:9100:9100"]
    assert all("ports" not in services[f"host{i}"] for i in range(2, N + 1))


def healthcheck_eval(service: dict[str, Any]) -> str:
    kind, command = service["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    argv = shlex.split(command.replace("$$", "$"))
    assert argv[:3] == ["erl", "-noshell", "-hidden"] and "-setcookie" not in argv
    return argv[argv.index("-eval") + 1]


@pytest.mark.erlang
def test_healthchecks_ping_their_node_for_real(tmp_path: Path) -> None:
    """Each node's healthcheck, run with a real ``erl`` against a real node (its name put in
    place of ``nodeN@hostN``): 0 while the node answers, 1 when no node has that name."""
    services = compose()["services"]
    with LocalCluster(n=1) as cluster:
        home = tmp_path / "home"
        home.mkdir()
        (home / ".erlang.cookie").write_text(cluster.cookie)
        (home / ".erlang.cookie").chmod(0o400)
        env = {**os.environ, "HOME": str(home)}
        for i in range(1, N + 1):
            expr = healthcheck_eval(services[f"host{i}"])
            assert f"'node{i}@host{i}'" in expr
            for target, status in ((cluster.nodes[0], 0), (f"gone@{cluster.host}", 1)):
                argv = ["erl", "-noshell", "-hidden", "-sname", f"hc{os.getpid()}{i}{status}"]
                done = subprocess.run(
                    [*argv, "-eval", expr.replace(f"node{i}@host{i}", target)],
                    env=env,
                    capture_output=True,
                    timeout=60,
                )
                assert done.returncode == status, done


def test_client_runs_an_example_against_those_nodes() -> None:
    client = compose()["services"]["client"]
    assert client["depends_on"] == {
        f"host{i}": {"condition": "service_healthy"} for i in range(1, N + 1)
    }
    script = shlex.split(client["command"])[2].replace("$$", "$")
    assert 'pip install -q -e ".[test]"' in script
    run = shlex.split(script.split("&&")[-1])
    assert run[:2] == ["python", "examples/replicated.py"]
    assert run[run.index("--nodes") + 1 : run.index("--nodes") + 1 + N] == [
        f"node{i}@host{i}" for i in range(1, N + 1)
    ]
    # the example's own parser accepts the command line compose gives it
    example = load_example("replicated")
    args = example.make_parser().parse_args(run[2:])
    assert args.nodes == [node_name(i) for i in range(N)]
    assert args.cookie_file is None  # the library reads ERLANG_COOKIE
    assert args.overwrite  # a second `compose up` on kept volumes writes the array again


def load_example(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


# -- over TLS: docker-compose.tls.yml on top ---------------------------------------------------


def test_tls_variant_runs_every_node_with_inet_tls_and_its_own_optfile() -> None:
    base, tls = compose()["services"], compose("docker-compose.tls.yml")["services"]
    for i in range(1, N + 1):
        svc = tls[f"host{i}"]
        flags = shlex.split(svc["environment"]["ERL_FLAGS"])
        assert flags == ["-proto_dist", "inet_tls", "-ssl_dist_optfile", f"/certs/host{i}.optfile"]
        assert "certs:/certs:ro" in svc["volumes"]
        assert svc["depends_on"]["certs"]["condition"] == "service_completed_successfully"
        assert f"host{i}" in base
    client = tls["client"]
    assert client["environment"][OPTFILE_ENV] == "/certs/client.optfile"
    assert "certs:/certs:ro" in client["volumes"]
    assert "certs" in compose("docker-compose.tls.yml")["volumes"]


def test_tls_certs_service_makes_what_the_nodes_and_the_client_read(tmp_path: Path) -> None:
    """Run the certs service's command here (into a temporary directory)."""
    command = compose("docker-compose.tls.yml")["services"]["certs"]["command"]
    made = re.search(r"python -m pyrlang_zarr\.testing\.certs (/certs(?: \w+)+)", command)
    assert made is not None
    _out_dir, *hosts = made.group(1).split()
    assert hosts == [f"host{i}" for i in range(1, N + 1)]
    assert certs.main([str(tmp_path), *hosts]) == 0
    for host in hosts:
        text = (tmp_path / f"{host}.optfile").read_text()
        for option in ("{verify, verify_peer}", "{fail_if_no_peer_cert, true}"):
            assert option in text
        node_side = read_optfile(tmp_path / f"{host}.optfile")
        assert node_side.certfile == str(tmp_path / f"{host}.pem")
        assert stat.S_IMODE(os.stat(tmp_path / f"{host}.key").st_mode) == 0o600
    client = read_optfile(tmp_path / "client.optfile")
    assert (client.certfile, client.cafile) == (
        str(tmp_path / "client.pem"),
        str(tmp_path / "ca.pem"),
    )
    client.context()  # the files load
