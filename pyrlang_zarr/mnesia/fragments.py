"""Fragmented tables: one table split by key hash over many nodes, through ``mnesia_frag``.

Why: an unfragmented table is whole on every replica (``disc_copies`` hold it all in RAM),
so the largest array is bounded by the smallest replica's memory, and ``disc_only_copies``
by dets' 2 GB per file. ``mnesia_frag`` (part of OTP: nothing is installed) splits a table
into fragments ``T``, ``T_frag2``, ... each on ``frag_copies`` nodes of a node pool.

- Every access to a fragmented table runs inside ``mnesia:activity(Kind, Fun, Args,
  mnesia_frag)``: a plain ``mnesia:dirty_read(T, K)`` sees the first fragment only.
  Transactions sent as text have ``mnesia:sync_transaction(X)`` rewritten
  (:func:`frag_text`); rpc calls pass external funs (``fun mnesia:read/2``) to
  ``mnesia:activity/4``.
- Which fragment holds a key is ``HashModule:key_to_frag_number(HashState, Key)``
  (``erlang:phash2`` with linear hashing by default). It is computed **on the cluster**
  (one call for many keys), never reproduced here; the hash state and each fragment's
  up-to-date replicas are read once and kept (:class:`FragLayout`).
- A read of many keys then goes straight to the nodes holding their fragments, in parallel
  (:func:`spread_read`). A key missing there is read again in a transaction through
  ``mnesia_frag`` (a copy that has not yet applied a split lacks the records moving into it;
  the transaction's read lock waits for it), and if, once the read is done, the hash state
  is no longer the layout's (fragments were added: records moved, and an old fragment may
  still hold a moved record's earlier value for a moment), the whole read is done again, in
  a transaction through ``mnesia_frag``: a stale layout costs a second look, never an old
  value. The hash state is asked for after the same ``schema`` lock, so a split that had
  begun when the chunks were read is seen.
- ``mnesia_frag`` picks a key's fragment by the hash state its node has *now*, then locks
  the record there. A transaction that picked the fragment being split by ``add_frag`` and
  waited for its lock wrote (or read) the old fragment once the records had moved, and one
  on a node that had not yet applied the split did the same after the split's locks were
  released elsewhere: a write acknowledged and lost, a second copy of the record left in
  the old fragment. So every transaction run through ``mnesia_frag`` here first takes a read
  lock on the ``schema`` table (:func:`after_schema_lock`): ``add_frag`` holds a write lock
  on it on every node until that node has applied the split, so the fragment is picked with
  the hash state of after the split, or the split waits for the transaction. (The split
  also write-locks the fragments it moves records out of and into until each of their
  nodes has applied it, so the moved records are in place before such a write lands.)
  The price: every schema operation write-locks that table, so these transactions wait
  for any one in progress on their node (``add_table_copy`` holds it while it copies).
- Listing one array is ``mnesia:select`` through ``mnesia_frag``: one ordered range per
  fragment (ordered within a fragment only), so its cost grows with the number of
  fragments, and the order across fragments is not kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pyrlang_zarr.erldist import Node
from pyrlang_zarr.errors import PyrlangZarrError
from pyrlang_zarr.term import Atom, ExportFun

MNESIA_FRAG = Atom("mnesia_frag")
ASYNC_DIRTY = Atom("async_dirty")
SYNC_TRANSACTION = Atom("sync_transaction")
TABLE_INFO = ExportFun("mnesia", "table_info", 2)
#: Inside an activity the plain functions go through the access module; the dirty_* ones do
#: not (they would read the first fragment only).
FRAG_READ = ExportFun("mnesia", "read", 2)
FRAG_SELECT = ExportFun("mnesia", "select", 2)
_DIRTY_READ_1 = ExportFun("mnesia", "dirty_read", 1)
_ZIPWITH = ExportFun("lists", "zipwith", 3)
_APPLY = ExportFun("erlang", "apply", 2)
_LOCK = ExportFun("mnesia", "lock", 2)
_SCHEMA_READ_LOCK = [(Atom("table"), Atom("schema")), Atom("read")]

#: Keys per call of a spread read, and calls in flight at once to each node: a few, so
#: that every node's link stays busy while the client takes an answer in.
SPREAD_BATCH = 8
SPREAD_PER_NODE = 3

STORAGE_KINDS = ("disc_copies", "ram_copies", "disc_only_copies")

_SYNC_TX = "mnesia:sync_transaction("
#: ``mnesia:sync_transaction(F)`` or ``(F, A)`` (their text in ``[%s]``), through
#: ``mnesia_frag`` after the schema lock
_FRAG_TX = (
    "{atomic, mnesia:activity(sync_transaction, fun(PzCall__) -> "
    "mnesia:lock({table, schema}, read), (fun([PzFun__]) -> apply(PzFun__, []); "
    "([PzFun__, PzArgs__]) -> apply(PzFun__, PzArgs__) end)(PzCall__) end, [[%s]], "
    "mnesia_frag)}"
)


def after_schema_lock(fun: ExportFun, args: list[Any]) -> tuple[ExportFun, list[Any]]:
    """The activity function and arguments that run ``fun(args...)`` after a read lock on
    the ``schema`` table: ``lists:zipwith(fun erlang:apply/2, [fun mnesia:lock/2, Fun],
    [[{table, schema}, read], Args])``, whose value is ``[_, Value]`` (see the module's
    docstring for why)."""
    return _ZIPWITH, [_APPLY, [_LOCK, fun], [_SCHEMA_READ_LOCK, args]]


def frag_text(text: str) -> str:
    """``text`` with each ``mnesia:sync_transaction(F[, A])`` run through ``mnesia_frag``,
    after the ``schema`` read lock (:func:`after_schema_lock`, spelled out).

    ``mnesia:activity/4`` returns the value or exits with ``{aborted, Reason}``; the
    rewritten call yields ``{atomic, Value}`` so the rest of the expression is unchanged,
    and an abort arrives as an rpc ``'EXIT'`` (mapped back by the client)."""
    out: list[str] = []
    pos = 0
    while (start := text.find(_SYNC_TX, pos)) >= 0:
        i = start + len(_SYNC_TX)
        depth, j = 1, i
        while depth:  # to the closing parenthesis; the arguments are kept whole
            ch = text[j]
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
            j += 1
        out.append(text[pos:start])
        out.append(_FRAG_TX % frag_text(text[i : j - 1]).strip())
        pos = j
    out.append(text[pos:])
    return "".join(out)


@dataclass(frozen=True, slots=True)
class FragLayout:
    """Where a fragmented table's fragments are, as read at one moment."""

    names: tuple[Atom, ...]  # fragment tables, by fragment number (1 = the table itself)
    readers: tuple[tuple[str, ...], ...]  # up-to-date replicas of each fragment
    hash_module: Atom
    hash_state: Any

    @property
    def n_fragments(self) -> int:
        return len(self.names)

    def owners(self) -> list[str]:
        """Every node holding a fragment, sorted."""
        return sorted({n for rs in self.readers for n in rs})


