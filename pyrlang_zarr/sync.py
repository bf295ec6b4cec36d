"""The blocking twin of the array API, for scripts and notebooks.

``create`` and ``open`` take exactly the arguments of :func:`pyrlang_zarr.create` and
:func:`pyrlang_zarr.open`; their arrays have blocking ``set_slice``/``get_slice`` and numpy-style
indexing::

    import numpy as np
    import pyrlang_zarr.sync as pzs

    arr = pzs.create("exp1", shape=(1000, 1000), chunks=(100, 100), node="node1@host")
    arr[0:100, 0:100] = np.ones((100, 100))   # one set_slice: all chunks or none
    block = arr[0:2, ::2]                      # one get_slice, then numpy's own indexing

The coroutines run on zarr's own event loop thread (``zarr.core.sync.sync``), like zarr's
synchronous API: the calls block the calling thread only, and work inside a running event
loop too (a Jupyter notebook, an ``async def``) as ``zarr.open_array`` does there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt
import zarr
from zarr.core._info import ArrayInfo
from zarr.core.sync import sync as _zarr_sync

import pyrlang_zarr as pz
from pyrlang_zarr.array import summary_html
from pyrlang_zarr.progress import ProgressCallback

if TYPE_CHECKING:
    from pyrlang_zarr.watch import ChangeEvent
    from pyrlang_zarr.watch import Watch as _AsyncWatch

__all__ = ["Array", "Transaction", "Watch", "create", "get_slices", "open", "run", "transaction"]

P = ParamSpec("P")
T = TypeVar("T")

_Index = int | slice | type(Ellipsis)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on zarr's event loop thread and return its result."""
    return _zarr_sync(coro)


def _blocking(
    fn: Callable[P, Coroutine[Any, Any, pz.MnesiaArray]],
) -> Callable[P, Array]:
    @functools.wraps(fn)
    def blocking(*args: P.args, **kwargs: P.kwargs) -> Array:
        return Array(run(fn(*args, **kwargs)))

    blocking.__doc__ = (
        f"Blocking :func:`pyrlang_zarr.{fn.__name__}`: same arguments, returns a "
        f":class:`pyrlang_zarr.sync.Array`.\n\n{fn.__doc__ or ''}"
    )
    return blocking


create = _blocking(pz.create)
open = _blocking(pz.open)


class _Box:
    """A basic numpy index resolved against a shape: the ``[start, stop)`` box it touches
    and how to get the indexed values out of that box."""

    def __init__(self, key: Any, shape: tuple[int, ...]) -> None:
        items = key if isinstance(key, tuple) else (key,)
        if sum(1 for k in items if k is Ellipsis) > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        explicit = sum(1 for k in items if k is not Ellipsis)
        if explicit > len(shape):
            raise IndexError(
                f"too many indices for array: array is {len(shape)}-dimensional, "
                f"but {explicit} were indexed"
            )
        if Ellipsis in items:
            at = next(i for i, k in enumerate(items) if k is Ellipsis)
            fill = (slice(None),) * (len(shape) - explicit)
            items = items[:at] + fill + items[at + 1 :]
        items = items + (slice(None),) * (len(shape) - len(items))
        start: list[int] = []
        stop: list[int] = []
        post: list[int | slice] = []
        self.contiguous = True
        for axis, (k, n) in enumerate(zip(items, shape, strict=True)):
            if isinstance(k, bool | np.bool_) or not isinstance(k, int | np.integer | slice):
                raise TypeError(
                    f"index {k!r} on axis {axis}: only integers, slices and '...' index an "
                    "array stored in Mnesia; for fancy indexing read a block (arr[a:b]) and "
                    "index the numpy array it returns"
                )
            if isinstance(k, slice):
                r = range(*k.indices(n))
                if len(r) == 0:
                    lo = min(max(r.start, 0), n)
                    start.append(lo)
                    stop.append(lo)
                    post.append(slice(None))
                    continue
                lo, hi = min(r[0], r[-1]), max(r[0], r[-1]) + 1
                start.append(lo)
                stop.append(hi)
                if len(r) > 1 and abs(r.step) != 1:
                    self.contiguous = False
                if r.step > 0:
                    post.append(slice(None, None, r.step))
                else:
                    post.append(slice(hi - 1 - lo, None, r.step))
            else:
                i = int(k)
                if not -n <= i < n:
                    raise IndexError(f"index {i} is out of bounds for axis {axis} with size {n}")
                i = i + n if i < 0 else i
                start.append(i)
                stop.append(i + 1)
                post.append(0)
        self.start = tuple(start)
        self.stop = tuple(stop)
        self.post = tuple(post)
        self.box_shape = tuple(b - a for a, b in zip(start, stop, strict=True))


