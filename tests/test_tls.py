"""TLS distribution (``-proto_dist inet_tls``): the optfile reader and the settings on their
own, then real OTP nodes started with ``-proto_dist inet_tls -ssl_dist_optfile F`` and a CA,
node and client certificates made by the tests (``LocalCluster(tls=True)``).

What is checked against the nodes: rpc (small and multi-MB both ways), Mnesia setup, arrays
and failover over TLS; refusals (no certificate, another CA's, an expired one, a node whose
certificate we do not trust or that does not name its host, a plain client) come as
``TlsError`` (an ``AuthenticationError``), at once rather than after a timeout, with nothing
written (checked from the Erlang side); the cookie is still checked inside TLS.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import pickle
import socket
import ssl
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import pyrlang_zarr as pz
from pyrlang_zarr import Atom, Node
from pyrlang_zarr.erldist.flags import OUR_FLAGS
from pyrlang_zarr.erldist.handshake import ClientHandshake
from pyrlang_zarr.erldist.node_registry import close_shared_nodes
from pyrlang_zarr.erldist.session import Connected, Outgoing, Session
from pyrlang_zarr.erldist.tls import (
    OPTFILE_ENV,
    Call,
    TlsConfig,
    TlsError,
    parse_optfile_text,
    read_optfile,
    resolve_tls,
)
from pyrlang_zarr.errors import AuthenticationError, HandshakeTimeout
from pyrlang_zarr.mnesia import ensure_table
from pyrlang_zarr.testing.certs import CA
from pyrlang_zarr.testing.cluster import LocalCluster

# -- the optfile, read locally -----------------------------------------------------------------

OPTFILE = """%% the file the nodes use
[{server, [{certfile, "/etc/ssl/node.pem"}, {keyfile, "/etc/ssl/node.key"},
           {cacertfile, "/etc/ssl/ca.pem"}, {verify, verify_peer},
           {fail_if_no_peer_cert, true}, {secure_renegotiate, true}]},
 {client, [{certfile, "/etc/ssl/" "client.pem"},   % string literals join, as in Erlang
           {keyfile, "/etc/ssl/client.key"},
           {cacertfile, "/etc/ssl/ca.pem"},
           {verify, verify_peer}, {secure_renegotiate, true},
           {customize_hostname_check,
               [{match_fun, public_key:pkix_verify_hostname_match_fun(https)}]}]}].
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_optfile_client_side(tmp_path: Path) -> None:
    cfg = read_optfile(write(tmp_path / "dist.optfile", OPTFILE))
    assert cfg == TlsConfig("/etc/ssl/client.pem", "/etc/ssl/client.key", "/etc/ssl/ca.pem")
    assert cfg.verify and cfg.check_hostname and cfg.server_name is None
    assert cfg.source == str(tmp_path / "dist.optfile")


def test_optfile_with_server_options_only_lends_them(tmp_path: Path) -> None:
    text = '[{server, [{certfile, "n.pem"}, {keyfile, "n.key"}, {cacertfile, "ca.pem"}]}].'
    cfg = read_optfile(write(tmp_path / "o", text))
    # relative paths are the optfile's directory's
    assert (cfg.certfile, cfg.keyfile, cfg.cafile) == tuple(
        str(tmp_path / f) for f in ("n.pem", "n.key", "ca.pem")
    )


@pytest.mark.parametrize(
    ("option", "check_hostname", "server_name", "verify"),
    [
        ("{server_name_indication, disable}", False, None, True),
        ('{server_name_indication, "db.example.com"}', True, "db.example.com", True),
        ("{verify, verify_none}", False, None, False),
    ],
)
def test_optfile_name_checks(
    tmp_path: Path, option: str, check_hostname: bool, server_name: str | None, verify: bool
) -> None:
    text = f'[{{client, [{{certfile, "c.pem"}}, {option}]}}].'
    cfg = read_optfile(write(tmp_path / "o", text))
    assert (cfg.check_hostname, cfg.server_name, cfg.verify) == (
        check_hostname,
        server_name,
        verify,
    )