# One round trip: the fragments, the hash state, and each fragment's active replicas.
LAYOUT = """
begin
    Names = mnesia:activity(async_dirty, fun mnesia:table_info/2, [Tab, frag_names], mnesia_frag),
    {_, _, _, Mod, State} = mnesia:table_info(Tab, frag_hash),
    {Mod, State, [{N, mnesia:table_info(N, active_replicas)} || N <- Names]}
end.
"""


def parse_layout(value: Any) -> FragLayout:
    mod, state, frags = value
    return FragLayout(
        names=tuple(n for n, _ in frags),
        readers=tuple(tuple(sorted(str(r) for r in rs)) for _, rs in frags),
        hash_module=mod,
        hash_state=state,
    )


def fragment_numbers_call(layout: FragLayout, keys: Sequence[Any]) -> tuple[str, str, list[Any]]:
    """The rpc ``(module, function, args)`` giving each key's fragment number by the
    layout's hash state: ``lists:zipwith(fun Mod:key_to_frag_number/2, States, Keys)``."""
    fun = ExportFun(str(layout.hash_module), "key_to_frag_number", 2)
    return ("lists", "zipwith", [fun, [layout.hash_state] * len(keys), list(keys)])


def hash_state_call(table: Atom) -> tuple[str, str, list[Any]]:
    """The rpc ``(module, function, args)`` giving ``{atomic, [_, FragHash]}``: the table's
    ``frag_hash`` (its last element is the hash state) read after the ``schema`` read lock,
    so a split in progress on the node is waited for."""
    fun, args = after_schema_lock(TABLE_INFO, [table, Atom("frag_hash")])
    return ("mnesia", "transaction", [fun, args])