class Array:
    """A zarr array stored in Mnesia, with blocking methods (see :mod:`pyrlang_zarr.sync`).

    ``arr[...]`` reads with one ``get_slice`` (one transaction) of the box the index touches,
    then applies numpy's indexing to it; ``arr[...] = values`` broadcasts ``values`` like
    numpy and writes them with one ``set_slice`` (all chunks or none). Writes need
    contiguous slices (step 1 or -1). ``async_array`` is the :class:`pyrlang_zarr.MnesiaArray`
    underneath, ``zarr`` a plain synchronous ``zarr.Array`` on the same store.
    """

    def __init__(self, array: pz.MnesiaArray) -> None:
        if not isinstance(array, pz.MnesiaArray):
            raise TypeError(f"expected a pyrlang_zarr.MnesiaArray, got {type(array).__name__}")
        self.async_array = array

    # -- what it is -----------------------------------------------------------------------
    @property
    def array_id(self) -> str:
        return self.async_array.array_id

    @property
    def store(self) -> pz.MnesiaStore:
        return self.async_array.store

    @property
    def shape(self) -> tuple[int, ...]:
        return self.async_array.shape

    @property
    def chunks(self) -> tuple[int, ...]:
        return self.async_array.chunks

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.async_array.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def url(self) -> str:
        """``mnesia://node/table/array_id``: what ``zarr.open`` takes (see :mod:`.url`)."""
        from pyrlang_zarr.url import url_of

        return url_of(self.store)

    @property
    def zarr(self) -> zarr.Array[Any]:
        """zarr's own synchronous array on the same store (no slice transactions)."""
        return zarr.Array(self.async_array.zarr)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    def __repr__(self) -> str:
        return (
            f"<pyrlang_zarr.sync.Array {self.url} shape={self.shape} chunks={self.chunks} "
            f"dtype={self.dtype}>"
        )

    @property
    def info(self) -> ArrayInfo:
        """zarr's summary of the array (type, shape, chunks, codecs, store), without I/O."""
        return self.async_array.info

    def info_complete(self) -> ArrayInfo:
        """:attr:`info` plus what it takes reading the store: bytes stored, chunks written."""
        return run(self.async_array.info_complete())

    def _repr_html_(self) -> str:
        return summary_html(self.async_array, "pyrlang_zarr.sync.Array")

    # -- slices ---------------------------------------------------------------------------
    def get_slice(
        self,
        start: Sequence[int] | None = None,
        stop: Sequence[int] | None = None,
        *,
        progress: ProgressCallback | bool | None = None,
        part_chunks: int | None = None,
    ) -> np.ndarray[Any, Any]:
        """The values in ``[start, stop)`` (default: the whole array), read in one transaction.

        ``progress`` (a callback taking a :class:`~pyrlang_zarr.progress.Progress`, or True
        for a bar on stderr when it is a terminal) reads the region in parts of about
        ``part_chunks`` chunks (default: about 4 MiB of values) instead, each part one
        transaction: consistent per part only.
        """
        return run(
            self.async_array.get_slice(start, stop, progress=progress, part_chunks=part_chunks)
        )

    def set_slice(
        self,
        data: npt.ArrayLike,
        start: Sequence[int] | None = None,
        stop: Sequence[int] | None = None,
        *,
        progress: ProgressCallback | bool | None = None,
        part_chunks: int | None = None,
    ) -> None:
        """Write ``data`` into ``[start, stop)``: every chunk it touches, or none of them.

        With ``progress`` the region is written in parts of about ``part_chunks`` chunks, each
        part its own transaction (all or none per part, not for the whole region).
        """
        run(
            self.async_array.set_slice(
                data, start, stop, progress=progress, part_chunks=part_chunks
            )
        )

    def watch(
        self,
        region: tuple[Sequence[int], Sequence[int]] | None = None,
        *,
        window: int = 256,
        backlog: int = 10_000,
    ) -> Watch:
        """Blocking :meth:`pyrlang_zarr.MnesiaArray.watch`: iterate for the change events;
        ``with`` closes the subscription."""
        return Watch(self.async_array.watch(region, window=window, backlog=backlog))

    def __getitem__(self, key: Any) -> Any:
        box = _Box(key, self.shape)
        values = self.get_slice(box.start, box.stop)
        out = values[box.post]
        return out

    def __setitem__(self, key: Any, value: npt.ArrayLike) -> None:
        box = _Box(key, self.shape)
        if not box.contiguous:
            raise ValueError(
                f"writes need contiguous slices (step 1 or -1), got {key!r}: write the block "
                "with a step of 1, or read it, change it and write it back"
            )
        values = np.asarray(value)
        if isinstance(value, int | float | complex) and not isinstance(value, bool):
            # a Python number takes the array's dtype when it fits it, as numpy does (NEP 50)
            if np.result_type(value, self.dtype) == self.dtype:
                values = np.asarray(value, dtype=self.dtype)
        full = np.empty(box.box_shape, dtype=values.dtype)
        full[box.post] = values  # numpy's broadcasting rules and errors
        self.set_slice(full, box.start, box.stop)

    def __array__(self, dtype: npt.DTypeLike | None = None, copy: bool | None = None) -> Any:
        values = self.get_slice()
        return values if dtype is None else values.astype(dtype, copy=False)


