"""mnesia:// URLs: parsing, and zarr, xarray and dask opening them through fsspec."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import dask.array as da
import fsspec
import numpy as np
import pytest
import xarray as xr
import zarr

import pyrlang_zarr.sync as pzs
from pyrlang_zarr import Atom
from pyrlang_zarr.mnesia.client import MnesiaClient
from pyrlang_zarr.testing.cluster import LocalCluster
from pyrlang_zarr.url import MnesiaFileSystem, MnesiaURL, parse_url, read_cookie_file

ROOT = Path(__file__).resolve().parent.parent


def new_id() -> str:
    return f"url-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module", autouse=True)
def registered() -> Iterator[None]:
    """In this process the protocol is registered by hand; the entry point is tested in a
    subprocess below (the package installed here may predate it)."""
    fsspec.register_implementation("mnesia", MnesiaFileSystem, clobber=True)
    yield


# -- parsing ---------------------------------------------------------------------------------
def test_parse_and_print() -> None:
    u = parse_url("mnesia://node1@host/zarr_storage/exp1")
    assert (u.node, u.table, u.array_id, u.path) == ("node1@host", "zarr_storage", "exp1", "")
    u = parse_url("mnesia://n@h/t/grp/sub/arr?nodes=n@h,m@h&majority=true&timeout=5")
    assert (u.array_id, u.path) == ("grp", "sub/arr")
    assert u.query == {"nodes": "n@h,m@h", "majority": "true", "timeout": "5"}
    store = u.store(cookie="c")
    s = store.settings
    assert s.nodes == ("n@h", "m@h") and s.majority and s.timeout == 5.0
    odd = MnesiaURL("n@h", "t", "a/b c?")
    assert str(odd) == "mnesia://n@h/t/a%2Fb%20c%3F"
    assert parse_url(str(odd)).array_id == "a/b c?"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("zarr_storage/x", "expected mnesia://"),
        ("mnesia:///t/x", "names no node"),
        ("mnesia://nohost/t/x", "name@host"),
        ("mnesia://n@h/t/x?cookie=secret", "does not go in a URL"),
        ("mnesia://n@h/t/x?colour=red", "unknown query parameter"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_url(url)


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="expected true or false"):
        parse_url("mnesia://n@h/t/x?majority=maybe").store()
    with pytest.raises(TypeError, match="unknown mnesia:// option"):
        MnesiaFileSystem(colour="red", skip_instance_cache=True)
    assert "secret" not in repr(MnesiaFileSystem(cookie="secret", skip_instance_cache=True))


def test_cookie_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "cookie"
    path.write_text("abc\n")
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 400"):
        read_cookie_file(path)
    path.chmod(0o400)
    assert read_cookie_file(path) == "abc"
    store = parse_url(f"mnesia://n@h/t/x?cookie_file={path}").store()
    assert store.settings.cookie == "abc"


# -- through zarr, xarray, dask --------------------------------------------------------------
def so(c: LocalCluster, **kw: Any) -> dict[str, Any]:
    return {"cookie": c.cookie, **kw}


@pytest.mark.erlang
def test_zarr_reads_and_writes_urls(cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    aid = new_id()
    arr = pzs.create(
        aid,
        shape=(20, 20),
        chunks=(5, 5),
        dtype="float64",
        node=cluster.nodes[0],
        cookie=cluster.cookie,
        nodes=cluster.nodes,
    )
    data = np.random.default_rng(0).random((20, 20))
    arr[:] = data
    url = f"mnesia://{cluster.nodes[1]}/zarr_storage/{aid}"
    z = zarr.open_array(url, mode="r", storage_options=so(cluster))
    assert np.array_equal(z[:], data) and z.chunks == (5, 5)
    # a new array through a URL; ?nodes= sets the table up as create does
    other = new_id()
    nodes = ",".join(cluster.nodes)
    w = zarr.create_array(
        f"mnesia://{cluster.nodes[0]}/zarr_storage/{other}?nodes={nodes}",
        shape=(6,),
        chunks=(4,),
        dtype="int16",
        storage_options=so(cluster),
    )
    w[:] = np.arange(6)
    again_w = pzs.open(other, node=cluster.nodes[1], cookie=cluster.cookie)
    assert np.asarray(again_w[:]).tolist() == list(range(6))
    # a group and a path into it
    g = zarr.open_group(
        f"mnesia://{cluster.nodes[0]}/zarr_storage/{other}g", mode="w", storage_options=so(cluster)
    )
    g.create_array("t", shape=(3,), chunks=(3,), dtype="i1")[:] = [1, 2, 3]
    inner = zarr.open_array(
        f"mnesia://{cluster.nodes[1]}/zarr_storage/{other}g/t",
        mode="r",
        storage_options=so(cluster),
    )
    assert np.asarray(inner[:]).tolist() == [1, 2, 3]
    # fsspec's own view: tables, arrays, keys
    fs = fsspec.filesystem("mnesia", **so(cluster))
    assert f"{cluster.nodes[0]}/zarr_storage" in fs.ls(cluster.nodes[0], detail=False)
    assert f"{cluster.nodes[0]}/zarr_storage/{aid}" in fs.ls(
        f"{cluster.nodes[0]}/zarr_storage", detail=False
    )
    assert fs.cat_file(f"{url}/zarr.json", start=0, end=1) == b"{"
    assert fs.info(f"{url}/c")["type"] == "directory"
    # a zarr array over the URL pickles (dask, multiprocessing) without a connection, and
    # without the cookie: the process that unpickles it finds the cookie as erl does
    pickled = pickle.dumps(z)
    assert cluster.cookie.encode() not in pickled
    monkeypatch.setenv("ERLANG_COOKIE", cluster.cookie)
    again = pickle.loads(pickled)
    assert np.array_equal(again[:2, :2], data[:2, :2])
    carried = fsspec.filesystem("mnesia", pickle_cookie=True, **so(cluster))
    assert cluster.cookie.encode() in pickle.dumps(carried)  # the documented opt-in


@pytest.mark.erlang
def test_byte_ranges_are_cut_on_the_server(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    aid = new_id()
    arr = pzs.create(
        aid,
        shape=(64, 64),
        chunks=(8, 8),
        shards=(32, 32),
        dtype="float32",
        node=cluster.nodes[0],
        cookie=cluster.cookie,
        nodes=cluster.nodes,
    )
    arr[:] = np.arange(64 * 64, dtype="float32").reshape(64, 64)
    # every read of a record, as the match spec the server runs: (key, each clause's body)
    asked: list[tuple[Any, list[Any]]] = []
    dirty_calls = MnesiaClient.dirty_calls

    async def spy(self: MnesiaClient, calls: Any, what: str) -> Any:
        for _fun, args in calls:
            if len(args) == 2 and isinstance(args[1], list):  # a dirty_select
                (_tab, key, _data), _guards, _body = args[1][0]
                asked.append((key, [body for _head, _guards, body in args[1]]))
        return await dirty_calls(self, calls, what)

    monkeypatch.setattr(MnesiaClient, "dirty_calls", spy)
    z = zarr.open_array(
        f"mnesia://{cluster.nodes[0]}/zarr_storage/{aid}", mode="r", storage_options=so(cluster)
    )
    assert z[3, 3] == 3 * 64 + 3  # one inner chunk of shard (0, 0)
    shard = (aid.encode(), (Atom("chunk"), (0, 0)))  # ExZarr's record of shard (0, 0)
    specs = [bodies for key, bodies in asked if key == shard]
    assert specs  # the shard index and the inner chunk were read...
    for bodies in specs:  # ...as byte ranges cut on the server, never the whole shard
        # (a suffix spec's last clause returns a record shorter than the suffix as it is)
        assert "binary_part" in repr(bodies[0]), bodies


@pytest.mark.erlang
def test_xarray_and_dask(cluster: LocalCluster) -> None:
    aid = new_id()
    url = f"mnesia://{cluster.nodes[0]}/zarr_storage/{aid}"
    temps = np.random.default_rng(1).normal(15, 5, (12, 8)).astype("float32")
    ds = xr.Dataset(
        {"temperature": (("month", "station"), temps)},
        coords={"month": np.arange(1, 13), "station": [f"s{i}" for i in range(8)]},
        attrs={"source": "test"},
    )
    ds.to_zarr(url, storage_options=so(cluster), mode="w", zarr_format=3, consolidated=False)
    back = xr.open_zarr(url, storage_options=so(cluster), consolidated=False)
    assert back.attrs["source"] == "test"
    xr.testing.assert_equal(back.load(), ds)
    field = cast(Any, da).from_zarr(f"{url}/temperature", storage_options=so(cluster))
    assert field.shape == (12, 8)
    assert np.allclose(field.mean(axis=0).compute(), temps.mean(axis=0))


@pytest.mark.erlang
def test_entry_point_registers_the_protocol_with_nothing_imported(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """What ``pip install`` makes of pyproject's entry point: a dist-info that fsspec finds.
    The child process imports zarr, xarray and dask only, and gets the cookie from the
    environment."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["entry-points"]["fsspec.specs"]
    assert specs == {"mnesia": "pyrlang_zarr.url:MnesiaFileSystem"}
    info = tmp_path / "pyrlang_zarr_entry_points-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: pyrlang-zarr-entry-points\nVersion: 0\n"
    )
    lines = "".join(f"{k} = {v}\n" for k, v in specs.items())
    (info / "entry_points.txt").write_text(f"[fsspec.specs]\n{lines}")
    aid = new_id()
    arr = pzs.create(
        aid,
        shape=(10,),
        chunks=(5,),
        dtype="int32",
        node=cluster.nodes[0],
        cookie=cluster.cookie,
        nodes=cluster.nodes,
    )
    arr[:] = np.arange(10)
    script = """
import sys
import dask.array as da
import xarray as xr
import zarr
assert not any(m.startswith("pyrlang_zarr") for m in sys.modules), "imported early"
url = sys.argv[1]
print(zarr.open(url, mode="r")[:].tolist())
print(int(da.from_zarr(url).sum().compute()))
print(type(xr.open_zarr(url.rsplit("/", 1)[0] + "/" + sys.argv[2], consolidated=False)).__name__)
"""
    g = zarr.open_group(
        f"mnesia://{cluster.nodes[0]}/zarr_storage/{aid}g", mode="w", storage_options=so(cluster)
    )
    g.create_array("v", shape=(2,), chunks=(2,), dtype="i1", dimension_names=["x"])[:] = [1, 2]
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}",
        "ERLANG_COOKIE": cluster.cookie,
    }
    url = f"mnesia://{cluster.nodes[1]}/zarr_storage/{aid}"
    done = subprocess.run(
        [sys.executable, "-c", script, url, f"{aid}g"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == [str(list(range(10))), "45", "Dataset"]
