"""Copy a zarr array or group between stores: a local directory, any URL zarr opens, and
``mnesia://`` URLs, in any direction (Mnesia to Mnesia too).

The copy makes the destination hold exactly the source's keys and bytes:

- **Safe to run again.** Keys the destination already holds with the same bytes are skipped
  (compared byte for byte), others are written, and keys the source does not have are
  removed, so an interrupted copy run again finishes the job and nothing more. A
  destination that holds a *different* array is refused unless ``overwrite=True``, which
  clears it first.
- **Checked.** At the end the destination's keys must be the source's and their sizes must
  add up to the bytes read; ``verify=True`` also reads every key back and compares it.
- **Order.** Into Mnesia the root metadata goes first (it decides how chunk keys become
  Mnesia keys; written later, every chunk record would have to be moved); elsewhere it goes
  last, so an interrupted copy is not an openable array yet.
- Progress is reported after every key (:mod:`pyrlang_zarr.progress`).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zarr.abc.store import Store
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.storage import FsspecStore, LocalStore

from pyrlang_zarr.progress import Progress, ProgressCallback, resolve
from pyrlang_zarr.store import MnesiaStore
from pyrlang_zarr.url import PREFIX, store_from_url

__all__ = ["CopyError", "CopyReport", "Location", "copy", "location"]

METADATA_NAMES = frozenset({"zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata"})
ROOT_METADATA = ("zarr.json", ".zarray", ".zgroup")


class CopyError(Exception):
    """The copy cannot start (source empty, destination holds another array, ...) or its
    final check failed."""


@dataclass
class Location:
    """A store and a path inside it (``""``: its root), as ``cp`` takes them."""

    store: Store
    path: str
    label: str

    def key(self, rel: str) -> str:
        return f"{self.path}/{rel}" if self.path else rel

    def rel(self, key: str) -> str:
        return key[len(self.path) + 1 :] if self.path else key

    async def keys(self) -> list[str]:
        prefix = self.path + "/" if self.path else ""
        return [self.rel(k) async for k in self.store.list_prefix(prefix)]

    @property
    def is_mnesia(self) -> bool:
        return isinstance(self.store, MnesiaStore)


def location(spec: str, *, write: bool, **storage_options: Any) -> Location:
    """``mnesia://...`` -> a :class:`MnesiaStore`; another URL -> zarr's ``FsspecStore``;
    anything else -> a local directory (``LocalStore``). ``storage_options`` go to the
    ``mnesia://`` store or to fsspec."""
    if spec.startswith(PREFIX):
        store, path = store_from_url(spec, read_only=not write, **storage_options)
        return Location(store, path.strip("/"), spec)
    if "://" in spec:
        fs_store = FsspecStore.from_url(
            spec, storage_options=storage_options or None, read_only=not write
        )
        return Location(fs_store, "", spec)
    if storage_options:
        raise TypeError(f"storage options given for the local directory {spec!r}")
    root = Path(spec).expanduser()
    if not write and not root.is_dir():
        raise CopyError(f"{spec}: no such directory")
    return Location(LocalStore(root, read_only=not write), "", spec)


@dataclass(frozen=True)
class CopyReport:
    """What a copy did. ``skipped``: keys already there with the same bytes."""

    keys: int
    copied: int
    skipped: int
    removed: int
    bytes_copied: int
    bytes_total: int
    verified: bool
    elapsed: float

    def describe(self) -> str:
        check = "read back and compared" if self.verified else "keys and sizes checked"
        removed = f", {self.removed} stale removed" if self.removed else ""
        return (
            f"{self.keys} keys: {self.copied} copied, {self.skipped} already there{removed}; "
            f"{self.bytes_total} bytes; {check}"
        )


def _is_metadata(key: str) -> bool:
    return key.rsplit("/", 1)[-1] in METADATA_NAMES


def _same(a: Buffer | None, b: Buffer | None) -> bool:
    if a is None or b is None:
        return a is b
    x, y = a.as_numpy_array(), b.as_numpy_array()
    return bool(x.nbytes == y.nbytes and x.tobytes() == y.tobytes())


def _md5(buf: Buffer) -> bytes:
    return hashlib.md5(buf.as_numpy_array().tobytes()).digest()


async def _clear(loc: Location) -> None:
    if not loc.path:
        await loc.store.clear()
    else:
        await loc.store.delete_dir(loc.path)


