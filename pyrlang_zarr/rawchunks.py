"""Chunks that are the array's own bytes: ``set_slice``/``get_slice`` without zarr's pipeline.

An uncompressed zarr v3 array (its only codec ``bytes``, no sharding) stores each chunk as
the C-order bytes of its values. For it, running zarr's codec pipeline costs more than the
data: per chunk a merge copy into a fresh chunk buffer, an encode copy and a decode copy,
and a scan of the whole chunk for the fill value. Here a ``set_slice`` whose region covers
whole chunks hands each chunk's values to the write buffer as they are (a view when the
slice is contiguous: no copy at all), and a ``get_slice`` copies each chunk once, into the
result. What zarr decides is kept: a chunk all of the fill value is deleted rather than
written (unless the array's config says ``write_empty_chunks``), compared as zarr compares
(its ``all_equal``), after a one-element look that settles most chunks at once; a missing
chunk reads as the fill value. Anything else (a codec, sharding, zarr v2, a partial chunk
to merge) goes through zarr as before.

A ``get_slice`` may go further (:class:`SlicePlacement`): a chunk that is whole in the
region and one C-ordered run of the result (full rows of it, say) is received from the
socket straight into the result, with no copy at all.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from zarr.codecs import BytesCodec
from zarr.codecs.bytes import Endian
from zarr.core.array import AsyncArray
from zarr.core.buffer import default_buffer_prototype

Box = tuple[tuple[int, ...], tuple[slice, ...], tuple[slice, ...]]


def stored_dtype(array: AsyncArray[Any]) -> np.dtype[Any] | None:
    """The dtype (with its byte order) of ``array``'s chunks as stored, when a chunk is just
    its values' bytes; ``None`` when zarr's pipeline must run."""
    meta = array.metadata
    if meta.zarr_format != 3 or array.shards is not None:
        return None
    codecs: tuple[Any, ...] = tuple(getattr(meta, "codecs", ()))
    if len(codecs) != 1 or not isinstance(codecs[0], BytesCodec):
        return None
    dtype = np.dtype(array.dtype)
    if dtype.kind not in "biufc" or dtype.fields is not None:
        return None
    if dtype.itemsize == 1:
        return dtype
    endian = codecs[0].endian
    if endian is None:
        return None
    return dtype.newbyteorder("<" if endian == Endian.little else ">")


def boxes(
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    start: tuple[int, ...],
    stop: tuple[int, ...],
) -> Iterator[Box]:
    """For each chunk the region ``[start, stop)`` touches: its index, the part of the
    region in the chunk (relative to the chunk) and where that part is in the region."""
    ranges = [range(a // c, -(-b // c)) for a, b, c in zip(start, stop, chunks, strict=True)]
    for idx in itertools.product(*ranges):
        in_chunk: list[slice] = []
        in_region: list[slice] = []
        for i, a, b, c in zip(idx, start, stop, chunks, strict=True):
            lo, hi = max(a, i * c), min(b, (i + 1) * c)
            in_chunk.append(slice(lo - i * c, hi - i * c))
            in_region.append(slice(lo - a, hi - a))
        yield idx, tuple(in_chunk), tuple(in_region)


def _covers(box: Box, shape: tuple[int, ...], chunks: tuple[int, ...]) -> bool:
    """Whether the region covers every element of the chunk that lies inside the array."""
    idx, in_chunk, _ = box
    return all(
        s.start == 0 and s.stop == min(c, n - i * c)
        for s, i, c, n in zip(in_chunk, idx, chunks, shape, strict=True)
    )


def _all_fill(chunk: np.ndarray[Any, Any], fill: Any) -> bool:
    """zarr's test for a chunk it does not write, on the first element first."""
    nd = default_buffer_prototype().nd_buffer
    if not nd.from_numpy_array(chunk.reshape(-1)[:1]).all_equal(fill):
        return False
    return bool(nd.from_numpy_array(chunk).all_equal(fill))


def chunks_to_write(
    array: AsyncArray[Any],
    values: np.ndarray[Any, Any],
    start: tuple[int, ...],
    stop: tuple[int, ...],
) -> dict[str, memoryview | None] | None:
    """Each chunk key of the region with its bytes (``None``: delete it, all fill value);
    ``None`` if zarr's pipeline must do it (a codec, or a chunk only partly covered)."""
    dtype = stored_dtype(array)
    if dtype is None or not values.shape or 0 in values.shape:
        return None
    shape, chunks = tuple(array.shape), tuple(array.chunks)
    all_boxes = list(boxes(shape, chunks, start, stop))
    if not all(_covers(box, shape, chunks) for box in all_boxes):
        return None
    meta = array.metadata
    fill = meta.fill_value
    skip_fill = not array.config.write_empty_chunks
    out: dict[str, memoryview | None] = {}
    for idx, in_chunk, in_region in all_boxes:
        part = values[in_region]
        full = tuple(s.stop for s in in_chunk) == chunks
        if full:  # a view when the slice is already C-ordered and of the stored dtype
            chunk = np.ascontiguousarray(part, dtype=dtype)
        else:  # an edge chunk: zarr stores it whole, the outside as the fill value
            chunk = np.full(chunks, fill, dtype=dtype)
            chunk[in_chunk] = part
        key = meta.encode_chunk_key(idx)
        out[key] = None if skip_fill and _all_fill(chunk, fill) else chunk.data.cast("B")
    return out


