"""``pyrlang-zarr ping NODE``: is this node usable, and if not, what to do about it.

Checks in order, each one a line with the fix when it fails: the node name, EPMD on its host
(and which names it knows), the connection and the cookie, the OTP version, Mnesia (running,
its db nodes), the schema (disc or RAM) and the table (type, storage, replicas, majority).
A check that cannot run because an earlier one failed is not reported.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
from dataclasses import dataclass
from typing import Any

import pyrlang_zarr as pz
from pyrlang_zarr.erldist.tls import TlsError
from pyrlang_zarr.errors import (
    AuthenticationError,
    HandshakeTimeout,
    NodeDown,
    NodeUnreachable,
    RpcError,
    RpcTimeout,
)
from pyrlang_zarr.mnesia.setup import describe_table
from pyrlang_zarr.store import DEFAULT_TABLE
from pyrlang_zarr.term import Atom

__all__ = ["Check", "epmd_names", "ping"]

EPMD_PORT = 4369
_NAMES = re.compile(r"^name (\S+) at port (\d+)$", re.MULTILINE)
UNREACHABLE = (NodeUnreachable, NodeDown, HandshakeTimeout, RpcTimeout, OSError)

RAM_SCHEMA_FIX = (
    "a RAM schema (Mnesia started without creating a disc schema first, as Elixir's plain "
    ":mnesia.start() does) holds only ram_copies tables: pass ram_copies=True "
    "(?ram_copies=true in a URL), or make it a disc schema on that node with "
    "mnesia:change_table_copy_type(schema, node(), disc_copies)"
)


@dataclass(frozen=True)
class Check:
    """One line of the report. ``status``: ``ok``, ``warn`` or ``FAIL``."""

    name: str
    status: str
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"

    def lines(self) -> list[str]:
        out = [f"{self.status:<5} {self.name:<8} {self.detail}"]
        if self.fix:
            out.append(f"{'':<14} fix: {self.fix}")
        return out


async def epmd_names(host: str, *, port: int = EPMD_PORT, timeout: float = 5.0) -> dict[str, int]:
    """``{short name: distribution port}`` of the nodes EPMD on ``host`` knows (NAMES_REQ)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(struct.pack(">HB", 1, 110))
            data = await reader.read()
        finally:
            writer.close()
    text = data[4:].decode("utf-8", "replace")
    return {name: int(p) for name, p in _NAMES.findall(text)}