@pytest.mark.parametrize(
    ("client_options", "error"),
    [
        ('{password, "secret"}', "password cannot be used"),
        ("{verify_fun, {m, f, []}}", "verify_fun cannot be used"),
        ("{crl_check, true}", "crl_check cannot be used"),
        ("{customize_hostname_check, [{match_fun, m:f(x)}]}", "cannot be mirrored"),
        ("{mystery, 1}", "not understood"),
        ("{verify, sometimes}", "verify must be"),
        ("{certfile, cert}", "must be a string"),
    ],
)
def test_optfile_options_that_cannot_be_mirrored_are_refused(
    tmp_path: Path, client_options: str, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        read_optfile(write(tmp_path / "o", f"[{{client, [{client_options}]}}]."))


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[{client, []}]", "expected '.'"),
        ("[{client, [X]}].", "variables are not allowed"),
        ('[{client, [{certfile, "a"} {keyfile, "b"}]}].', "expected ','"),
        ("[{client, []}]. [].", "one term"),
        ("{client, []}.", "expected \\[\\{server"),
        ("[{elsewhere, []}].", "expected \\{server"),
        ("\n\n[{client, [#]}].", ":3: cannot read"),
    ],
)
def test_bad_optfiles_say_where(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        read_optfile(write(tmp_path / "o", text))


def test_optfile_terms() -> None:
    term = parse_optfile_text(
        """[a, 'quoted atom', "tab\\there \\x41\\x{42}\\101\\^A", -12, 16#ff, 2.5e1, $a,
           <<"bin">>, {}, [], m:f(1, [x])]."""
    )
    assert term == [
        "a",
        "quoted atom",
        "tab\there ABA\x01",
        -12,
        255,
        25.0,
        97,
        b"bin",
        (),
        [],
        Call("m", "f", (1, ["x"])),
    ]


def test_optfile_latin1_unless_it_says_utf8(tmp_path: Path) -> None:
    text = '[{client, [{certfile, "/tmp/\u00e9.pem"}]}].'
    (tmp_path / "l").write_bytes(text.encode("latin-1"))
    (tmp_path / "u").write_bytes(("%% coding: utf-8\n" + text).encode("utf-8"))
    assert read_optfile(tmp_path / "l").certfile == "/tmp/\u00e9.pem"
    assert read_optfile(tmp_path / "u").certfile == "/tmp/\u00e9.pem"


def test_missing_optfile() -> None:
    with pytest.raises(FileNotFoundError, match="ssl_dist_optfile"):
        read_optfile("/nonexistent/dist.optfile")


# -- the settings: paths that pickle, resolved like the cookie ---------------------------------


def test_tls_config_pickles_as_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = TlsConfig("c.pem", "c.key", "ca.pem", server_name="n")
    assert cfg.certfile == str(tmp_path / "c.pem")
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg and hash(again) == hash(cfg)


def test_resolve_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opt = write(tmp_path / "o", '[{client, [{certfile, "c.pem"}]}].')
    monkeypatch.delenv(OPTFILE_ENV, raising=False)
    assert resolve_tls(None) is None
    assert resolve_tls(str(opt)) == TlsConfig(str(tmp_path / "c.pem"))
    monkeypatch.setenv(OPTFILE_ENV, str(opt))
    assert resolve_tls(None) == TlsConfig(str(tmp_path / "c.pem"))
    assert resolve_tls(False) is None  # plain TCP, whatever the environment says
    ctx = ssl.create_default_context()
    assert resolve_tls(ctx) is ctx
    with pytest.raises(ValueError, match="does not say which certificates"):
        resolve_tls(True)
    with pytest.raises(TypeError, match="tls must be"):
        resolve_tls(42)


def test_missing_certificate_fails_before_anything_is_sent(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Node(cookie="c", tls=TlsConfig(str(tmp_path / "none.pem")))
    (tmp_path / "bad.pem").write_text("not a certificate")
    with pytest.raises(ValueError, match="cannot load the certificates"):
        Node(cookie="c", tls=TlsConfig(str(tmp_path / "bad.pem")))


# -- the protocol: 4-byte handshake lengths inside TLS; a TLS answer to a plain hello -----------


def test_handshake_inside_tls_has_4_byte_lengths() -> None:
    hs = ClientHandshake("a@h", "b@h", "cookie", creation=5, length_bytes=4)
    hello = hs.start()
    assert int.from_bytes(hello[:4], "big") == len(hello) - 4 and hello[4:5] == b"N"
    session = Session(hs, tick_time=60)
    session.receive_data(b"\x00\x00\x00\x03sok", 0.0)  # status, 4-byte length
    assert session.next_event() is None
    name = b"b@h"
    challenge = b"N" + OUR_FLAGS.to_bytes(8, "big") + (7).to_bytes(4, "big")
    challenge += (9).to_bytes(4, "big") + len(name).to_bytes(2, "big") + name
    session.receive_data(len(challenge).to_bytes(4, "big") + challenge, 0.0)
    reply = session.next_event()
    assert isinstance(reply, Outgoing) and int.from_bytes(reply.data[:4], "big") == 21
    assert not isinstance(reply, Connected)


def test_plain_hello_answered_with_a_tls_record_says_the_cluster_wants_tls() -> None:
    session = Session(ClientHandshake("a@h", "b@h", "c", creation=5), tick_time=60)
    session.receive_data(b"\x15\x03\x03\x00\x02\x02\x0a", 0.0)  # OTP's answer, verbatim
    with pytest.raises(TlsError, match="b@h wants TLS distribution"):
        session.next_event()
    # and if the socket closes before two bytes came
    cut = Session(ClientHandshake("a@h", "b@h", "c", creation=5), tick_time=60)
    cut.receive_data(b"\x15", 0.0)
    assert cut.next_event() is None
    assert isinstance(cut.connection_lost(), TlsError)


async def test_a_refusal_after_a_tls13_handshake_is_a_tls_error(tmp_path: Path) -> None:
    """With TLS 1.3 a server checks the client's certificate after the client's side of the
    handshake is done: the refusal arrives as the first read fails. (OTP 25 distribution
    speaks TLS 1.2; a Python server stands in for a TLS 1.3 one.)"""
    ca = CA(tmp_path)
    server_cert = ca.issue("server", hosts=["localhost", "127.0.0.1"])
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.TLSv1_3
    server.load_cert_chain(server_cert.certfile, server_cert.keyfile)
    server.load_verify_locations(ca.cafile)
    server.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:  # blocking sockets: the alert leaves before the socket closes
        conn, _ = listener.accept()
        with conn:
            try:
                server.wrap_socket(conn, server_side=True).recv(100)
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        no_cert = TlsConfig(None, None, str(ca.cafile))
        async with Node(cookie="c", tls=no_cert, dist_port=port, connect_timeout=20) as node:
            with pytest.raises(TlsError, match="after the TLS handshake: it wants a client"):
                await node.rpc("x@localhost", "erlang", "node", [])
    finally:
        thread.join(10)
        listener.close()


# -- against real OTP nodes running inet_tls_dist ----------------------------------------------


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(n=2, tls=True) as c:
        yield c


@pytest.fixture
async def tls_node(tls_cluster: LocalCluster) -> AsyncIterator[Node]:
    async with Node(cookie=tls_cluster.cookie, tls=tls_cluster.client_tls) as n:
        yield n


def client_tls(c: LocalCluster) -> TlsConfig:
    assert c.client_tls is not None
    return c.client_tls


def issue(c: LocalCluster, kind: str, tmp_path: Path) -> TlsConfig:
    """A client's settings that the cluster must refuse, or that must refuse the cluster."""
    assert c.ca is not None
    cafile = str(c.ca.cafile)
    if kind == "no certificate":
        return TlsConfig(None, None, cafile)
    if kind == "another CA's certificate":
        other = CA(tmp_path / "other").issue("client")
        return TlsConfig(str(other.certfile), str(other.keyfile), cafile)
    if kind == "an expired certificate":
        past = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        old = c.ca.issue(f"expired-{uuid.uuid4().hex[:6]}", not_after=past)
        return TlsConfig(str(old.certfile), str(old.keyfile), cafile)
    raise AssertionError(kind)


@pytest.mark.erlang
async def test_rpc_over_tls(tls_node: Node, tls_cluster: LocalCluster) -> None:
    peer = tls_cluster.nodes[0]
    assert await tls_node.rpc(peer, "erlang", "node", []) == Atom(peer)
    blob = os.urandom(3 << 20)
    assert await tls_node.rpc(peer, "erlang", "md5", [blob]) == hashlib.md5(blob).digest()
    back = await tls_node.rpc(peer, "erlang", "hd", [[(Atom("ok"), blob)]], copy_binaries=False)
    # large replies still land in a buffer of their own: views, not copies, under TLS too
    assert isinstance(back[1], memoryview) and back[1] == blob
    # seen from the node: a hidden node on a TLS connection
    me = tls_node.name
    assert tls_cluster.erl_eval(0, "nodes(hidden).").count(str(me)) == 1
    info = f"{{ok, I}} = net_kernel:node_info('{me}'), element(4, proplists:get_value(address, I))."
    assert tls_cluster.erl_eval(0, info) == "tls"


@pytest.mark.erlang
async def test_optfile_path_and_environment(
    tls_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer = tls_cluster.nodes[1]
    optfile = tls_cluster.client_optfile
    assert optfile is not None
    async with Node(cookie=tls_cluster.cookie, tls=str(optfile)) as node:
        assert await node.rpc(peer, "erlang", "node", []) == Atom(peer)
    monkeypatch.setenv(OPTFILE_ENV, str(optfile))
    async with Node(cookie=tls_cluster.cookie) as node:
        assert await node.rpc(peer, "erlang", "node", []) == Atom(peer)
    async with Node(cookie=tls_cluster.cookie, tls=False) as node:  # plain, despite the env
        with pytest.raises(TlsError, match="wants TLS distribution"):
            await node.rpc(peer, "erlang", "node", [])


@pytest.mark.erlang
async def test_an_ssl_context_of_ones_own(tls_cluster: LocalCluster) -> None:
    ctx = client_tls(tls_cluster).context()
    async with Node(cookie=tls_cluster.cookie, tls=ctx) as node:
        assert node.tls is ctx
        assert await node.rpc(tls_cluster.nodes[0], "erlang", "node", []) == Atom(
            tls_cluster.nodes[0]
        )


@pytest.mark.erlang
async def test_mnesia_setup_and_arrays_over_tls(
    tls_cluster: LocalCluster, tls_node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes = tls_cluster.nodes
    info = await ensure_table(tls_node, nodes, "zarr_storage")
    assert sorted(info.replicas) == sorted(nodes)
    # the stores' shared nodes find the TLS settings as erl would: in the environment
    monkeypatch.setenv(OPTFILE_ENV, str(tls_cluster.client_optfile))
    try:
        aid = f"tls-{uuid.uuid4().hex[:6]}"
        arr = await pz.create(
            aid, shape=(200, 200), chunks=(50, 50), cookie=tls_cluster.cookie, nodes=nodes
        )
        data = np.random.default_rng(1).random((200, 200))
        await arr.set_slice(data)
        again = await pz.open(aid, node=nodes[1], cookie=tls_cluster.cookie)
        assert np.array_equal(await again.get_slice(), data)
    finally:
        await close_shared_nodes()
    count = f"length(mnesia:dirty_match_object({{zarr_storage, {{<<\"{aid}\">>, '_'}}, '_'}}))."
    assert tls_cluster.erl_eval(1, count) == "17"  # 16 chunks and the metadata


@pytest.mark.erlang
@pytest.mark.slow
async def test_failover_over_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    with LocalCluster(n=3, tls=True, ticktime=4) as c:
        monkeypatch.setenv(OPTFILE_ENV, str(c.client_optfile))
        try:
            arr = await pz.create(
                f"tls-fo-{uuid.uuid4().hex[:6]}",
                shape=(64,),
                chunks=(8,),
                node=c.nodes[0],
                nodes=c.nodes,
                cookie=c.cookie,
            )
            await arr.set_slice(np.arange(64.0))
            c.kill(0)
            await arr.set_slice(np.full(8, -1.0), start=(0,), stop=(8,))  # moves to a replica
            got = await arr.get_slice()
            assert got[:8].tolist() == [-1.0] * 8 and got[8:].tolist() == list(range(8, 64))
            assert (await arr.store.client()).coordinator != c.nodes[0]
        finally:
            await close_shared_nodes()


# Python nodes connected to a node (not the erl_eval helper asking)
OUR_HIDDEN_NODES = '[N || N <- lists:sort(nodes(hidden)), lists:prefix("pz-", atom_to_list(N))].'
REFUSED = ["no certificate", "another CA's certificate", "an expired certificate"]


@pytest.mark.erlang
@pytest.mark.parametrize("kind", REFUSED)
async def test_client_refused_at_once_with_nothing_written(
    tls_cluster: LocalCluster,
    tls_node: Node,
    tmp_path: Path,
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await ensure_table(tls_node, tls_cluster.nodes, "zarr_storage")  # Mnesia runs
    bad = issue(tls_cluster, kind, tmp_path)
    hidden_before = tls_cluster.erl_eval(0, OUR_HIDDEN_NODES)
    # connect_timeout far above the test's run time: a refusal must not wait for it
    async with Node(cookie=tls_cluster.cookie, tls=bad, connect_timeout=120) as node:
        with pytest.raises(TlsError, match="refused our TLS connection") as raised:
            await node.rpc(tls_cluster.nodes[0], "erlang", "node", [])
        assert isinstance(raised.value, AuthenticationError)
        assert not isinstance(raised.value, HandshakeTimeout)
        assert node._peers.attempts == 1 and node.connected_nodes == []
    # and through the store API, which would set Mnesia up and write
    table = f"refused_{uuid.uuid4().hex[:6]}"
    optfile = tmp_path / "bad.optfile"
    optfile.write_text(
        "[{client, ["
        + ", ".join(
            f'{{{k}, "{v}"}}'
            for k, v in (
                ("certfile", bad.certfile),
                ("keyfile", bad.keyfile),
                ("cacertfile", bad.cafile),
            )
            if v is not None
        )
        + "]}]."
    )
    monkeypatch.setenv(OPTFILE_ENV, str(optfile))
    try:
        with pytest.raises(TlsError):
            await pz.create(
                "refused",
                shape=(4,),
                chunks=(2,),
                cookie=tls_cluster.cookie,
                nodes=tls_cluster.nodes,
                table_name=table,
            )
    finally:
        await close_shared_nodes()
    for i in range(2):  # seen from the Erlang side: Mnesia running, no such table
        tables = "mnesia:system_info(tables)"
        check = f"{{mnesia:system_info(is_running), lists:member({table}, {tables})}}."
        assert tls_cluster.erl_eval(i, check) == "{yes,false}"
    assert tls_cluster.erl_eval(0, OUR_HIDDEN_NODES) == hidden_before


@pytest.mark.erlang
async def test_we_refuse_a_node_we_cannot_trust(tls_cluster: LocalCluster, tmp_path: Path) -> None:
    ours = client_tls(tls_cluster)
    stranger_ca = CA(tmp_path / "stranger")
    untrusting = TlsConfig(ours.certfile, ours.keyfile, str(stranger_ca.cafile))
    async with Node(cookie=tls_cluster.cookie, tls=untrusting) as node:
        with pytest.raises(TlsError, match=r"we refused .* TLS certificate"):
            await node.rpc(tls_cluster.nodes[0], "erlang", "node", [])
    # the node's certificate must name the host we reach it by, as OTP's client checks
    elsewhere = TlsConfig(ours.certfile, ours.keyfile, ours.cafile, server_name="elsewhere.test")
    async with Node(cookie=tls_cluster.cookie, tls=elsewhere) as node:
        with pytest.raises(TlsError, match=r"[Hh]ostname mismatch"):
            await node.rpc(tls_cluster.nodes[0], "erlang", "node", [])
    for settings in (
        TlsConfig(ours.certfile, ours.keyfile, ours.cafile, server_name="localhost"),
        TlsConfig(ours.certfile, ours.keyfile, ours.cafile, "elsewhere.test", check_hostname=False),
    ):
        async with Node(cookie=tls_cluster.cookie, tls=settings) as node:
            assert await node.rpc(tls_cluster.nodes[0], "erlang", "node", [])


@pytest.mark.erlang
async def test_plain_client_told_the_cluster_wants_tls(tls_cluster: LocalCluster) -> None:
    async with Node(cookie=tls_cluster.cookie, tls=False, connect_timeout=120) as node:
        with pytest.raises(TlsError, match=r"wants TLS distribution .* -proto_dist inet_tls"):
            await node.rpc(tls_cluster.nodes[0], "erlang", "node", [])


@pytest.mark.erlang
async def test_cookie_still_checked_inside_tls(tls_cluster: LocalCluster) -> None:
    async with Node(cookie="not-the-cookie", tls=tls_cluster.client_tls) as node:
        with pytest.raises(AuthenticationError, match="cookie is wrong") as raised:
            await node.rpc(tls_cluster.nodes[0], "erlang", "node", [])
        assert not isinstance(raised.value, TlsError)


@pytest.mark.erlang
async def test_tls_client_to_a_plain_node_says_what_to_check(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    ca = CA(tmp_path)
    me = ca.issue("client")
    tls = TlsConfig(str(me.certfile), str(me.keyfile), str(ca.cafile))
    async with Node(cookie=cluster.cookie, tls=tls, connect_timeout=2) as node:
        with pytest.raises((HandshakeTimeout, TlsError), match=r"inet_tls|TLS"):
            await node.rpc(cluster.nodes[0], "erlang", "node", [])


# -- the store API: tls= through MnesiaStore, create, open and mnesia:// URLs ------------------


@pytest.mark.erlang
async def test_store_create_open_and_urls_take_tls(
    tls_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(OPTFILE_ENV, raising=False)
    nodes, tls, optfile = tls_cluster.nodes, client_tls(tls_cluster), tls_cluster.client_optfile
    aid = f"tls-api-{uuid.uuid4().hex[:6]}"
    try:
        # through dicts: without the plumbing mypy knows no tls= argument of open
        with_tls: dict[str, Any] = {"tls": tls}
        arr = await pz.create(
            aid, shape=(16,), chunks=(4,), nodes=nodes, cookie=tls_cluster.cookie, **with_tls
        )
        await arr.set_slice(np.arange(16.0))
        by_path: dict[str, Any] = {"tls": str(optfile)}
        again = await pz.open(aid, node=nodes[1], cookie=tls_cluster.cookie, **by_path)
        assert (await again.get_slice()).tolist() == list(range(16))
        store = pz.MnesiaStore(aid, node=nodes[0], cookie=tls_cluster.cookie, tls=tls)
        clone = pickle.loads(pickle.dumps(store))  # the TLS settings travel as paths
        assert clone.settings.tls == tls
        monkeypatch.setenv("ERLANG_COOKIE", tls_cluster.cookie)
        z = zarr.open_array(clone, mode="r")
        assert np.asarray(z[:]).tolist() == list(range(16))
        url = f"mnesia://{nodes[0]}/zarr_storage/{aid}?tls_optfile={optfile}"
        assert np.asarray(zarr.open_array(url, mode="r")[:]).sum() == sum(range(16))
        # without TLS settings the same store is refused: the cluster wants TLS
        with pytest.raises(TlsError, match="wants TLS"):
            plain: dict[str, Any] = {"tls": False}
            await pz.open(aid, node=nodes[0], cookie=tls_cluster.cookie, **plain)
    finally:
        await close_shared_nodes()


# -- the command line and the examples ---------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def run_python(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("ERLANG_COOKIE", OPTFILE_ENV)}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**base, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.erlang
def test_cli_takes_tls_optfile(tls_cluster: LocalCluster, tmp_path: Path) -> None:
    cookie = tmp_path / "cookie"
    cookie.write_text(tls_cluster.cookie)
    cookie.chmod(0o400)
    node, optfile = tls_cluster.nodes[0], str(tls_cluster.client_optfile)
    ping = ["-m", "pyrlang_zarr", "ping", node, "--cookie-file", str(cookie)]
    done = run_python(*ping, "--tls-optfile", optfile)
    assert "cookie accepted; connected as" in done.stdout, done.stdout + done.stderr
    plain = run_python(*ping)
    assert plain.returncode == 1 and "wants TLS distribution" in plain.stdout
    missing = run_python(*ping, "--tls-optfile", str(tmp_path / "none.optfile"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr


@pytest.mark.erlang
@pytest.mark.slow
def test_demo_and_example_over_tls() -> None:
    demo = run_python("-m", "pyrlang_zarr", "demo", "--tls", "--nodes", "2")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "(TLS distribution)" in demo.stdout and demo.stdout.strip().endswith("done")
    seed = run_python("examples/seed_example.py", "--tls")
    assert seed.returncode == 0 and "sum = 49995000" in seed.stdout, seed.stderr
