"""The ExZarr-style array API: ``create``, ``open``, ``set_slice``, ``get_slice``.

zarr does the chunking and the codecs; this module adds what ExZarr's Mnesia backend
promises and more:

- ``set_slice`` commits every chunk it touches in **one** Mnesia transaction: all or none.
  zarr's own write path runs against a :class:`~pyrlang_zarr.overlay.WriteBuffer` that
  keeps the chunk writes and notes an md5 of every chunk it had to read (a partial chunk
  is read, merged and rewritten); the commit checks on the server that those chunks are
  unchanged, then writes. A
  concurrent writer to the same chunk makes the commit retry from the start, so no update
  is lost (ExZarr's per-chunk read-modify-write can lose one).
- ``get_slice`` reads every chunk it needs in one transaction: a consistent set of chunks,
  never half of a concurrent ``set_slice``.
- An array knows the root metadata record it was opened with (:class:`~pyrlang_zarr.keys.Root`):
  every ``set_slice`` commit checks on the server that it is unchanged, and every
  ``get_slice`` reads it alongside the chunks. A change that keeps the array the same (its
  attributes) is taken in stride; if another client re-created or resized the array, the
  call raises :class:`~pyrlang_zarr.errors.TransactionError` instead of writing or reading
  with the old layout and codecs.
- Bad arguments raise ``ValueError``/``TypeError``/``IndexError`` before anything is sent,
  and before any table is set up on the cluster.
- ``create(..., exzarr=True)`` makes an array ExZarr applications can read and write too
  (:mod:`pyrlang_zarr.exzarr`).
- ``create`` over an existing array or group raises :class:`ArrayExists` (a ``ValueError``,
  and zarr's ``ContainsArrayError``) before anything is written; ``overwrite=True`` replaces it.

The records are reached through the store's public seam only (``client``, ``root``,
``mnesia_key``, ``check_writable``), and stores are opened with zarr's public ``Store.open``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import zarr.api.asynchronous as zasync
from zarr import AsyncArray
from zarr.abc.store import Store
from zarr.core._info import ArrayInfo
from zarr.core.buffer import default_buffer_prototype
from zarr.core.metadata import ArrayV2Metadata, ArrayV3Metadata
from zarr.errors import ContainsArrayError, ContainsGroupError
from zarr.storage import MemoryStore, StorePath

from pyrlang_zarr import exzarr as exzarr_format
from pyrlang_zarr import rawchunks
from pyrlang_zarr.errors import NotFound, PossiblyStaleRead, PyrlangZarrError, TransactionError
from pyrlang_zarr.keys import V2_ARRAY_METADATA_KEY, Root
from pyrlang_zarr.mnesia.client import Conflict, MnesiaClient
from pyrlang_zarr.overlay import Snapshot, WriteBuffer
from pyrlang_zarr.progress import ProgressCallback, SliceProgress
from pyrlang_zarr.settings import DEFAULT_TABLE, StoreSettings
from pyrlang_zarr.store import MnesiaStore

if TYPE_CHECKING:
    from pyrlang_zarr.watch import Watch

MAX_RETRIES = 20


class ArrayExists(PyrlangZarrError, ContainsArrayError, ContainsGroupError):
    """``create`` found an array (or a group) under the array id: nothing was written, and
    ``overwrite=True`` replaces it. Also zarr's ``ContainsArrayError`` and
    ``ContainsGroupError`` (both ``ValueError``), which zarr raises in its place."""


def summary_html(array: MnesiaArray, caption: str) -> str:
    """The HTML table notebooks show for ``array`` (no I/O): URL, shape, chunks, dtype,
    uncompressed size, replicas."""
    import html

    from pyrlang_zarr.progress import human_bytes
    from pyrlang_zarr.url import url_of

    nbytes = int(np.prod(array.shape, dtype=np.int64)) * array.dtype.itemsize
    settings = array.store.settings
    rows = "".join(
        f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
        f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>"
        for k, v in (
            ("URL", url_of(array.store)),
            ("Shape", array.shape),
            ("Chunks", array.chunks),
            ("Data type", array.dtype),
            ("Size", human_bytes(nbytes) + " uncompressed"),
            ("Replicas", ", ".join(settings.nodes) or array.store.node),
        )
    )
    return f"<table><caption>{html.escape(caption)}</caption>{rows}</table>"


class MnesiaArray:
    """A zarr array stored in Mnesia, with ExZarr's slice API (numpy in, numpy out)."""

    def __init__(
        self, store: MnesiaStore, array: AsyncArray[Any], root: Root | None = None
    ) -> None:
        self.store = store
        self.zarr = array
        # the root metadata records the array was opened with (None: read on first use)
        self._root = root

    @property
    def root(self) -> Root | None:
        """The root metadata records (:class:`~pyrlang_zarr.keys.Root`) the array's chunks are
        mapped with: each commit checks they are unchanged."""
        return self._root

    async def _known_root(self) -> Root:
        if self._root is None:
            await self._follow(await self.store.root())
        assert self._root is not None
        return self._root

    def __repr__(self) -> str:
        return (
            f"<MnesiaArray {self.array_id!r} shape={self.shape} chunks={self.chunks} "
            f"dtype={self.dtype} on {self.store.node}>"
        )

    @property
    def info(self) -> ArrayInfo:
        """zarr's summary of the array (type, shape, chunks, codecs, store), without I/O."""
        info: ArrayInfo = self.zarr.info
        return info

    async def info_complete(self) -> ArrayInfo:
        """:attr:`info` plus what it takes reading the store: bytes stored, chunks written."""
        info: ArrayInfo = await self.zarr.info_complete()
        return info

    def _repr_html_(self) -> str:
        return summary_html(self, "pyrlang_zarr.MnesiaArray")

    @property
    def array_id(self) -> str:
        return self.store.array_id

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.zarr.shape)

    @property
    def chunks(self) -> tuple[int, ...]:
        return tuple(self.zarr.chunks)

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(self.zarr.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _region(
        self, start: Sequence[int] | None, stop: Sequence[int] | None
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        start = tuple(start) if start is not None else (0,) * self.ndim
        stop = tuple(stop) if stop is not None else self.shape
        for name, corner in (("start", start), ("stop", stop)):
            if len(corner) != self.ndim:
                raise ValueError(
                    f"{name} has {len(corner)} dimensions, the array has {self.ndim}: "
                    f"give one index per dimension of shape {self.shape}"
                )
            for i in corner:
                if isinstance(i, bool) or not isinstance(i, int | np.integer):
                    raise TypeError(f"{name} must hold integers, got {corner!r}")
        for d, (a, b, n) in enumerate(zip(start, stop, self.shape, strict=True)):
            if a < 0 or b < 0:
                raise IndexError(f"negative index in dimension {d}: start={start}, stop={stop}")
            if a > b:
                raise ValueError(f"start {start} is after stop {stop} in dimension {d}")
            if b > n:
                raise IndexError(
                    f"stop {stop} is beyond the array's shape {self.shape} in dimension {d}"
                )
        return tuple(map(int, start)), tuple(map(int, stop))

    def _chunk_keys(self, start: tuple[int, ...], stop: tuple[int, ...]) -> list[str]:
        """The store keys of every chunk (shard, if sharded) the region touches."""
        grid = self.zarr.shards or self.zarr.chunks
        ranges = [range(a // c, -(-b // c)) for a, b, c in zip(start, stop, grid, strict=True)]
        meta = self.zarr.metadata
        return [meta.encode_chunk_key(idx) for idx in itertools.product(*ranges)]

    def _on(self, overlay: Store) -> AsyncArray[Any]:
        """This array's zarr view over ``overlay`` instead of the store."""
        return AsyncArray(
            metadata=self.zarr.metadata,
            store_path=StorePath(overlay, self.zarr.store_path.path),
            config=self.zarr.config,
        )

    async def set_slice(
        self,
        data: npt.ArrayLike,
        start: Sequence[int] | None = None,
        stop: Sequence[int] | None = None,
        *,
        progress: ProgressCallback | bool | None = None,
        part_chunks: int | None = None,
    ) -> None:
        """Write ``data`` into ``[start, stop)``: every chunk it touches, or none of them.

        With ``progress`` (a callback taking a :class:`~pyrlang_zarr.progress.Progress`, or
        True for a bar on stderr when it is a terminal) the region is written in parts of
        about ``part_chunks`` chunks, each part its own transaction: all or none per part.
        """
        if progress is not None and progress is not False:
            await SliceProgress(self, progress, part_chunks).set_slice(data, start, stop)
            return
        start, stop, values = self._writable(data, start, stop)
        if 0 in values.shape:
            return
        client = await self.store.client()
        raw = rawchunks.chunks_to_write(self.zarr, values, start, stop)
        for _attempt in range(MAX_RETRIES):
            root = await self._known_root()
            root_keys = {self.store.mnesia_key(x) for x, _ in root.guards()}
            buffer = WriteBuffer(self.store, client, root)
            await self._stage(buffer, start, stop, values, raw)
            try:
                await buffer.commit()  # checks the reads and the root metadata, then writes
                return
            except Conflict as conflict:
                if root_keys.intersection(conflict.keys):
                    await self._follow(await self.store.root())
                continue
        raise TransactionError(
            f"transaction_error: set_slice on {self.array_id!r} kept conflicting with "
            f"concurrent writers ({MAX_RETRIES} attempts); nothing was written"
        )

    async def _stage(
        self,
        buffer: WriteBuffer,
        start: tuple[int, ...],
        stop: tuple[int, ...],
        values: np.ndarray[Any, Any],
        raw: dict[str, memoryview | None] | None,
    ) -> None:
        """Put the write of ``values`` into ``[start, stop)`` in ``buffer``: ``raw``
        (:func:`rawchunks.chunks_to_write`'s whole chunks, as stored) as they are, else
        through zarr (which reads and merges what it covers in part)."""
        if raw is None:
            selection = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
            await self._on(buffer).setitem(selection, values)
            return
        for key, chunk in raw.items():  # zarr's pipeline would only copy them
            buffer.keep(key, chunk)

    def _writable(
        self, data: npt.ArrayLike, start: Sequence[int] | None, stop: Sequence[int] | None
    ) -> tuple[tuple[int, ...], tuple[int, ...], np.ndarray[Any, Any]]:
        """``set_slice``'s checks of its arguments, before anything is sent: the region and
        ``data`` as an array of its shape (not copied) that the array's dtype can hold."""
        self.store.check_writable()
        start, stop = self._region(start, stop)
        values = np.asarray(data)
        want = tuple(b - a for a, b in zip(start, stop, strict=True))
        if values.shape != want:
            raise ValueError(
                f"data has shape {values.shape}, the region {start}..{stop} has shape {want}"
            )
        if not np.can_cast(values.dtype, self.dtype, casting="same_kind"):
            raise TypeError(
                f"data of dtype {values.dtype} does not fit the array's dtype {self.dtype}"
            )
        return start, stop, values

    async def get_slice(
        self,
        start: Sequence[int] | None = None,
        stop: Sequence[int] | None = None,
        *,
        progress: ProgressCallback | bool | None = None,
        part_chunks: int | None = None,
        consistent: bool = True,
    ) -> np.ndarray[Any, Any]:
        """The values in ``[start, stop)``, from chunks read in one transaction.

        With ``progress`` (as for :meth:`set_slice`) the region is read in parts, each part
        one transaction: consistent per part only. ``consistent=False`` reads each chunk on
        its own (dirty; each chunk whole, but not one snapshot): on a fragmented table the
        chunks then come from the nodes holding them, in parallel.
        """
        if progress is not None and progress is not False:
            return await SliceProgress(self, progress, part_chunks).get_slice(start, stop)
        start, stop = self._region(start, stop)
        selection = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
        keys = (
            self._chunk_keys(start, stop)
            if all(b > a for a, b in zip(start, stop, strict=True))
            else []
        )
        client = await self.store.client()
        known = await self._known_root()
        # chunks that are whole rows of the result are received straight into it
        placement = rawchunks.placement(self.zarr, start, stop) if keys else None
        reads: list[Any] = [
            Snapshot.read(
                self.store,
                client,
                keys,
                known,
                consistent=consistent,
                placement=placement,
            )
        ]
        if self.store.settings.majority:
            reads.append(self._warn_if_minority(client))
        snapshot, *_ = await asyncio.gather(*reads)
        if snapshot.root_now != known:  # read with the chunks: they were mapped with the old one
            await self._follow(snapshot.root_now)
        raw = rawchunks.read_into(self.zarr, snapshot.chunks, start, stop)
        if raw is not None:  # chunks stored as bytes: one copy each, into the result
            return raw
        result = await self._on(snapshot).getitem(selection)
        return np.asarray(result)

    def watch(
        self,
        region: tuple[Sequence[int], Sequence[int]] | None = None,
        *,
        window: int = 256,
        backlog: int = 10_000,
    ) -> Watch:
        """Changes to the chunks ``region`` (``(start, stop)``, default all) touches, as they
        are committed by anyone: an async iterator of
        :class:`~pyrlang_zarr.watch.ChangeEvent` (see :mod:`pyrlang_zarr.watch`), to use
        with ``async with`` (it closes the subscription on the cluster)."""
        from pyrlang_zarr.watch import watch_array

        return watch_array(self, region, window=window, backlog=backlog)

    async def _follow(self, root: Root) -> None:
        """Take ``root`` as the array's if it still describes the same array (another client
        changed only its attributes, say); raise if the array was re-created or changed."""
        if _describes(root, self.zarr.metadata):
            self._root = root
            return
        if root.m is None and root.za is None:
            raise NotFound(
                f"not_found: array {self.array_id!r} was deleted by another client since it "
                "was opened"
            )
        raise TransactionError(
            f"transaction_error: array {self.array_id!r} was re-created or changed by another "
            "client since it was opened (shape, chunks, dtype or codecs); open it again"
        )

    async def _warn_if_minority(self, client: MnesiaClient) -> None:
        replicas, reachable = await client.replica_view()
        if 2 * len(reachable) <= len(replicas):
            warnings.warn(
                PossiblyStaleRead(
                    f"{self.array_id!r} was read through {client.coordinator}, which reaches "
                    f"only {reachable} of the replicas {replicas}: it may be on the minority "
                    "side of a partition and miss newer writes"
                ),
                stacklevel=3,
            )


async def create(
    array_id: str,
    shape: Sequence[int],
    chunks: Sequence[int],
    dtype: npt.DTypeLike = "float64",
    *,
    node: str | None = None,
    cookie: str | None = None,
    nodes: Sequence[str] | None = None,
    ram_copies: bool = False,
    majority: bool = False,
    table_name: str = DEFAULT_TABLE,
    fragments: int | None = None,
    frag_copies: int | None = None,
    disc_only_copies: bool = False,
    fill_value: Any = 0,
    zarr_format: int | None = None,
    overwrite: bool = False,
    durable: bool = False,
    exzarr: bool = False,
    compressor: str | None = "zstd",
    tls: Any = None,
    pickle_cookie: bool = False,
    **zarr_options: Any,
) -> MnesiaArray:
    """Create an array in Mnesia (ExZarr's ``create`` with ``storage: :mnesia``).

    ``nodes`` are the table's replicas: Mnesia and the table are set up on them first
    (idempotently), and calls fail over among them. ``majority=True`` makes writes need a
    majority of replicas (the minority side of a partition refuses them with
    :class:`~pyrlang_zarr.errors.NoMajority`; its reads warn with ``PossiblyStaleRead``).
    Other keyword arguments go to ``zarr.create_array`` (``compressors``,
    ``filters``, ``shards``, ``attributes``, ...). zarr v3 by default, ``zarr_format=2`` on
    request.

    ``exzarr=True`` makes an array ExZarr applications read and write too: zarr v2,
    ``compressor`` ``"zstd"`` (default), ``"zlib"`` or ``None``, a dtype ExZarr knows, a
    finite fill value, the metadata text ``ExZarr.save/2`` writes. Anything ExZarr cannot
    share raises ``ValueError``/``TypeError`` (see :mod:`pyrlang_zarr.exzarr`).

    ``fragments=N`` creates a new table in N fragments spread over ``nodes``
    (``mnesia_frag``), each on ``frag_copies`` (default 1) of them: an array larger than
    one node's memory, read from every node at once. ``disc_only_copies=True`` keeps a new
    table on disc only (dets: 2 GB per fragment, a ``set``).

    ``tls`` joins a cluster running TLS distribution (a ``TlsConfig``, the cluster's
    ``ssl_dist_optfile``, an ``ssl.SSLContext``; see :class:`~pyrlang_zarr.Node`);
    ``pickle_cookie=True`` lets the array's store carry the cookie into pickles.

    Every argument is checked (by zarr too) before anything is sent to the cluster.
    """
    shape_t = _dims("shape", shape, allow_zero=True)
    chunks_t = _dims("chunks", chunks, allow_zero=False)
    if len(shape_t) != len(chunks_t):
        raise ValueError(f"shape {shape_t} and chunks {chunks_t} have different dimensions")
    try:
        np_dtype = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype {dtype!r} is not a numpy dtype: {exc}") from None
    if zarr_format not in (None, 2, 3):
        raise ValueError(f"zarr_format must be 2 or 3, got {zarr_format!r}")
    settings = StoreSettings(  # validates array_id, node and nodes before anything is sent
        array_id,
        node=node,
        cookie=cookie,
        table_name=table_name,
        nodes=nodes,
        ram_copies=ram_copies,
        majority=majority,
        durable=durable,
        fragments=fragments,
        frag_copies=frag_copies,
        disc_only_copies=disc_only_copies,
        tls=tls,
        pickle_cookie=pickle_cookie,
    )
    if exzarr and fragments is not None:  # ExZarr's plain mnesia:read sees one fragment
        raise ValueError(
            "exzarr=True cannot go with fragments=: ExZarr reads with plain mnesia:read, "
            "which sees the first fragment only; keep arrays shared with ExZarr in a table "
            "that is not fragmented"
        )
    if exzarr:
        order = zarr_options.pop("order", "C")
        name = exzarr_format.check(
            shape_t,
            chunks_t,
            np_dtype,
            compressor=compressor,
            fill_value=fill_value,
            order=order,
            zarr_format=2 if zarr_format is None else zarr_format,
            options=list(zarr_options),
        )
        document = exzarr_format.zarray_text(
            shape_t, chunks_t, name, compressor=compressor, fill_value=fill_value
        )
        store = await MnesiaStore.open(settings)  # connects; sets up the table on ``nodes``
        if not await store.create_root(document, overwrite=overwrite):
            raise _exists(store, await _existing(store))
        return await _open_array(store)
    if compressor != "zstd":
        raise TypeError("compressor= is for exzarr=True arrays; zarr's option is compressors=")
    options: dict[str, Any] = {
        "shape": shape_t,
        "chunks": chunks_t,
        "dtype": np_dtype,
        "fill_value": fill_value,
        "zarr_format": 3 if zarr_format is None else zarr_format,
        **zarr_options,
    }
    # zarr checks everything (dtype, fill value, codecs) here, in memory, first
    await zasync.create_array(MemoryStore(), **options)
    store = await MnesiaStore.open(settings)  # connects; sets up the table on ``nodes``
    if not overwrite:  # zarr looks for its own format's documents only
        kind = await _existing(store)
        if kind is not None:
            raise _exists(store, kind)
    try:
        array = await zasync.create_array(store, overwrite=overwrite, **options)
    except ContainsGroupError:  # created meanwhile; zarr checks before it writes
        raise _exists(store, "group") from None
    except ContainsArrayError:
        raise _exists(store, "array") from None
    root = await store.root()
    if not _describes(root, array.metadata):
        raise TransactionError(
            f"transaction_error: array {array_id!r} was re-created by another client while it "
            "was being created; open it to see which"
        )
    return MnesiaArray(store, array, root)


async def _existing(store: MnesiaStore) -> str | None:
    """What the root of ``store`` holds: ``"array"``, ``"group"`` or ``None`` (nothing)."""
    names = ("zarr.json", ".zarray", ".zgroup")
    found = dict(zip(names, await asyncio.gather(*map(store.exists, names)), strict=True))
    if found[".zarray"]:
        return "array"
    if found[".zgroup"]:
        return "group"
    if not found["zarr.json"]:
        return None
    doc = await store.get("zarr.json", default_buffer_prototype())
    try:
        kind = json.loads(doc.to_bytes())["node_type"] if doc is not None else "array"
    except (ValueError, KeyError, TypeError):
        kind = "array"
    return "group" if kind == "group" else "array"


def _exists(store: MnesiaStore, kind: str | None) -> ArrayExists:
    what = {"array": "an array", "group": "a group"}.get(kind or "", "an array or group")
    return ArrayExists(
        f"there is already {what} {store.array_id!r} in table {store.table_name!r} "
        f"(via {store.node}); nothing was written. Open it with pyrlang_zarr.open, or pass "
        "overwrite=True to replace it (its chunks are deleted)"
    )


async def open(
    array_id: str,
    *,
    node: str | None = None,
    cookie: str | None = None,
    nodes: Sequence[str] | None = None,
    table_name: str = DEFAULT_TABLE,
    majority: bool = False,
    read_only: bool = False,
    durable: bool = False,
    tls: Any = None,
    pickle_cookie: bool = False,
    fragments: int | None = None,
    frag_copies: int | None = None,
) -> MnesiaArray:
    """Open an existing array; :class:`NotFound` if there is none under ``array_id``.

    ``array_id`` may be an :class:`~pyrlang_zarr.Atom` for an array an Elixir application
    keyed with an atom. ``tls``, ``pickle_cookie``, ``fragments`` and ``frag_copies`` as
    for :func:`create` (a fragmented table is recognised whatever they say)."""
    settings = StoreSettings(
        array_id,
        node=node,
        cookie=cookie,
        table_name=table_name,
        nodes=nodes,
        majority=majority,
        durable=durable,
        fragments=fragments,
        frag_copies=frag_copies,
        tls=tls,
        pickle_cookie=pickle_cookie,
    )
    # read-only: looking for the array sets nothing up on the cluster
    probe = MnesiaStore(settings, read_only=True)
    if not await probe.exists("zarr.json") and not await probe.exists(".zarray"):
        raise NotFound(
            f"not_found: no array {array_id!r} in table {table_name!r} (via {probe.node})"
        )
    store = probe if read_only else probe.with_read_only(False)
    return await _open_array(store)


async def _open_array(store: MnesiaStore) -> MnesiaArray:
    """Open the root array with the root metadata records it was read from."""
    for _ in range(MAX_RETRIES):
        before = await store.root()
        array = await zasync.open_array(store=store)
        after = await store.root()
        if before == after and _describes(after, array.metadata):
            return MnesiaArray(store, array, after)
    raise TransactionError(
        f"transaction_error: the metadata of {store.array_id!r} kept changing while it was opened"
    )


def _describes(root: Root, metadata: Any) -> bool:
    """Whether the root metadata records hold ``metadata``'s array, attributes aside."""
    if metadata.zarr_format == 3:
        doc = root.m if root.m_name == "zarr.json" else None
        cls: Any = ArrayV3Metadata
    else:
        doc = root.m if root.m_name == V2_ARRAY_METADATA_KEY else root.za
        cls = ArrayV2Metadata
    if doc is None:
        return False
    try:
        stored = cls.from_dict(json.loads(doc))
    except Exception:  # another document, or not one zarr reads
        return False
    return _canonical(stored) == _canonical(metadata)


def _canonical(metadata: Any) -> dict[str, bytes]:
    """``metadata``'s documents as zarr writes them, attributes aside: compared as text, so a
    NaN fill value equals itself (as dataclass fields it never would)."""
    plain = dataclasses.replace(metadata, attributes={})
    docs = plain.to_buffer_dict(default_buffer_prototype())
    return {name: buf.to_bytes() for name, buf in docs.items()}


def _dims(name: str, dims: Sequence[int], *, allow_zero: bool) -> tuple[int, ...]:
    if isinstance(dims, int | np.integer):
        dims = (int(dims),)
    try:
        values = tuple(dims)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of integers, got {dims!r}") from None
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise TypeError(f"{name} must hold integers, got {dims!r}")
        if v < 0 or (v == 0 and not allow_zero):
            kind = "non-negative" if allow_zero else "positive"
            raise ValueError(f"{name} must hold {kind} integers, got {dims!r}")
    return tuple(int(v) for v in values)
