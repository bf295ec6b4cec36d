"""Several arrays changed together or not at all, and read together consistently.

(The module is ``transactions``: ``pyrlang_zarr.transaction`` is the function.)

``async with pz.transaction() as tx:`` collects ``set_slice`` calls on any arrays (same or
different tables, reached through one node); on leaving the block they are committed in
**one** Mnesia transaction, with the checks of a single ``set_slice``: every chunk read to
merge a partial write, and each array's root metadata, must be unchanged on the server, or
the whole is computed again from fresh reads and retried. An exception in the block sends
nothing.

:func:`get_slices` reads regions of several arrays in one transaction: a consistent view,
never half of a concurrent transaction.

Both run zarr's own chunking and codecs against the wrappers of :mod:`pyrlang_zarr.overlay`,
as ``set_slice`` and ``get_slice`` do.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from pyrlang_zarr import rawchunks
from pyrlang_zarr.array import MAX_RETRIES, MnesiaArray
from pyrlang_zarr.errors import TransactionError
from pyrlang_zarr.mnesia.client import (
    Conflict,
    Guard,
    MnesiaClient,
    Op,
    guarded_across,
    read_across,
)
from pyrlang_zarr.overlay import Snapshot, WriteBuffer

_Region = tuple[tuple[int, ...], tuple[int, ...]]


def _checked(
    array: MnesiaArray,
    data: npt.ArrayLike,
    start: Sequence[int] | None,
    stop: Sequence[int] | None,
) -> tuple[_Region, np.ndarray[Any, Any]]:
    """``set_slice``'s checks of its arguments, before anything is sent."""
    if not isinstance(array, MnesiaArray):
        raise TypeError(
            f"a transaction writes MnesiaArray objects (pz.create/pz.open), not {array!r}"
        )
    start, stop, values = array._writable(data, start, stop)
    # a copy: later changes to data do not leak into the commit
    return (start, stop), np.array(values)


def _array_key(array: MnesiaArray) -> tuple[str, Any]:
    return (array.store.table_name, array.store.mnesia_key(None)[0])


async def _same_node(via: MnesiaClient | None, array: MnesiaArray) -> MnesiaClient:
    client = await array.store.client()
    if via is not None and client.node is not via.node:
        raise ValueError(
            f"{array!r} is reached through another node (cookie or TLS settings) than the "
            "other arrays of the transaction: one transaction spans one cluster"
        )
    return client


class Transaction:
    """``set_slice`` calls on several arrays, committed together on leaving the block."""

    def __init__(self, *, retries: int = MAX_RETRIES) -> None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 1:
            raise ValueError(f"retries must be a positive int, got {retries!r}")
        self.retries = retries
        self.committed = False
        self._via: MnesiaClient | None = None
        # each write: its array, region, values, and its whole chunks as stored (or None)
        self._writes: list[
            tuple[MnesiaArray, _Region, np.ndarray[Any, Any], dict[str, memoryview | None] | None]
        ] = []

    def __repr__(self) -> str:
        state = "committed" if self.committed else f"{len(self._writes)} write(s) pending"
        return f"<Transaction {state}>"

    async def set_slice(
        self,
        array: MnesiaArray,
        data: npt.ArrayLike,
        start: Sequence[int] | None = None,
        stop: Sequence[int] | None = None,
    ) -> None:
        """Write ``data`` into ``array[start:stop]`` when the transaction commits. Checked
        now (as ``set_slice`` checks): bad arguments raise here. Later writes in the same
        transaction see earlier ones (same array: they merge chunk by chunk)."""
        if self.committed:
            raise RuntimeError("this transaction has committed; start another")
        region, values = _checked(array, data, start, stop)
        self._via = self._via or await _same_node(None, array)
        await _same_node(self._via, array)
        if 0 in values.shape:
            return
        raw = rawchunks.chunks_to_write(array.zarr, values, *region)
        self._writes.append((array, region, values, raw))

    async def commit(self) -> None:
        """One Mnesia transaction for every write collected; retried from fresh reads while
        a concurrent writer changed a chunk read (or a root metadata record) meanwhile."""
        if self.committed:
            return
        if not self._writes or self._via is None:
            self.committed = True
            return
        via = self._via
        for _attempt in range(self.retries):
            buffers: dict[tuple[str, Any], tuple[MnesiaArray, MnesiaClient, WriteBuffer]] = {}
            for array, region, values, raw in self._writes:
                key = _array_key(array)
                entry = buffers.get(key)
                if entry is None:
                    client = await array.store.client()
                    root = await array._known_root()
                    entry = buffers[key] = (array, client, WriteBuffer(array.store, client, root))
                await array._stage(entry[2], *region, values, raw)  # later writes see it
            parts: list[tuple[MnesiaClient, Sequence[Guard], Sequence[Op]]] = []
            for _array, client, buffer in buffers.values():
                guards, ops = await buffer.plan()
                parts.append((client, guards, ops))
            try:
                await guarded_across(via, parts)
            except Conflict as conflict:
                stale = set(conflict.keys)
                for array, _client, buffer in buffers.values():
                    root = await buffer.root()
                    table = array.store.table_name
                    if any((table, array.store.mnesia_key(x)) in stale for x, _ in root.guards()):
                        await array._follow(await array.store.root())
                continue
            self.committed = True
            return
        raise TransactionError(
            f"transaction_error: a transaction over {len(buffers)} array(s) kept conflicting "
            f"with concurrent writers ({self.retries} attempts); nothing was written"
        )

    async def __aenter__(self) -> Transaction:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.commit()
        else:
            self._writes.clear()  # nothing was sent: nothing to undo


