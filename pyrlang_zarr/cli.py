"""The ``pyrlang-zarr`` command (also ``python -m pyrlang_zarr``).

    pyrlang-zarr cluster up [--nodes N] [--tls]   local Erlang nodes that keep running
    pyrlang-zarr cluster status | down
    pyrlang-zarr ping NODE                  can this node be used? each problem with its fix
    pyrlang-zarr ls NODE [--table T]        the arrays in a table
    pyrlang-zarr info URL                   one array: shape, chunks, codecs, bytes, replicas
    pyrlang-zarr rm URL                     delete one array
    pyrlang-zarr frag NODE [--add N] [--node N2 ...]   a fragmented table; grow it live
    pyrlang-zarr cp SRC DST                 copy between a local zarr and mnesia://, any way
    pyrlang-zarr watch URL                  print an array's chunk changes as they commit
    pyrlang-zarr demo                       the main job end to end on a cluster it starts

URLs are ``mnesia://NODE/TABLE/ARRAY_ID`` (see :mod:`pyrlang_zarr.url`). The cookie comes from
``--cookie-file``, else ``ERLANG_COOKIE``/``RELEASE_COOKIE``, else the local cluster's when
NODE is one of its nodes, else ``~/.erlang.cookie``; never from the command line itself.
For a cluster running TLS distribution, ``--tls-optfile FILE`` (its ``ssl_dist_optfile``,
or a client's) in every command that connects, or ``$PYRLANG_ZARR_SSL_DIST_OPTFILE``; for
the nodes of a local cluster started with ``cluster up --tls``, its client optfile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

import pyrlang_zarr as pz

PROG = "pyrlang-zarr"


def _version() -> str:
    try:
        return metadata.version("pyrlang_zarr")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "unknown"


# -- the demo --------------------------------------------------------------------------------
async def demo(n: int, tls: bool = False) -> int:
    from pyrlang_zarr.erldist.tls import OPTFILE_ENV
    from pyrlang_zarr.testing.cluster import LocalCluster

    with LocalCluster(n=n, tls=tls) as cluster:
        how = " (TLS distribution)" if tls else ""
        print(f"started {n} Erlang nodes{how}: {', '.join(cluster.nodes)}")
        # the library's nodes find the cluster's TLS settings (or none) in the environment
        if cluster.client_optfile is not None:
            os.environ[OPTFILE_ENV] = str(cluster.client_optfile)
        else:
            os.environ.pop(OPTFILE_ENV, None)
        t0 = time.perf_counter()
        arr = await pz.create(
            array_id="experiment_001",
            shape=(1000, 1000),
            chunks=(100, 100),
            dtype="float64",
            node=cluster.nodes[0],
            cookie=cluster.cookie,
            nodes=cluster.nodes,
        )
        print(f"Mnesia set up and {arr} created in {time.perf_counter() - t0:.2f} s")
        data = np.random.default_rng(42).random((1000, 1000))
        t0 = time.perf_counter()
        await arr.set_slice(data, start=(0, 0), stop=(1000, 1000))
        dt = time.perf_counter() - t0
        print(f"set_slice of 8 MB (100 chunks, one transaction) in {dt:.2f} s")
        t0 = time.perf_counter()
        block = await arr.get_slice(start=(0, 0), stop=(100, 100))
        print(f"get_slice (0,0)..(100,100) in {(time.perf_counter() - t0) * 1000:.0f} ms")
        ok = bool(np.array_equal(block, data[:100, :100]))
        for other in cluster.nodes[1:]:
            copy = await pz.open(array_id="experiment_001", node=other, cookie=cluster.cookie)
            same = bool(np.array_equal(await copy.get_slice(), data))
            print(f"opened through {other}: all 1000x1000 values identical = {same}")
            ok = ok and same
    print("done" if ok else "FAILED")
    return 0 if ok else 1


# -- helpers ---------------------------------------------------------------------------------
class Fail(Exception):
    """A failure to report as one line (plus a hint) and exit 1."""


def _cluster_dir(args: argparse.Namespace) -> Path | None:
    return Path(args.dir) if getattr(args, "dir", None) else None


def _auth(args: argparse.Namespace, node: str | None) -> dict[str, Any]:
    """How to reach ``node``, as keyword arguments (``cookie``, ``tls``) for the library.

    The cookie: --cookie-file, else the environment (the library reads it), else the local
    cluster's for its own nodes, else none given (the library reads ~/.erlang.cookie). TLS:
    for a node of a local cluster started with ``--tls``, its client optfile unless
    --tls-optfile was given; otherwise none given (the library reads
    ``$PYRLANG_ZARR_SSL_DIST_OPTFILE``, which --tls-optfile sets)."""
    from pyrlang_zarr import devcluster
    from pyrlang_zarr.url import read_cookie_file

    out: dict[str, Any] = {}
    local = None if node is None else devcluster.cluster_of(node, _cluster_dir(args))
    if local is not None and local.client_optfile and not getattr(args, "tls_optfile", None):
        out["tls"] = str(local.client_optfile)
    if getattr(args, "cookie_file", None):
        out["cookie"] = read_cookie_file(args.cookie_file)
    elif local is not None and not (
        os.environ.get("ERLANG_COOKIE") or os.environ.get("RELEASE_COOKIE")
    ):
        out["cookie"] = local.cookie()
    return out


def _use_tls_optfile(path: str | None) -> None:
    """``--tls-optfile``: read now (a bad file is an error before anything connects), then
    left where every node of this process finds it (admin, doctor, stores all make theirs
    with ``tls=None``)."""
    if not path:
        return
    from pyrlang_zarr.erldist.tls import OPTFILE_ENV, read_optfile

    read_optfile(path).context()
    os.environ[OPTFILE_ENV] = str(Path(path).expanduser().absolute())


def _mnesia_node(spec: str) -> str | None:
    from pyrlang_zarr.url import parse_url

    return parse_url(spec).node if spec.startswith("mnesia://") else None


def _storage_options(args: argparse.Namespace, spec: str) -> dict[str, Any]:
    node = _mnesia_node(spec)
    if node is None:
        return {}
    return _auth(args, node)


def _table_row(cols: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()


def _dims(value: Sequence[int] | None) -> str:
    return "-" if value is None else "x".join(map(str, value)) or "()"


# -- cluster ---------------------------------------------------------------------------------
async def cmd_cluster_up(args: argparse.Namespace) -> int:
    from pyrlang_zarr import devcluster

    await devcluster.up(
        args.nodes,
        directory=_cluster_dir(args),
        prefix=args.prefix,
        cookie_file=Path(args.cookie_file) if args.cookie_file else None,
        table=args.table,
        ram_copies=args.ram,
        setup=not args.no_mnesia,
        extra_args=args.erl_arg or (),
        tls=args.tls,
    )
    return 0


async def cmd_cluster_status(args: argparse.Namespace) -> int:
    from pyrlang_zarr import devcluster

    state, statuses = await devcluster.status(_cluster_dir(args))
    if args.json:
        print(json.dumps(devcluster.as_json(state, statuses), indent=2))
    else:
        how = f"; TLS distribution ({state.client_optfile})" if state.tls_dir else ""
        print(f"cluster in {state.dir}; cookie {state.cookie_file}{how}")
        widths = (24, 8, 8, 10)
        print(_table_row(("NODE", "PID", "UP", "MNESIA"), widths))
        for s in statuses:
            up = "yes" if s.ok else "no"
            line = _table_row((s.name, str(s.pid or "-"), up, s.mnesia), widths)
            print(line + (f"  ({s.detail})" if s.detail else ""))
    return 0 if all(s.ok for s in statuses) else 1


async def cmd_cluster_down(args: argparse.Namespace) -> int:
    from pyrlang_zarr import devcluster

    devcluster.down(_cluster_dir(args), keep=args.keep)
    return 0


# -- ping ------------------------------------------------------------------------------------
async def cmd_ping(args: argparse.Namespace) -> int:
    from pyrlang_zarr import doctor

    checks = await doctor.ping(args.node, table=args.table, **_auth(args, args.node))
    if args.json:
        print(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        for c in checks:
            for line in c.lines():
                print(line)
    failed = [c for c in checks if c.failed]
    if not args.json:
        print(f"{args.node}: {'usable' if not failed else f'{len(failed)} problem(s)'}")
    return 1 if failed else 0


# -- frag ------------------------------------------------------------------------------------
async def cmd_frag(args: argparse.Namespace) -> int:
    from pyrlang_zarr import admin

    if "@" not in args.node or args.node.startswith("mnesia://"):
        raise Fail(f"frag takes a node name (name@host), got {args.node!r}")
    if args.add < 0:
        raise Fail(f"--add takes a number of fragments to add, got {args.add}")
    auth = _auth(args, args.node)
    if args.add or args.pool:
        t0 = time.perf_counter()
        n = await admin.grow_fragments(
            args.node, args.table, add=args.add, nodes=args.pool or (), **auth
        )
        if not args.json:
            print(f"{args.table}: {n} fragments ({time.perf_counter() - t0:.1f} s)")
    pool, frags = await admin.fragments(args.node, args.table, **auth)
    if args.json:
        print(json.dumps({"pool": pool, "fragments": [f.as_dict() for f in frags]}, indent=2))
        return 0
    if not pool:
        print(f"{args.table} is not fragmented: one table on {', '.join(frags[0].nodes)}")
        return 0
    rows = [("FRAGMENT", "RECORDS", "NODES")]
    rows += [(f.name, str(f.records), " ".join(f.nodes)) for f in frags]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print(_table_row(row, widths))
    print(f"{len(frags)} fragment(s) over the pool {' '.join(pool)}")
    return 0


# -- ls, info, rm ----------------------------------------------------------------------------
async def cmd_ls(args: argparse.Namespace) -> int:
    from pyrlang_zarr import admin
    from pyrlang_zarr.progress import human_bytes

    if "@" not in args.node or args.node.startswith("mnesia://"):
        raise Fail(f"ls takes a node name (name@host), got {args.node!r}")
    arrays = await admin.list_arrays(args.node, args.table, **_auth(args, args.node))
    if args.json:
        print(json.dumps([a.as_dict() for a in arrays], indent=2))
        return 0
    rows = [("ARRAY", "KIND", "SHAPE", "DTYPE", "CHUNKS", "RECORDS", "STORED", "REPLICAS")]
    for a in arrays:
        r = a.replicas
        reps = f"{len(r.running)}/{len(r.replicas)}" if r else "?"
        chunks = _dims(a.chunks) + (f" in {_dims(a.shards)}" if a.shards else "")
        rows.append(
            (
                a.array_id,
                a.kind,
                _dims(a.shape) if a.kind == "array" else "-",
                a.dtype or "-",
                chunks if a.kind == "array" else "-",
                str(a.records),
                human_bytes(a.stored_bytes),
                reps,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(_table_row(row, widths))
    total = sum(a.stored_bytes for a in arrays)
    if arrays and arrays[0].replicas is not None:
        where = arrays[0].replicas.describe()
    else:
        where = "?"
    print(f"{len(arrays)} array(s), {human_bytes(total)} in {args.table}: {where}")
    return 0


async def cmd_info(args: argparse.Namespace) -> int:
    import zarr.api.asynchronous as zasync

    from pyrlang_zarr import admin
    from pyrlang_zarr.progress import human_bytes
    from pyrlang_zarr.url import parse_url

    url = parse_url(args.url)
    if url.table is None or url.array_id is None:
        raise Fail(f"{args.url}: expected mnesia://NODE/TABLE/ARRAY_ID")
    auth = _auth(args, url.node)
    a = await admin.array_info(url.node, url.table, url.array_id, **auth)
    store = url.store(read_only=True, **auth)
    zinfo = ""
    try:
        node = await zasync.open(store=store, path=url.path or None, mode="r")
        zinfo = str(node.info)
    except Exception as exc:  # a half-copied or foreign record set still gets its counts
        zinfo = f"(zarr cannot open it: {exc})"
    if args.json:
        print(json.dumps({**a.as_dict(), "url": str(url), "zarr": zinfo}, indent=2))
        return 0
    print(f"URL                : {url}")
    print(f"Records            : {a.records}")
    print(f"Stored             : {human_bytes(a.stored_bytes)} ({a.stored_bytes} bytes)")
    if a.replicas is not None:
        print(f"Table              : {a.replicas.table} ({a.replicas.type})")
        print(f"Replicas           : {a.replicas.describe()}")
    print(zinfo)
    return 0


async def cmd_rm(args: argparse.Namespace) -> int:
    from pyrlang_zarr import admin
    from pyrlang_zarr.progress import human_bytes
    from pyrlang_zarr.url import parse_url

    url = parse_url(args.url)
    if url.table is None or url.array_id is None or url.path:
        raise Fail(f"rm removes a whole array: expected mnesia://NODE/TABLE/ARRAY_ID, got {url}")
    auth = _auth(args, url.node)
    if args.dry_run:
        a = await admin.array_info(url.node, url.table, url.array_id, **auth)
        print(f"would remove {url} ({a.records} records, {human_bytes(a.stored_bytes)})")
        return 0
    a = await admin.remove_array(url.node, url.table, url.array_id, **auth)
    print(f"removed {url} ({a.records} records, {human_bytes(a.stored_bytes)})")
    return 0


# -- watch -----------------------------------------------------------------------------------
def _region_arg(text: str | None) -> tuple[list[int], list[int]] | None:
    """``--region 0,0:10,20`` (start:stop, one index per dimension)."""
    if text is None:
        return None
    try:
        start, stop = text.split(":")
        return [int(i) for i in start.split(",")], [int(i) for i in stop.split(",")]
    except ValueError:
        raise Fail(f"--region {text!r}: expected START:STOP such as 0,0:10,20") from None


def _event_line(event: Any, as_json: bool) -> str:
    if as_json:
        return json.dumps(
            {
                "time": time.time(),
                "kind": event.kind,
                "chunk": event.chunk,
                "region": event.region,
                "node": event.node,
            }
        )
    stamp = time.strftime("%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"
    where = ""
    if event.region is not None:
        where = " [" + ", ".join(f"{a}:{b}" for a, b in zip(*event.region, strict=True)) + "]"
    chunk = "" if event.chunk is None else " chunk " + ",".join(map(str, event.chunk))
    note = {"resync": " (changes may have been missed: read the region again)"}.get(event.kind, "")
    return f"{stamp} {event.kind}{chunk}{where} via {event.node}{note}"


async def cmd_watch(args: argparse.Namespace) -> int:
    from pyrlang_zarr.url import parse_url

    url = parse_url(args.url)
    if url.table is None or url.array_id is None or url.path:
        raise Fail(f"watch follows a root array: expected mnesia://NODE/TABLE/ARRAY_ID, got {url}")
    if args.count is not None and args.count < 1:
        raise Fail("--count must be at least 1")
    region = _region_arg(args.region)
    arr = await pz.open(
        url.array_id,
        node=url.node,
        table_name=url.table,
        read_only=True,
        **_auth(args, url.node),
    )
    seen = 0
    async with arr.watch(region) as w:
        print(f"watching {url} {_dims(arr.shape)} via {w.node}", file=sys.stderr, flush=True)
        async for event in w:
            print(_event_line(event, args.json), flush=True)
            seen += 1
            if args.count is not None and seen >= args.count:
                break
    return 0


# -- cp --------------------------------------------------------------------------------------
async def cmd_cp(args: argparse.Namespace) -> int:
    from pyrlang_zarr import transfer
    from pyrlang_zarr.errors import TableNotFound
    from pyrlang_zarr.progress import ProgressBar

    src = transfer.location(args.src, write=False, **_storage_options(args, args.src))
    dst = transfer.location(args.dst, write=True, **_storage_options(args, args.dst))
    if args.progress == "auto":
        bar: ProgressBar | None = ProgressBar(sys.stderr)
    elif args.progress == "bar":
        bar = ProgressBar(sys.stderr, tty=True)
    elif args.progress == "lines":
        bar = ProgressBar(sys.stderr, tty=False)
    else:
        bar = None
    print(f"copy {args.src} -> {args.dst}", file=sys.stderr)
    try:
        report = await transfer.copy(
            src, dst, overwrite=args.overwrite, verify=args.verify, progress=bar, jobs=args.jobs
        )
    except transfer.CopyError as exc:
        raise Fail(str(exc)) from None
    except TableNotFound as exc:
        raise Fail(
            f"{exc}; to create the table, add ?nodes=NODE1,NODE2,... (its replicas) to the "
            "mnesia:// URL"
        ) from None
    print(f"copied {args.src} -> {args.dst}: {report.describe()}")
    return 0


# -- the parser ------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    from pyrlang_zarr.store import DEFAULT_TABLE

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Zarr arrays in Mnesia: local clusters, checks, listing, copies.",
        epilog="URLs: mnesia://NODE/TABLE/ARRAY_ID (NODE as name@host). Cookie: --cookie-file, "
        "else ERLANG_COOKIE, else the local cluster's (for its nodes), else ~/.erlang.cookie.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cookie = argparse.ArgumentParser(add_help=False)
    cookie.add_argument("--cookie-file", metavar="FILE", help="file holding the cookie (mode 400)")
    cookie.add_argument(
        "--tls-optfile",
        metavar="FILE",
        help="the cluster runs TLS distribution (-proto_dist inet_tls): its ssl_dist_optfile, "
        "or a client's (default: $PYRLANG_ZARR_SSL_DIST_OPTFILE)",
    )
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--dir",
        metavar="DIR",
        help="the local cluster's directory (default: $PYRLANG_ZARR_CLUSTER_DIR or "
        "~/.local/state/pyrlang-zarr/cluster)",
    )

    p = sub.add_parser("demo", help="run the main job on a local cluster it starts")
    p.add_argument("--nodes", type=int, default=3, help="how many Erlang nodes (default 3)")
    p.add_argument(
        "--tls", action="store_true", help="the nodes run TLS distribution (needs cryptography)"
    )
    p.set_defaults(func=None)

    p = sub.add_parser("cluster", help="local Erlang nodes that keep running: up, status, down")
    csub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = csub.add_parser("up", parents=[where], help="start local nodes, set Mnesia up, return")
    q.add_argument("--nodes", type=int, default=3, help="how many (default 3)")
    q.add_argument("--prefix", default="node", help="names are PREFIX1@host, ... (default node)")
    q.add_argument(
        "--cookie-file",
        metavar="FILE",
        help="the nodes' cookie (default: ~/.erlang.cookie, created if missing)",
    )
    q.add_argument("--table", default=DEFAULT_TABLE, help="table to set up (default %(default)s)")
    q.add_argument("--ram", action="store_true", help="RAM tables (ram_copies)")
    q.add_argument("--no-mnesia", action="store_true", help="start the nodes only")
    q.add_argument(
        "--erl-arg",
        action="append",
        metavar="ARG",
        help="extra erl argument, repeatable (--erl-arg=-flag for ones starting with -)",
    )
    q.add_argument(
        "--tls",
        action="store_true",
        help="TLS distribution, with a CA and certificates made in DIR/tls (needs cryptography)",
    )
    q.set_defaults(func=cmd_cluster_up)
    q = csub.add_parser("status", parents=[where], help="are the nodes up, is Mnesia running")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_cluster_status)
    q = csub.add_parser("down", parents=[where], help="stop the nodes and remove their files")
    q.add_argument("--keep", action="store_true", help="keep the Mnesia data for the next up")
    q.set_defaults(func=cmd_cluster_down)

    p = sub.add_parser("ping", parents=[cookie, where], help="check a node; each problem's fix")
    p.add_argument("node", metavar="NODE", help="name@host")
    p.add_argument("--table", default=DEFAULT_TABLE)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ping)

    p = sub.add_parser("ls", parents=[cookie, where], help="the arrays in a table")
    p.add_argument("node", metavar="NODE", help="name@host")
    p.add_argument("--table", default=DEFAULT_TABLE)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("info", parents=[cookie, where], help="one array in detail")
    p.add_argument("url", metavar="URL", help="mnesia://NODE/TABLE/ARRAY_ID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("rm", parents=[cookie, where], help="delete one array")
    p.add_argument("url", metavar="URL", help="mnesia://NODE/TABLE/ARRAY_ID")
    p.add_argument("-n", "--dry-run", action="store_true", help="say what would be removed")
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser(
        "frag",
        parents=[cookie, where],
        help="a fragmented table's fragments; add fragments or nodes while it is in use",
    )
    p.add_argument("node", metavar="NODE", help="name@host")
    p.add_argument("--table", default=DEFAULT_TABLE)
    p.add_argument("--add", type=int, default=0, metavar="N", help="add N fragments")
    p.add_argument(
        "--node",
        dest="pool",
        action="append",
        metavar="NODE",
        help="a node to join the table's node pool first (repeatable)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_frag)

    p = sub.add_parser(
        "cp",
        parents=[cookie, where],
        help="copy a zarr array or group (local dir, any zarr URL, mnesia://), resumable",
    )
    p.add_argument("src", metavar="SRC", help="a directory, a URL zarr opens, or mnesia://...")
    p.add_argument("dst", metavar="DST", help="the same kinds; created if missing")
    p.add_argument("--overwrite", action="store_true", help="replace a different array at DST")
    p.add_argument("--verify", action="store_true", help="read everything back and compare")
    p.add_argument("--jobs", type=int, default=8, help="keys in flight (default 8)")
    p.add_argument(
        "--progress",
        choices=("auto", "bar", "lines", "none"),
        default="auto",
        help="a bar on a terminal, plain lines otherwise (auto, the default)",
    )
    p.set_defaults(func=cmd_cp)

    p = sub.add_parser(
        "watch", parents=[cookie, where], help="print an array's chunk changes as they commit"
    )
    p.add_argument("url", metavar="URL", help="mnesia://NODE/TABLE/ARRAY_ID")
    p.add_argument("--region", metavar="START:STOP", help="only chunks this box touches: 0,0:10,20")
    p.add_argument("--count", type=int, help="stop after this many events")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_watch)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.nodes < 1:
            parser.error("--nodes must be at least 1")
        return asyncio.run(demo(args.nodes, args.tls))
    if getattr(args, "jobs", 1) < 1:
        parser.error("--jobs must be at least 1")
    from pyrlang_zarr.devcluster import ClusterError

    try:
        _use_tls_optfile(getattr(args, "tls_optfile", None))
        code: int = asyncio.run(args.func(args))
        return code
    except KeyboardInterrupt:
        again = " ".join([PROG, *(argv if argv is not None else sys.argv[1:])])
        hint = f"; run `{again}` again to finish" if args.command == "cp" else ""
        print(f"\n{PROG}: interrupted{hint}", file=sys.stderr)
        return 130
    except (Fail, ClusterError, pz.PyrlangZarrError, OSError, ValueError) as exc:
        if args.debug:
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