class Watch:
    """Blocking twin of :class:`pyrlang_zarr.watch.Watch`: ``for event in watch`` (it
    ends when the watch is closed), ``watch.next(timeout)``, ``with``."""

    def __init__(self, watch: _AsyncWatch) -> None:
        self.async_watch = watch

    def __repr__(self) -> str:
        return repr(self.async_watch)

    def next(self, timeout: float | None = None) -> ChangeEvent:
        """The next event; ``TimeoutError`` if none comes within ``timeout`` seconds,
        ``StopIteration`` once the watch is closed."""
        try:
            return run(self.async_watch.next(timeout))
        except StopAsyncIteration:
            raise StopIteration from None

    def __iter__(self) -> Iterator[ChangeEvent]:
        while True:
            try:
                yield self.next()
            except StopIteration:
                return

    def close(self) -> None:
        run(self.async_watch.close())

    def __enter__(self) -> Watch:
        run(self.async_watch.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def watch_store(store: pz.MnesiaStore, *, window: int = 256, backlog: int = 10_000) -> Watch:
    """Blocking :meth:`pyrlang_zarr.MnesiaStore.watch`."""
    return Watch(store.watch(window=window, backlog=backlog))


def _unwrap(array: Array | pz.MnesiaArray) -> pz.MnesiaArray:
    return array.async_array if isinstance(array, Array) else array


class Transaction:
    """Blocking twin of :class:`pyrlang_zarr.Transaction`: ``with pzs.transaction() as tx:
    tx.set_slice(arr, data, start, stop)``; committed on leaving the block, all or none."""

    def __init__(self, *, retries: int | None = None) -> None:
        self.async_transaction = (
            pz.transaction() if retries is None else pz.transaction(retries=retries)
        )

    @property
    def committed(self) -> bool:
        return self.async_transaction.committed

    def set_slice(
        self,
        array: Array | pz.MnesiaArray,
        data: npt.ArrayLike,
        start: Sequence[int] | None = None,
        stop: Sequence[int] | None = None,
    ) -> None:
        run(self.async_transaction.set_slice(_unwrap(array), data, start, stop))

    def commit(self) -> None:
        run(self.async_transaction.commit())

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        run(self.async_transaction.__aexit__(exc_type, None, None))


def transaction(*, retries: int | None = None) -> Transaction:
    """Blocking :func:`pyrlang_zarr.transaction`."""
    return Transaction(retries=retries)


def get_slices(
    requests: Sequence[tuple[Array | pz.MnesiaArray, Sequence[int] | None, Sequence[int] | None]],
) -> list[np.ndarray[Any, Any]]:
    """Blocking :func:`pyrlang_zarr.get_slices` (arrays of either API)."""
    return run(pz.get_slices([(_unwrap(a), start, stop) for a, start, stop in requests]))