def transaction(*, retries: int = MAX_RETRIES) -> Transaction:
    """``async with pz.transaction() as tx: await tx.set_slice(arr, data, start, stop)``:
    the writes of the block on any arrays, all committed in one Mnesia transaction on
    leaving it, or none (an exception in the block writes nothing)."""
    return Transaction(retries=retries)


async def get_slices(
    requests: Sequence[tuple[MnesiaArray, Sequence[int] | None, Sequence[int] | None]],
) -> list[np.ndarray[Any, Any]]:
    """The values of each ``(array, start, stop)`` (``None``: from the origin / to the
    end), all read in **one** transaction with each array's root metadata."""
    plans: list[tuple[MnesiaArray, _Region, list[str], list[list[int]], int]] = []
    oids: list[tuple[str, Any]] = []
    via: MnesiaClient | None = None
    fragmented = False
    for request in requests:
        if not (isinstance(request, tuple | list) and len(request) == 3):
            raise TypeError(f"get_slices takes (array, start, stop) triples, got {request!r}")
        array, start, stop = request
        if not isinstance(array, MnesiaArray):
            raise TypeError(f"get_slices reads MnesiaArray objects, not {array!r}")
        region = array._region(start, stop)
        via = via or await _same_node(None, array)
        await _same_node(via, array)
        nonempty = all(b > a for a, b in zip(*region, strict=True))
        keys = array._chunk_keys(*region) if nonempty else []
        root = await array._known_root()
        table = array.store.table_name
        fragmented = fragmented or await (await array.store.client()).fragmented()
        base = len(oids)
        oids += [(table, key) for key in array.store.root_keys()]
        where: list[list[int]] = []
        for key in keys:
            forms = root.candidates(key)
            where.append(list(range(len(oids), len(oids) + len(forms))))
            oids += [(table, array.store.mnesia_key(x)) for x in forms]
        plans.append((array, region, keys, where, base))
    if via is None:
        return []
    found = await read_across(via, oids, fragmented=fragmented)
    out: list[np.ndarray[Any, Any]] = []
    for array, region, keys, where, base in plans:
        root = array.store.root_from(found[base : base + 2])
        if root != await array._known_root():  # the chunks were mapped with the old one
            await array._follow(root)
        chunks = {
            key: next((found[i] for i in idx if found[i] is not None), None)
            for key, idx in zip(keys, where, strict=True)
        }
        raw = rawchunks.read_into(array.zarr, chunks, *region)
        if raw is not None:  # chunks stored as bytes: one copy each, as get_slice does
            out.append(raw)
            continue
        selection = tuple(slice(a, b) for a, b in zip(*region, strict=True))
        snapshot = Snapshot(array.store, chunks, root)
        out.append(np.asarray(await array._on(snapshot).getitem(selection)))
    return out