class SliceLanding:
    """One reply's landing (:class:`~pyrlang_zarr.mnesia.arriving.Landing`): a result array
    of its own, and where in it each chunk that may land in place goes."""

    def __init__(
        self,
        want: tuple[int, ...],
        dtype: np.dtype[Any],
        runs: dict[str, Any],
        keys: list[str | None],
    ) -> None:
        self.out = np.empty(want, dtype=dtype)
        self._runs = runs  # chunk key -> its region in out
        self._keys = keys  # by index in the read
        self._placed: set[str] = set()

    def place(self, index: int, nbytes: int) -> memoryview | None:
        keys = self._keys
        key = keys[index] if 0 <= index < len(keys) else None
        if key is None or key in self._placed:  # an Either's second record: not this one
            return None
        region = self._runs.get(key)
        if region is None:
            return None
        view = memoryview(self.out[region]).cast("B")
        if view.nbytes != nbytes:
            return None  # not this array's chunk as it should be: checked on the way out
        self._placed.add(key)
        return view


class SlicePlacement:
    """The chunks of a region that can land in place, for ``read_many(placement=...)``:
    each reply that starts arriving gets a :class:`SliceLanding` of its own."""

    def __init__(self, landing: Callable[[], SliceLanding]) -> None:
        self._landing = landing

    def begin(self) -> SliceLanding:
        return self._landing()


def placement(
    array: AsyncArray[Any], start: tuple[int, ...], stop: tuple[int, ...]
) -> Callable[[list[str | None]], SlicePlacement] | None:
    """Where the chunks of ``[start, stop)`` can be received straight into the result (a
    chunk whole in the region, one C-ordered run of it, stored in the result's dtype and
    byte order): a :class:`SlicePlacement` once given the chunk read at each index; or
    ``None`` if none can."""
    dtype = stored_dtype(array)
    want = tuple(b - a for a, b in zip(start, stop, strict=True))
    if dtype is None or not want or 0 in want or dtype != np.dtype(array.dtype):
        return None
    shape, chunks = tuple(array.shape), tuple(array.chunks)
    runs: dict[str, Any] = {}
    meta = array.metadata
    for idx, in_chunk, in_region in boxes(shape, chunks, start, stop):
        if tuple(s.stop - s.start for s in in_chunk) != chunks:
            continue  # an edge or a part: copied
        inner = [s.stop - s.start for s in in_region][1:]
        if inner != list(want[1:]):
            continue  # not full rows of the result: not one run
        runs[meta.encode_chunk_key(idx)] = in_region
    if not runs:
        return None
    return lambda keys: SlicePlacement(functools.partial(SliceLanding, want, dtype, runs, keys))


def read_into(
    array: AsyncArray[Any],
    chunk_bytes: dict[str, Any],
    start: tuple[int, ...],
    stop: tuple[int, ...],
) -> np.ndarray[Any, Any] | None:
    """The region's values from the chunks' stored bytes (a missing chunk is the fill
    value; a chunk that landed in place is there already), or ``None`` if zarr's pipeline
    must decode them."""
    dtype = stored_dtype(array)
    want = tuple(b - a for a, b in zip(start, stop, strict=True))
    landings = {id(v): v for v in chunk_bytes.values() if type(v) is SliceLanding}
    if landings and (len(landings) > 1 or dtype is None):
        raise AssertionError("chunks of one read landed in more than one result")
    if dtype is None or not want or 0 in want:
        return None
    shape, chunks = tuple(array.shape), tuple(array.chunks)
    meta = array.metadata
    if landings:
        (landing,) = landings.values()
        out = landing.out
    else:
        out = np.empty(want, dtype=np.dtype(array.dtype))
    size = int(np.prod(chunks)) * dtype.itemsize
    for idx, in_chunk, in_region in boxes(shape, chunks, start, stop):
        key = meta.encode_chunk_key(idx)
        data = chunk_bytes.get(key)
        if type(data) is SliceLanding:
            continue  # received into out already
        if data is None:
            out[in_region] = meta.fill_value
            continue
        if len(data) != size:
            raise ValueError(
                f"chunk {key!r} holds {len(data)} bytes, but a {chunks} chunk of {dtype} is "
                f"{size} bytes: it was not written by zarr for this array's metadata"
            )
        out[in_region] = np.frombuffer(data, dtype=dtype).reshape(chunks)[in_chunk]
    return out