Fallback = Callable[[list[Any]], Awaitable[list[Any]]]


async def spread_read(
    node: Node,
    layout: FragLayout,
    numbers: Sequence[int],
    keys: Sequence[Any],
    fallback: Fallback,
    *,
    timeout: float | None,
    start: int = 0,
) -> tuple[list[Any], bool]:
    """The records of each key (lists, in order), read from the nodes holding their
    fragments: per fragment, batches of :data:`SPREAD_BATCH` keys, each to the least loaded
    of its up-to-date replicas (ties taken in turn); each node works through its batches with
    :data:`SPREAD_PER_NODE` calls in flight, all nodes at once. Keys found missing, or whose
    call failed, are read again with ``fallback`` (through ``mnesia_frag``).

    Returns the records and whether the layout looks stale (the fallback found a key the
    layout missed, or a node failed)."""
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(numbers):
        if not 1 <= n <= layout.n_fragments:  # grown since: let mnesia_frag find it
            groups.setdefault(0, []).append(i)
        else:
            groups.setdefault(n, []).append(i)
    out: list[Any] = [[] for _ in keys]
    retry: list[int] = list(groups.pop(0, []))
    failed = False
    turn = start
    queues: dict[str, list[tuple[Atom, list[int]]]] = {}
    load: dict[str, int] = {}  # keys given to each node so far
    # the biggest fragments first, each batch to the least loaded of its fragment's readers
    for n, idx in sorted(groups.items(), key=lambda item: -len(item[1])):
        readers = layout.readers[n - 1]
        if not readers:
            retry.extend(idx)
            continue
        for b in range(0, len(idx), SPREAD_BATCH):
            turn += 1
            peer = min(
                readers,
                key=lambda r: (load.get(r, 0), (readers.index(r) - turn) % len(readers)),
            )
            batch = idx[b : b + SPREAD_BATCH]
            load[peer] = load.get(peer, 0) + len(batch)
            queues.setdefault(peer, []).append((layout.names[n - 1], batch))

    async def worker(peer: str, queue: list[tuple[Atom, list[int]]]) -> None:
        nonlocal failed
        while queue:
            frag, idx = queue.pop(0)
            try:
                found = await node.rpc(
                    peer,
                    "lists",
                    "map",
                    [_DIRTY_READ_1, [(frag, keys[i]) for i in idx]],
                    timeout=timeout,
                    copy_binaries=False,
                )
            except PyrlangZarrError:  # any failure there: ask through mnesia_frag instead
                failed = True
                retry.extend(idx)
                for _, rest in queue:
                    retry.extend(rest)
                queue.clear()
                return
            if not isinstance(found, list) or len(found) != len(idx):
                retry.extend(idx)
                continue
            for i, records in zip(idx, found, strict=True):
                if records:
                    out[i] = records
                else:
                    retry.append(i)

    await asyncio.gather(
        *(worker(peer, queue) for peer, queue in queues.items() for _ in range(SPREAD_PER_NODE))
    )
    stale = failed
    if retry:
        retry.sort()
        again = await fallback([keys[i] for i in retry])
        for i, records in zip(retry, again, strict=True):
            if records:
                stale = True
                out[i] = records
    return out, stale