async def ping(
    peer: str,
    *,
    table: str = DEFAULT_TABLE,
    cookie: str | None = None,
    tls: Any = None,
    timeout: float = 10.0,
) -> list[Check]:
    """Every check on ``peer``, in order; stops at the first one that blocks the rest.
    ``tls`` as for :class:`~pyrlang_zarr.Node` (``None``: from the environment)."""
    checks: list[Check] = []
    name, _, host = peer.partition("@")
    if not name or not host or "@" in host:
        return [Check("name", "FAIL", f"{peer!r} is not a node name", "write it name@host")]
    try:
        address = socket.getaddrinfo(host, None)[0][4][0]
    except OSError as exc:
        return [
            Check(
                "name",
                "FAIL",
                f"host {host!r} does not resolve ({exc})",
                "use the host part the node was started with: `erl -sname x` takes the short "
                "host name (hostname -s), `erl -name x` the full one",
            )
        ]
    form = "long" if "." in host else "short"
    checks.append(Check("name", "ok", f"{peer} ({form} name; {host} is {address})"))

    try:
        names = await epmd_names(host, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        checks.append(
            Check(
                "epmd",
                "FAIL",
                f"no EPMD answers on {host}:{EPMD_PORT} ({exc or 'timeout'})",
                f"no Erlang node runs on {host}, or a firewall blocks port {EPMD_PORT}; start "
                "the node (`pyrlang-zarr cluster up` starts local ones)",
            )
        )
        return checks
    if name not in names:
        known = ", ".join(f"{n}@{host}" for n in sorted(names)) or "none"
        checks.append(
            Check(
                "epmd",
                "FAIL",
                f"EPMD on {host} has no node {name!r}; it knows: {known}",
                "start the node, or use one of the names above",
            )
        )
        return checks
    others = sorted(n for n in names if n != name)
    also = f"; also: {', '.join(others)}" if others else ""
    checks.append(
        Check("epmd", "ok", f"{host}:{EPMD_PORT} lists {name} (port {names[name]}){also}")
    )

    try:
        node = pz.Node(cookie=cookie, tls=tls, connect_timeout=timeout, rpc_timeout=timeout)
    except (AuthenticationError, ValueError) as exc:
        checks.append(
            Check(
                "cookie",
                "FAIL",
                str(exc),
                "give the node's cookie: --cookie-file FILE, ERLANG_COOKIE, or ~/.erlang.cookie "
                "(mode 400)",
            )
        )
        return checks
    try:
        checks += await _on_node(node, peer, table, timeout)
    finally:
        await node.close()
    return checks


async def _on_node(node: pz.Node, peer: str, table: str, timeout: float) -> list[Check]:
    checks: list[Check] = []

    async def call(module: str, fn: str, *args: Any) -> Any:
        return await node.rpc(peer, module, fn, list(args))

    try:
        reported = await call("erlang", "node")
    except TlsError as exc:  # before the cookie: a TLS refusal is an AuthenticationError too
        return [
            Check(
                "tls",
                "FAIL",
                str(exc),
                "TLS distribution: give the cluster's ssl_dist_optfile (or a client's) with "
                "--tls-optfile FILE or $PYRLANG_ZARR_SSL_DIST_OPTFILE; its certificate must "
                "be signed by a CA the nodes trust (cacertfile), and not be expired",
            )
        ]
    except AuthenticationError as exc:
        return [
            Check(
                "connect",
                "FAIL",
                f"the node refused our cookie ({exc})",
                "use the node's cookie: --cookie-file FILE or ERLANG_COOKIE (it is in the "
                "node's ~/.erlang.cookie, its -setcookie argument or RELEASE_COOKIE)",
            )
        ]
    except UNREACHABLE as exc:
        return [
            Check(
                "connect",
                "FAIL",
                f"cannot talk to {peer}: {exc}",
                "check that the distribution port EPMD gave is reachable (firewall), and that "
                "the name has the form the node uses (-sname: short host, -name: full host)",
            )
        ]
    over = " over TLS" if node.tls is not None else ""
    checks.append(
        Check("connect", "ok", f"cookie accepted; connected as {node.name} (hidden node){over}")
    )
    if str(reported) != peer:
        checks.append(Check("connect", "warn", f"the node calls itself {reported}"))

    release, version = await asyncio.gather(
        call("erlang", "system_info", Atom("otp_release")),
        call("erlang", "system_info", Atom("version")),
    )
    otp = bytes(release).decode()
    status = "ok" if otp.isdigit() and int(otp) >= 24 else "warn"
    checks.append(
        Check(
            "otp",
            status,
            f"OTP {otp}, erts {bytes(version).decode()}",
            "" if status == "ok" else "tested with OTP 25; older releases may lack functions",
        )
    )

    try:
        running = await call("mnesia", "system_info", Atom("is_running"))
    except RpcError as exc:
        checks.append(
            Check(
                "mnesia",
                "FAIL",
                f"Mnesia is not available on {peer}: {exc}",
                "install it with Erlang (Debian: apt-get install erlang-mnesia) or add :mnesia "
                "to the release's applications",
            )
        )
        return checks
    directory = bytes(await call("mnesia", "system_info", Atom("directory"))).decode()
    if running != Atom("yes"):
        use_dir = await call("mnesia", "system_info", Atom("use_dir"))
        schema = f"a disc schema in {directory}" if use_dir is True else "no disc schema yet"
        checks.append(
            Check(
                "mnesia",
                "FAIL",
                f"Mnesia is not running ({running}); {schema}",
                "pz.create(..., nodes=[...]) or MnesiaStore(..., nodes=[...]) sets it up (disc "
                "schema, start, table); or run mnesia:create_schema([node()]) and "
                "mnesia:start() there",
            )
        )
        return checks
    db_nodes, running_nodes = await asyncio.gather(
        call("mnesia", "system_info", Atom("db_nodes")),
        call("mnesia", "system_info", Atom("running_db_nodes")),
    )
    down = sorted(str(n) for n in db_nodes if n not in running_nodes)
    detail = f"running; db nodes {', '.join(sorted(map(str, db_nodes)))}"
    if down:
        checks.append(
            Check(
                "mnesia",
                "warn",
                f"{detail}; not running: {', '.join(down)}",
                "start those nodes (and Mnesia on them) again",
            )
        )
    else:
        checks.append(Check("mnesia", "ok", detail + " (all running)"))

    storage = await call("mnesia", "table_info", Atom("schema"), Atom("storage_type"))
    if storage == Atom("ram_copies"):
        checks.append(
            Check("schema", "warn", "RAM schema: disc_copies tables impossible", RAM_SCHEMA_FIX)
        )
    else:
        checks.append(Check("schema", "ok", f"disc ({directory})"))

    checks.append(await _table(node, peer, table))
    return checks


async def _table(node: pz.Node, peer: str, table: str) -> Check:
    tables = await node.rpc(peer, "mnesia", "system_info", [Atom("tables")])
    if Atom(table) not in tables:
        ours = sorted(str(t) for t in tables if str(t) != "schema")
        return Check(
            "table",
            "warn",
            f"no table {table!r} (tables: {', '.join(ours) or 'none'})",
            "pz.create(..., nodes=[...]) creates it; --table NAME checks another",
        )
    facts = await describe_table(node, peer, table)
    replicas = facts.replicas
    down = [n for n in replicas if n not in facts.active]
    detail = (
        f"{table}: {facts.type}, {facts.storage} on {', '.join(replicas)}; "
        f"majority {str(facts.majority).lower()}; "
        + (f"{facts.size} records" if facts.size is not None else "not loaded here yet")
    )
    if not facts.holds_our_records:
        return Check(
            "table",
            "FAIL",
            f"{detail}; records are not {{{table}, Key, Data}} (attributes {facts.attributes}, "
            f"record name {facts.record_name})",
            "this table belongs to something else: use another table name",
        )
    if down:
        return Check(
            "table",
            "warn",
            f"{detail}; replicas not active: {', '.join(down)}",
            "start those nodes and Mnesia on them; reads and writes fail over meanwhile",
        )
    if facts.majority and len(replicas) < 3:
        return Check(
            "table",
            "warn",
            detail,
            f"majority with {len(replicas)} replica(s): losing one stops writes",
        )
    return Check("table", "ok", detail)
