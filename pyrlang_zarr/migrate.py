"""Move records written by earlier versions of this project to ExZarr's forms.

Earlier versions kept a root array's chunks at ``{Id, {I, J}}`` (the form ExZarr's docs
show) and a zarr v2 array's ``.zarray`` at ``{Id, <<".zarray">>}``. ExZarr's code reads
``{Id, {chunk, {I, J}}}`` and ``{Id, metadata}``. The store still reads the earlier forms (and
rewrites a chunk in ExZarr's form whenever it writes it), so nothing breaks before a
migration; an Elixir application sees the arrays only after one.

The migration is **idempotent and resumable**: each batch of records is moved in one
transaction, on the server (no chunk data crosses the network), and a record already in
ExZarr's form wins over an earlier one (it is what the store reads). Run it again after an
interruption; it continues where it stopped. It checks, in each transaction, that the
array's metadata is the one it mapped the keys with, as every write does. Only chunk records
of the rank the array's metadata gives are moved: a record the store cannot name is left
alone (and reported). Stop clients running versions older than this one first: they would
keep writing the earlier forms.

From the command line::

    python -m pyrlang_zarr.migrate --node node1@host [--table zarr_storage] [--array ID ...]

or from Python: ``await pyrlang_zarr.migrate.migrate("node1@host", cookie=...)``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pyrlang_zarr.erldist.node_registry import shared_node
from pyrlang_zarr.keys import CHUNK, METADATA, Root, is_v2_document, version
from pyrlang_zarr.mnesia.client import Conflict, Delete, Guard, MnesiaClient, Move, Write
from pyrlang_zarr.settings import DEFAULT_TABLE
from pyrlang_zarr.store import MnesiaStore
from pyrlang_zarr.term import Atom

__all__ = ["ArrayMigration", "find_arrays", "migrate", "migrate_array"]

BATCH = 500
_V2_PATH = b".zarray"
_V1 = Atom("$1")
_V2 = Atom("$2")
_ANY = Atom("_")


@dataclass
class ArrayMigration:
    """What the migration did to one array."""

    array_id: str
    chunks_moved: int = 0
    metadata_moved: bool = False
    left_alone: int = 0  # earlier-form records of another rank, or with no metadata to name them


def _is_index(x: Any) -> bool:
    return type(x) is tuple and all(type(i) is int for i in x)


async def find_arrays(client: MnesiaClient) -> list[Any]:
    """Array ids (binary or atom) that have records in an earlier form."""
    tab = client.table_atom
    spec: list[Any] = [
        ((tab, (_V1, _V2_PATH), _ANY), [], [_V1]),
        ((tab, (_V1, _V2), _ANY), [(Atom("is_tuple"), _V2)], [((_V1, _V2),)]),
    ]
    ids: dict[Any, None] = {}
    for item in await client.select(spec, "find arrays"):
        if type(item) is tuple and len(item) == 2:
            aid, x = item
            if _is_index(x):
                ids[aid] = None
        else:
            ids[item] = None
    return [aid for aid in ids if type(aid) is Atom or isinstance(aid, bytes)]


async def migrate_array(store: MnesiaStore, *, batch: int = BATCH) -> ArrayMigration:
    """Move one array's records in an earlier form to ExZarr's, ``batch`` per transaction."""
    if batch < 1:
        raise ValueError(f"batch must be positive, got {batch}")
    store.check_writable()
    client = await store.client()
    report = ArrayMigration(str(store.array_id))
    key = store.mnesia_key
    for _ in range(20):
        root = await store.root()
        if root.m is None and root.za is not None and is_v2_document(root.za):
            guards = [
                Guard(key(METADATA), None, write=True),
                Guard(key(_V2_PATH), version(root.za)),
            ]
            try:
                await client.guarded(guards, [Write(key(METADATA), root.za), Delete(key(_V2_PATH))])
            except Conflict:
                continue
            report.metadata_moved = True
            continue
        layout = root.layout
        tab = client.table_atom
        spec = [((tab, key(_V1), _ANY), [(Atom("is_tuple"), _V1)], [_V1])]
        earlier = [x for x in await client.select(spec, "list") if _is_index(x)]
        movable = [x for x in earlier if layout is not None and len(x) == layout.ndim]
        report.left_alone = len(earlier) - len(movable)
        try:
            for start in range(0, len(movable), batch):
                part = movable[start : start + batch]
                moves = [Move(key(x), key((CHUNK, x))) for x in part]
                await client.guarded(_guards(store, root), moves)
                report.chunks_moved += len(part)
        except Conflict:  # the metadata changed: map again
            continue
        return report
    raise RuntimeError(f"the metadata of {store.array_id!r} kept changing during the migration")


def _guards(store: MnesiaStore, root: Root) -> list[Guard]:
    return [Guard(store.mnesia_key(x), v) for x, v in root.guards()]


async def migrate(
    node: str,
    *,
    cookie: str | None = None,
    table_name: str = DEFAULT_TABLE,
    array_ids: Iterable[str] | None = None,
    batch: int = BATCH,
    timeout: float | None = 60.0,
) -> list[ArrayMigration]:
    """Migrate ``array_ids`` (default: every array with records in an earlier form) of
    ``table_name``, talking to ``node``."""
    if array_ids is None:
        probe = MnesiaStore("migration", node=node, cookie=cookie, table_name=table_name)
        found = await find_arrays(await probe.client())
        ids: list[str] = []
        for aid in found:
            if type(aid) is Atom:
                ids.append(aid)
            else:
                try:
                    ids.append(bytes(aid).decode("utf-8"))
                except UnicodeDecodeError:
                    continue  # not an id a store can be given
    else:
        ids = list(array_ids)
    reports = []
    for aid in ids:
        store = MnesiaStore(aid, node=node, cookie=cookie, table_name=table_name, timeout=timeout)
        reports.append(await migrate_array(store, batch=batch))
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pyrlang_zarr.migrate",
        description="Move this project's earlier Mnesia records to ExZarr's forms "
        "(idempotent, resumable). The cookie comes from ERLANG_COOKIE or ~/.erlang.cookie.",
    )
    parser.add_argument("--node", required=True, help="an Erlang node of the cluster")
    parser.add_argument("--table", default=DEFAULT_TABLE, help="the Mnesia table")
    parser.add_argument("--array", action="append", help="an array id (default: all)")
    parser.add_argument("--batch", type=int, default=BATCH, help="records per transaction")
    args = parser.parse_args(argv)

    async def run() -> list[ArrayMigration]:
        try:
            return await migrate(
                args.node, table_name=args.table, array_ids=args.array, batch=args.batch
            )
        finally:
            await shared_node(None).close()

    reports = asyncio.run(run())
    json.dump([asdict(r) for r in reports], sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