async def copy(
    src: Location,
    dst: Location,
    *,
    overwrite: bool = False,
    verify: bool = False,
    progress: ProgressCallback | bool | None = None,
    jobs: int = 8,
    clock: Callable[[], float] = time.monotonic,
) -> CopyReport:
    """Copy everything under ``src`` to ``dst`` (see the module docstring)."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    callback = resolve(progress)
    proto = default_buffer_prototype()
    t0 = clock()
    await src.store._ensure_open()
    await dst.store._ensure_open()
    if src.store == dst.store and src.path == dst.path:
        raise CopyError(f"{src.label} and {dst.label} are the same place")

    keys = sorted(await src.keys())
    if not keys:
        raise CopyError(f"nothing to copy: {src.label} holds no zarr keys")
    roots = [k for k in ROOT_METADATA if k in keys]
    if not roots:
        raise CopyError(f"{src.label} is not a zarr array or group: no {' / '.join(ROOT_METADATA)}")

    existing = set(await dst.keys())
    if existing:
        theirs = [k for k in ROOT_METADATA if k in existing]
        differs = False
        for k in theirs:
            a, b = await asyncio.gather(
                src.store.get(src.key(k), proto), dst.store.get(dst.key(k), proto)
            )
            differs = differs or not _same(a, b)
        if differs and not overwrite:
            raise CopyError(
                f"{dst.label} already holds a different zarr array or group: pass "
                "--overwrite (overwrite=True) to replace it"
            )
        if overwrite and differs:
            await _clear(dst)
            existing = set()

    # Into Mnesia the root metadata must come first (it maps chunk keys to records).
    metadata = sorted((k for k in keys if _is_metadata(k)), key=lambda k: -k.count("/"))
    chunks = [k for k in keys if not _is_metadata(k)]
    root_docs = [k for k in metadata if k in ROOT_METADATA]
    nested = [k for k in metadata if k not in ROOT_METADATA]
    if dst.is_mnesia and not dst.path:
        first, plan = root_docs, [*chunks, *nested]
    else:
        first, plan = [], [*chunks, *nested, *root_docs]

    done = skipped = copied = 0
    nbytes = copied_bytes = 0

    def report(finished: bool = False) -> None:
        if callback is not None:
            callback(
                Progress(
                    "copy",
                    done,
                    len(keys),
                    nbytes,
                    clock() - t0,
                    chunks_skipped=skipped,
                    finished=finished,
                )
            )

    async def one(k: str) -> None:
        nonlocal done, skipped, copied, nbytes, copied_bytes
        data = await src.store.get(src.key(k), proto)
        if data is None:
            raise CopyError(f"{src.label}: {k} disappeared during the copy; run it again")
        size = len(data)
        if k in existing and _same(data, await dst.store.get(dst.key(k), proto)):
            skipped += 1
        else:
            await dst.store.set(dst.key(k), data)
            copied += 1
            copied_bytes += size
        done += 1
        nbytes += size
        report()

    report()
    for k in first:
        await one(k)
    limit = asyncio.Semaphore(jobs)

    async def limited(k: str) -> None:
        async with limit:
            await one(k)

    tasks = [asyncio.ensure_future(limited(k)) for k in plan]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise

    wanted = set(keys)
    stale = sorted(existing - wanted)
    for k in stale:
        await dst.store.delete(dst.key(k))

    # the check: the same keys, and sizes adding up to what was read
    after = set(await dst.keys())
    if after != wanted:
        missing, extra = sorted(wanted - after), sorted(after - wanted)
        raise CopyError(
            f"check failed: {dst.label} lacks {missing[:5]} and has extra {extra[:5]} keys"
        )
    if not isinstance(dst.store, FsspecStore):  # remote file systems may not report sizes
        stored = await dst.store.getsize_prefix(dst.path + "/" if dst.path else "")
        if stored != nbytes:
            raise CopyError(
                f"check failed: {dst.label} holds {stored} bytes, {nbytes} were read from "
                f"{src.label}"
            )
    if verify:

        async def check(k: str) -> None:
            async with limit:
                a, b = await asyncio.gather(
                    src.store.get(src.key(k), proto), dst.store.get(dst.key(k), proto)
                )
            if a is None or b is None or _md5(a) != _md5(b):
                raise CopyError(f"verify failed: {k} differs between {src.label} and {dst.label}")

        await asyncio.gather(*(check(k) for k in keys))
    report(finished=True)
    return CopyReport(
        keys=len(keys),
        copied=copied,
        skipped=skipped,
        removed=len(stale),
        bytes_copied=copied_bytes,
        bytes_total=nbytes,
        verified=verify,
        elapsed=clock() - t0,
    )
