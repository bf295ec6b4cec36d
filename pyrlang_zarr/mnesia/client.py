"""Reads, writes, batches and listings on one Mnesia table, driven through ``rex``.

Records are ``{Table, Key, Data}`` (record name = table name, attributes ``[key, data]``).
Everything runs as calls of OTP's own functions with external funs as arguments
(``mnesia:transaction(fun lists:zipwith/3, [fun erlang:apply/2, Funs, Args])``), or, where a
decision must be taken on the server, as an ``erl_eval`` expression (:mod:`.expr`).

- Writes and deletes run in ``sync_transaction``s (they return once every active replica has
  committed); a batch is **one** transaction: all or nothing.
- Reads are dirty by default (no locks, no commit protocol; each record is read atomically);
  ``read_many(consistent=True)`` reads several records in one transaction instead.
- Listing is a ``dirty_select`` whose match spec returns keys only: no chunk bytes cross the
  network and no table lock is taken. On an ``ordered_set`` the bound array id limits the
  scan to that array's key range.
- Sizes and byte ranges are computed by the match spec on the server (``byte_size``,
  ``binary_part``), so a partial read ships only the bytes asked for.
- Reads return the data as ``bytes``, or, for large values, as a read-only ``memoryview`` of
  the received packet: multi-MB chunks are not copied again after the socket.
- ``durable=True`` commits with ``sync_transaction`` and then forces the transaction log to
  disc on every disc replica (``mnesia:sync_log/0``) before returning.
- A fragmented table (``mnesia_frag``, asked once per client) is reached the same ways, each
  inside ``mnesia:activity(_, _, _, mnesia_frag)``; dirty reads of many keys go to the
  nodes holding their fragments (:mod:`.fragments`). Because fragments may be split while
  it is read, what a dirty read found missing there is read again in a transaction, and a
  listing there is one transaction (read locks on every fragment while it runs).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pyrlang_zarr.erldist import Node
from pyrlang_zarr.erldist.options import check_timeout
from pyrlang_zarr.erldist.sinks import ReplySink
from pyrlang_zarr.errors import (
    HandshakeTimeout,
    MnesiaNotRunning,
    NodeDown,
    NodeUnreachable,
    NoMajority,
    NotFound,
    RpcError,
    RpcTimeout,
    TableNotFound,
    TransactionError,
)
from pyrlang_zarr.mnesia.aborts import abort_error, from_rpc_error, unreadable_fragment
from pyrlang_zarr.mnesia.arriving import Placement, ReadSink
from pyrlang_zarr.mnesia.expr import Expressions
from pyrlang_zarr.mnesia.fragments import (
    ASYNC_DIRTY,
    FRAG_READ,
    FRAG_SELECT,
    LAYOUT,
    MNESIA_FRAG,
    SYNC_TRANSACTION,
    FragLayout,
    after_schema_lock,
    frag_text,
    fragment_numbers_call,
    hash_state_call,
    parse_layout,
    spread_read,
)
from pyrlang_zarr.term import Atom, ExportFun, atoms

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Failures that mean "this node cannot serve us now": the call moves to another replica.
FAILOVER = (NodeDown, NodeUnreachable, HandshakeTimeout, RpcTimeout, MnesiaNotRunning, NoMajority)

_WRITE = ExportFun("mnesia", "write", 1)
_DELETE = ExportFun("mnesia", "delete", 1)
_READ = ExportFun("mnesia", "read", 1)
_APPLY = ExportFun("erlang", "apply", 2)
_DIRTY_READ = ExportFun("mnesia", "dirty_read", 2)
_DIRTY_SELECT = ExportFun("mnesia", "dirty_select", 2)
_ZIPWITH = ExportFun("lists", "zipwith", 3)
_FOREACH = ExportFun("lists", "foreach", 2)
_MAP = ExportFun("lists", "map", 2)
_FOLDL = ExportFun("lists", "foldl", 3)
_SELECT = ExportFun("mnesia", "select", 3)
_APPEND = ExportFun("lists", "append", 1)
#: How long a call waits for a fragment being added to appear where it runs (seconds).
FRAG_SETTLE = 15.0
#: Calls (reads) at most in one transaction of second looks (:meth:`MnesiaClient._second_look`)
SECOND_LOOK_CALLS = 256
#: the dirty functions as they run inside a mnesia_frag activity
_FRAG_FUNS = {_DIRTY_READ: FRAG_READ, _DIRTY_SELECT: FRAG_SELECT}
_CONST = Atom("const")
_BADARITY = Atom("badarity")
_READ_LOCK = Atom("read")
_ANY = Atom("_")
_V1 = Atom("$1")
_V2 = Atom("$2")
_BYTE_SIZE = Atom("byte_size")
_BINARY_PART = Atom("binary_part")
_MINUS = Atom("-")
_LE = Atom("=<")


#: The nodes whose log a durable commit to table ``T`` forces: its ``disc_copies`` and
#: ``disc_only_copies``, or for a fragmented table its whole node pool (fragments live
#: anywhere in it; ``sync_log`` where a node holds only RAM copies costs nothing).
_DISC_NODES = """fun(T) ->
        case mnesia:table_info(T, frag_properties) of
            [] -> mnesia:table_info(T, disc_copies) ++ mnesia:table_info(T, disc_only_copies);
            Props -> proplists:get_value(node_pool, Props)
        end
    end"""


def _durable(transaction: str, tables: str = "[Tab]") -> str:
    """``transaction`` followed, once committed, by ``sync_log`` on every disc replica of
    ``tables`` (an expression): yields ``{Result, NodesWhoseLogWasNotSynced}``."""
    return f"""
begin
    Result = {transaction},
    case Result of
        {{atomic, _}} ->
            DiscNodes = {_DISC_NODES},
            Replicas = lists:usort(lists:append(lists:map(DiscNodes, {tables}))),
            {{_, Bad}} = rpc:multicall(Replicas, mnesia, sync_log, [], Timeout),
            {{Result, Bad}};
        _ ->
            {{Result, []}}
    end
end.
"""


_DURABLE_COMMIT = _durable("mnesia:sync_transaction(F, A)")

# the texts above and below as they run on a fragmented table (see fragments.frag_text)
_frag_texts: dict[str, str] = {}

_INSERT_IF_ABSENT = """
mnesia:sync_transaction(fun() ->
    case mnesia:read(Tab, Key, write) of
        [] -> mnesia:write({Tab, Key, Value}), true;
        _ -> false
    end
end).
"""

_COMPARE_AND_SET = """
mnesia:sync_transaction(fun() ->
    Current = case mnesia:read(Tab, Key, write) of
        [] -> absent;
        [{_, _, Data}] -> {present, Data}
    end,
    case Current =:= Expected of
        true ->
            case New of
                absent -> mnesia:delete({Tab, Key});
                {present, D} -> mnesia:write({Tab, Key, D})
            end,
            true;
        false -> false
    end
end).
"""
_INSERT_IF_ABSENT_DURABLE = _durable(_INSERT_IF_ABSENT.strip().removesuffix("."))
_COMPARE_AND_SET_DURABLE = _durable(_COMPARE_AND_SET.strip().removesuffix("."))


# Optimistic concurrency: apply Ops only if every key read still has the version we read
# (md5 of its data, or absent); otherwise abort with {conflict, StaleKeys}.
_CHECKED_BODY = """
fun() ->
    Version = fun(K) ->
        case mnesia:read(Tab, K, write) of [] -> absent; [{_, _, D}] -> erlang:md5(D) end
    end,
    case [K || {K, V} <- Reads, Version(K) =/= V] of
        [] ->
            lists:foreach(
                fun({write, K, D}) -> mnesia:write({Tab, K, D});
                   ({delete, K}) -> mnesia:delete({Tab, K})
                end, Ops);
        Stale ->
            mnesia:abort({conflict, Stale})
    end
end
"""
_CHECKED = f"mnesia:sync_transaction({_CHECKED_BODY})."
_CHECKED_DURABLE = _durable(f"mnesia:sync_transaction({_CHECKED_BODY})")


# One transaction that maps keys with a layout read earlier: check that the records the layout
# came from are unchanged (Guards: {Key, Md5 | absent, LockKind}; else abort with
# {conflict, StaleKeys}), then, unless one of Absent exists (-> false), apply Ops (-> true).
# Ops beyond write/delete: {move, From, To, Shadows} moves a record unless To or one of
# Shadows exists (then From is only deleted); {delete_select, Spec} deletes the keys the match
# spec returns, except chunk-like keys that are not tuples of integers.
_GUARDED_BODY = """
fun() ->
    Version = fun(K, Lock) ->
        case mnesia:read(Tab, K, Lock) of [] -> absent; [{_, _, D}] -> erlang:md5(D) end
    end,
    Ints = fun(I) -> lists:all(fun erlang:is_integer/1, tuple_to_list(I)) end,
    Known = fun({_, {chunk, I}}) when is_tuple(I) -> Ints(I);
               ({_, I}) when is_tuple(I) -> Ints(I);
               (_) -> true
            end,
    Apply = fun({write, K, D}) -> mnesia:write({Tab, K, D});
               ({delete, K}) -> mnesia:read(Tab, K, read) =:= [] orelse mnesia:delete({Tab, K});
               ({move, From, To, Shadows}) ->
                   case mnesia:read(Tab, From, write) of
                       [] -> ok;
                       [{_, _, D}] ->
                           case [S || S <- [To | Shadows], mnesia:read(Tab, S, write) =/= []] of
                               [] -> mnesia:write({Tab, To, D});
                               _ -> ok
                           end,
                           mnesia:delete({Tab, From})
                   end;
               ({delete_select, Spec}) ->
                   [mnesia:delete({Tab, K}) || K <- mnesia:select(Tab, Spec, write), Known(K)]
            end,
    case [K || {K, V, Lock} <- Guards, Version(K, Lock) =/= V] of
        [] ->
            case [K || K <- Absent, mnesia:read(Tab, K, write) =/= []] of
                [] -> lists:foreach(Apply, Ops), true;
                _ -> false
            end;
        Stale ->
            mnesia:abort({conflict, Stale})
    end
end
"""
# The common case of the above, kept small (its syntax tree travels with every call): guards
# {Key, [] | [Md5], LockKind}, then Ops: {Key, Data} writes, [Key] deletes. In both, a delete
# first looks under a read lock (local) and deletes only a record that is there: a chunk write
# deletes its other record forms, which are almost never there, and a delete of an absent key
# would take write locks on every replica and travel with the commit.
_GUARDED_WRITES_BODY = """
fun() ->
    case [K || {K, V, L} <- G, [erlang:md5(D) || {_, _, D} <- mnesia:read(Tab, K, L)] =/= V] of
        [] -> [case O of {K, D} -> mnesia:write({Tab, K, D});
                         [K] -> mnesia:read(Tab, K, read) =:= [] orelse mnesia:delete({Tab, K})
               end || O <- Ops];
        S -> mnesia:abort({conflict, S})
    end
end
"""
_GUARDED_WRITES = f"mnesia:sync_transaction({_GUARDED_WRITES_BODY})."
_GUARDED_WRITES_DURABLE = _durable(f"mnesia:sync_transaction({_GUARDED_WRITES_BODY})")
_GUARDED = f"mnesia:sync_transaction({_GUARDED_BODY})."
_GUARDED_DURABLE = _durable(f"mnesia:sync_transaction({_GUARDED_BODY})")


class Conflict(Exception):
    """A checked batch found keys changed since they were read (``keys``): nothing written."""

    def __init__(self, keys: list[Any]) -> None:
        super().__init__(f"{len(keys)} record(s) changed since read")
        self.keys = keys


@dataclass(frozen=True, slots=True)
class Write:
    """Write ``data`` under ``key``; and delete ``replaces``, other records of the same
    value (a chunk's earlier record forms), in the same transaction."""

    key: Any
    data: Any
    replaces: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class Delete:
    key: Any


@dataclass(frozen=True, slots=True)
class Move:
    """Move the record ``src`` to ``dst`` unless ``dst`` or one of ``shadows`` exists (then
    ``src`` is only deleted), on the server: the data is not shipped."""

    src: Any
    dst: Any
    shadows: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class DeleteSelect:
    """Delete, in the transaction, every key the match spec ``spec`` returns (it must return
    whole keys), except ``{_, {chunk, I}}`` and ``{_, I}`` keys whose ``I`` is a tuple that is
    not all integers."""

    spec: Any


@dataclass(frozen=True, slots=True)
class Guard:
    """A precondition of a transaction: the record ``key`` still has version ``md5`` (``None``:
    absent). It is read under a read lock (``write=True``: a write lock), so concurrent
    transactions that only check it run side by side, and one that changes it waits."""

    key: Any
    md5: bytes | None
    write: bool = False


@dataclass(frozen=True, slots=True)
class Either:
    """Several keys for one value, in order of precedence: a read gives the first present."""

    keys: tuple[Any, ...]


Op = Write | Delete


@dataclass(frozen=True, slots=True)
class _SecondLook:
    """Reads a dirty read missed, waiting for the transaction that looks again."""

    funs: list[ExportFun]
    args: list[Any]
    done: asyncio.Future[list[Any]]


def _op_terms(ops: Sequence[Write | Delete | Move | DeleteSelect]) -> list[tuple[Any, ...]]:
    terms: list[tuple[Any, ...]] = []
    for op in ops:
        if isinstance(op, Write):
            terms.append((Atom("write"), op.key, op.data))
            terms += [(Atom("delete"), k) for k in op.replaces]
        elif isinstance(op, Delete):
            terms.append((Atom("delete"), op.key))
        elif isinstance(op, Move):
            terms.append((Atom("move"), op.src, op.dst, list(op.shadows)))
        elif isinstance(op, DeleteSelect):
            terms.append((Atom("delete_select"), op.spec))
        else:
            raise TypeError(f"not an operation: {op!r}")
    return terms


def _presence(data: bytes | None) -> Any:
    return Atom("absent") if data is None else (Atom("present"), data)


class MnesiaClient:
    """Operations on ``table`` through the Mnesia node ``coordinator``.

    ``timeout`` bounds every call (seconds). When the coordinator is down, cut off, not
    running Mnesia or on the minority side of a majority table, the call moves to another
    replica (``replicas``, and those Mnesia reports for the table) and that one becomes the
    coordinator. A write whose first attempt had an unknown outcome is simply applied again
    there: every write replaces whole values, so applying it twice is applying it once.
    """

    def __init__(
        self,
        node: Node,
        table: str,
        coordinator: str,
        *,
        replicas: Sequence[str] = (),
        timeout: float | None = 60.0,
        durable: bool = False,
    ) -> None:
        if not isinstance(table, str) or not table:
            raise ValueError(f"table must be a non-empty str, got {table!r}")
        # checked here, before any call: a bad timeout must not surface after a write landed
        timeout = check_timeout("timeout", timeout, allow_none=True)
        self.node = node
        self.table = table
        self.coordinator = coordinator
        self.replicas = list(dict.fromkeys([coordinator, *replicas]))
        self.timeout = timeout
        self.durable = durable
        self._tab = Atom(table)
        self._exprs = Expressions(node)
        # how long a durable commit waits for the replicas' sync_log, in ms
        self._sync_ms = int((timeout or 30.0) * 1000)
        self._discovered = False
        # fragmented (mnesia_frag)? None until a node said; every access depends on it
        self._frag: bool | None = None
        self._pool: list[str] = []
        self._layout: FragLayout | None = None
        self._turn = 0
        # locked second looks waiting for the next transaction, and its runner, per loop
        self._second_looks: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, list[_SecondLook]
        ] = weakref.WeakKeyDictionary()
        self._second_look_runs: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Task[None]
        ] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"<MnesiaClient {self.table} via {self.coordinator}>"

    @property
    def table_atom(self) -> Atom:
        """The table name as the atom records and match specs use."""
        return self._tab

    # -- plumbing -------------------------------------------------------------------------
    async def _attempts(
        self, what: str, attempt: Callable[[str], Awaitable[T]], *, reading: bool = False
    ) -> T:
        """Run ``attempt(peer)`` on the coordinator, then on each other replica while the
        failure says that node cannot serve us. One warning per move of the coordinator:
        calls in flight that fail over to the node another call already moved to say
        nothing more."""
        if not self._discovered:
            self._discovered = True
            await self._discover()
        errors: list[str] = []
        last: Exception | None = None
        for peer in [self.coordinator, *(r for r in self.replicas if r != self.coordinator)]:
            try:
                result = await attempt(peer)
            except FAILOVER as exc:
                log.debug("%s on %s failed (%s); trying another replica", what, peer, exc)
                errors.append(f"{peer}: {exc}")
                last = exc
                continue
            if peer != self.coordinator:
                log.warning(
                    "%s failed (%s); %s now coordinates for %s",
                    what,
                    "; ".join(errors),
                    peer,
                    self.table,
                )
                self.coordinator = peer
            return result
        assert last is not None
        if isinstance(last, NoMajority):
            raise last
        outcome = (
            "nothing was written"
            if reading
            else "a write among them may or may not have been applied (outcome unknown)"
        )
        raise type(last)(
            f"{what} failed on every replica of {self.table!r}; {outcome}: " + "; ".join(errors)
        ) from last

    async def _not_running(self, peer: str, error: TableNotFound) -> Exception:
        """A missing table on a node whose Mnesia is stopped is a stopped Mnesia."""
        try:
            running = await self.node.rpc(
                peer, "mnesia", "system_info", [Atom("is_running")], timeout=10
            )
        except (RpcError, *FAILOVER):
            return error
        if running == Atom("yes"):
            return error
        return MnesiaNotRunning(
            f"Mnesia is not running on {peer} (is_running = {running}), so table "
            f"{self.table!r} cannot be reached there: start Mnesia on it, or let pyrlang_zarr "
            "set the cluster up (pz.create(..., nodes=[...]) or MnesiaStore(..., nodes=[...]))"
        )

    async def _discover(self) -> None:
        """Add the table's replicas as Mnesia knows them to the failover candidates (for a
        fragmented table: its node pool)."""
        for peer in list(self.replicas):
            try:
                nodes = await self.node.rpc(
                    peer, "mnesia", "table_info", [self._tab, Atom("all_nodes")], timeout=10
                )
                await self._detect_on(peer)
            except (RpcError, *FAILOVER):
                continue
            if self._frag:
                nodes = list(self._pool)
            if isinstance(nodes, list):
                self.replicas = list(dict.fromkeys([*self.replicas, *map(str, nodes)]))
            return

    async def _detect_on(self, peer: str) -> None:
        props = await self.node.rpc(
            peer, "mnesia", "table_info", [self._tab, Atom("frag_properties")], timeout=10
        )
        found = (
            dict(p for p in props if isinstance(p, tuple) and len(p) == 2)
            if isinstance(props, list)
            else {}
        )
        self._frag = Atom("n_fragments") in found  # [] for a table that is not fragmented
        if self._frag:
            self._pool = [str(n) for n in found.get(Atom("node_pool"), [])]

    async def fragmented(self) -> bool:
        """Whether the table is fragmented (``frag_properties``), asked once of the first
        replica that answers. If one refuses (no such table, Mnesia not running), False
        for now and asked again next time: the call itself reports the failure. If none
        can be reached, that error: guessing "not fragmented" would send a write to the
        first fragment whatever its key's hash."""
        if self._frag is None:
            answered, last = False, None
            for peer in [self.coordinator, *self.replicas]:
                try:
                    await self._detect_on(peer)
                    break
                except RpcError:
                    answered = True  # it refused: the call itself will say what is wrong
                except FAILOVER as exc:
                    last = exc
            else:
                if not answered and last is not None:
                    raise last
        return bool(self._frag)

    async def frag_layout(self, *, refresh: bool = False) -> FragLayout:
        """The fragments, their hash state and up-to-date replicas (kept until a read
        finds it stale, or ``refresh``)."""
        if self._layout is None or refresh:
            value = await self._eval(LAYOUT, {"Tab": self._tab}, "fragment layout")
            self._layout = parse_layout(value)
        return self._layout

    def _fragment_missing(self, reason: Any) -> bool:
        """An abort (or an activity's exit) saying one of our fragments has no copy to
        reach (:func:`~.aborts.unreadable_fragment`)."""
        match reason:
            case (atoms.EXIT, (atoms.ABORTED, inner)) | (atoms.ABORTED, inner):
                return unreadable_fragment(inner, self.table) is not None
        return False

    async def _frag_settled(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, again while it fails on a fragment that does not exist yet where
        it ran: while fragments are added, a node may see the new hash state before the
        new fragment (an abort: nothing was written). Up to :data:`FRAG_SETTLE` seconds."""
        if not self._frag:
            return await call()
        delay, waited = 0.02, 0.0
        while True:
            try:
                result = await call()
            except RpcError as exc:
                if waited >= FRAG_SETTLE or not self._fragment_missing(exc.reason):
                    raise
            else:
                if waited >= FRAG_SETTLE or not self._fragment_missing(result):
                    return result
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.5)

    async def _activity(
        self, kind: Atom, fun: ExportFun, args: list[Any], what: str, **kw: Any
    ) -> Any:
        """``mnesia:activity(Kind, Fun, Args, mnesia_frag)``: exits (aborts) arrive as
        rpc errors and are mapped like aborts. A transaction runs after the ``schema`` read
        lock (:func:`~.fragments.after_schema_lock`: a split in progress is waited for)."""
        if kind != SYNC_TRANSACTION:
            return await self._rpc("mnesia", "activity", [kind, fun, args, MNESIA_FRAG], what, **kw)
        fun, args = after_schema_lock(fun, args)
        _, value = await self._rpc("mnesia", "activity", [kind, fun, args, MNESIA_FRAG], what, **kw)
        return value

    async def _rpc(
        self,
        module: str,
        function: str,
        args: list[Any],
        what: str,
        *,
        unwrap: bool = False,
        copy: bool = True,
        reading: bool = False,
        sink: ReplySink | None = None,
    ) -> Any:
        async def attempt(peer: str) -> Any:
            try:
                result = await self._frag_settled(
                    lambda: self.node.rpc(
                        peer,
                        module,
                        function,
                        args,
                        timeout=self.timeout,
                        copy_binaries=copy,
                        sink=sink,
                    )
                )
                return self._unwrap(result, what) if unwrap else result
            except RpcError as exc:
                error: Exception = from_rpc_error(exc, self.table, what)
                if isinstance(error, TableNotFound):
                    error = await self._not_running(peer, error)
                raise error from None
            except TableNotFound as exc:
                raise await self._not_running(peer, exc) from None

        return await self._attempts(what, attempt, reading=reading)

    async def _eval(
        self,
        text: str,
        bindings: dict[str, Any],
        what: str,
        *,
        durable: bool = False,
        frag: bool | None = None,
    ) -> Any:
        """Evaluate ``text``; with ``durable`` it yields ``{Result, BadNodes}`` (unwrapped).
        Its transactions run through ``mnesia_frag`` if ``frag`` (default: if this client's
        table is fragmented)."""

        if frag is None:
            frag = await self.fragmented()
        if frag:
            text = _frag_texts.get(text) or _frag_texts.setdefault(text, frag_text(text))

        async def attempt(peer: str) -> Any:
            try:
                result = await self._frag_settled(
                    lambda: self._exprs.eval(peer, text, bindings, timeout=self.timeout)
                )
            except RpcError as exc:
                match exc.reason:  # mnesia_frag's abort is an exit: back to {aborted, R}
                    case (atoms.EXIT, (atoms.ABORTED, reason)) if frag:
                        return (atoms.ABORTED, reason)
                raise from_rpc_error(exc, self.table, what) from None
            if not durable:
                return result
            outcome, bad = result
            if bad:
                raise TransactionError(
                    f"transaction_error: {what} committed, but the log could not be forced to "
                    f"disc on {bad}",
                    bad,
                )
            return outcome

        return await self._attempts(what, attempt)

    async def transaction(
        self, fun: ExportFun, args: list[Any], what: str = "transaction", *, copy: bool = True
    ) -> Any:
        """``mnesia:sync_transaction(Fun, Args)``: the result, or the mapped abort as an
        exception. ``sync_``: it returns once every active replica has committed, so a write
        acknowledged here is readable on any replica (and after a failover) at once."""
        if self.durable:
            bindings = {"F": fun, "A": args, "Tab": self._tab, "Timeout": self._sync_ms}
            return self._unwrap(
                await self._eval(_DURABLE_COMMIT, bindings, what, durable=True), what
            )
        if await self.fragmented():
            return await self._activity(SYNC_TRANSACTION, fun, args, what, copy=copy)
        return await self._rpc(
            "mnesia", "sync_transaction", [fun, args], what, unwrap=True, copy=copy
        )

    def _unwrap(self, result: Any, what: str) -> Any:
        match result:
            case tuple((atoms.ATOMIC, value)):
                return value
            case tuple((atoms.ABORTED, reason)):
                raise abort_error(reason, self.table, what)
        raise abort_error(result, self.table, what)

    def _record(self, key: Any, data: Any) -> tuple[Any, Any, Any]:
        return (self._tab, key, data)

    # -- writes ---------------------------------------------------------------------------
    async def write(self, key: Any, data: Any) -> None:
        await self.transaction(_WRITE, [self._record(key, data)], "write")

    async def delete(self, key: Any) -> None:
        await self.transaction(_DELETE, [(self._tab, key)], "delete")

    async def write_many(self, items: Iterable[tuple[Any, Any]]) -> None:
        """Write all ``(key, data)`` pairs in one transaction."""
        records = [self._record(k, d) for k, d in items]
        if records:
            await self.transaction(_FOREACH, [_WRITE, records], f"write of {len(records)}")

    async def batch(self, ops: Sequence[Op]) -> None:
        """Writes and deletes, in order, in one transaction: all of them or none."""
        if not ops:
            return
        funs: list[Any] = []
        args: list[Any] = []
        for op in ops:
            if isinstance(op, Write):
                funs.append(_WRITE)
                args.append([self._record(op.key, op.data)])
                for key in op.replaces:
                    funs.append(_DELETE)
                    args.append([(self._tab, key)])
            elif isinstance(op, Delete):
                funs.append(_DELETE)
                args.append([(self._tab, op.key)])
            else:
                raise TypeError(f"batch takes Write and Delete operations, not {op!r}")
        await self.transaction(_ZIPWITH, [_APPLY, funs, args], f"batch of {len(ops)}")

    async def checked_batch(
        self, reads: Sequence[tuple[Any, bytes | None] | Guard], ops: Sequence[Op]
    ) -> None:
        """Apply ``ops`` in one transaction iff each ``(key, md5)`` in ``reads`` still holds
        (``md5`` of the data read, ``None`` if it was absent); else raise :class:`Conflict`.
        ``(key, md5)`` entries are checked under a write lock; :class:`Guard` entries under
        the lock they ask for."""
        for op in ops:
            if not isinstance(op, Write | Delete):
                raise TypeError(f"checked_batch takes Write and Delete operations, not {op!r}")
        if any(isinstance(r, Guard) for r in reads):
            guards = [r if isinstance(r, Guard) else Guard(r[0], r[1], write=True) for r in reads]
            await self.guarded(guards, ops)
            return
        terms = _op_terms(ops)
        versions = [(k, Atom("absent") if v is None else v) for k, v in reads]  # type: ignore[misc]
        bindings = {"Tab": self._tab, "Reads": versions, "Ops": terms, "Timeout": self._sync_ms}
        what = f"batch of {len(ops)}"
        text = _CHECKED_DURABLE if self.durable else _CHECKED
        result = await self._eval(text, bindings, what, durable=self.durable)
        match result:
            case tuple((atoms.ABORTED, tuple((atoms.CONFLICT, stale)))):
                raise Conflict(list(stale))
        self._unwrap(result, what)

    async def guarded(
        self,
        guards: Sequence[Guard],
        ops: Sequence[Write | Delete | Move | DeleteSelect],
        *,
        absent: Sequence[Any] = (),
    ) -> bool:
        """One transaction: if a record of ``guards`` changed, raise :class:`Conflict`
        (nothing written); if a key of ``absent`` exists, return False (nothing written);
        else apply ``ops`` in order and return True."""
        what = f"batch of {len(ops)}"
        if not absent and all(isinstance(op, Write | Delete) for op in ops):
            small: list[Any] = []
            for op in ops:
                if isinstance(op, Write):
                    small.append((op.key, op.data))
                    small += [[k] for k in op.replaces]
                else:
                    small.append([op.key])  # type: ignore[union-attr]
            bindings = {
                "Tab": self._tab,
                "G": [
                    (g.key, [] if g.md5 is None else [g.md5], Atom("write" if g.write else "read"))
                    for g in guards
                ],
                "Ops": small,
                "Timeout": self._sync_ms,
            }
            text = _GUARDED_WRITES_DURABLE if self.durable else _GUARDED_WRITES
        else:
            terms = [
                (
                    g.key,
                    Atom("absent") if g.md5 is None else g.md5,
                    Atom("write" if g.write else "read"),
                )
                for g in guards
            ]
            bindings = {
                "Tab": self._tab,
                "Guards": terms,
                "Absent": list(absent),
                "Ops": _op_terms(ops),
                "Timeout": self._sync_ms,
            }
            text = _GUARDED_DURABLE if self.durable else _GUARDED
        result = await self._eval(text, bindings, what, durable=self.durable)
        match result:
            case (atoms.ABORTED, (atoms.CONFLICT, stale)):
                raise Conflict(list(stale))
        return bool(self._unwrap(result, what))

    async def write_if(self, key: Any, expected: bytes, items: Sequence[tuple[Any, Any]]) -> None:
        """Write ``items`` (``(key, data)`` pairs) in one transaction iff the record ``key``
        holds exactly ``expected`` (checked under a read lock); else raise :class:`Conflict`.

        No ``erl_eval``: OTP's own functions, composed. The transaction applies
        ``lists:foldl(fun erlang:apply/2, [Tab, Spec, read], [fun mnesia:select/3,
        fun lists:append/1])``, then the writes. ``Spec`` matches the record only with the
        expected data and then yields ``[]``: ``select`` returns ``[[]]``, and
        ``lists:append([])`` is ``[]``. Any other data, or no record, and ``select`` returns
        ``[]``: ``erlang:apply(fun lists:append/1, [])`` fails with ``badarity``, which
        aborts the transaction before anything is written."""
        spec: list[Any] = [((self._tab, key, expected), [], [(_CONST, [])])]
        funs: list[Any] = [_FOLDL]
        args: list[Any] = [[_APPLY, [self._tab, spec, _READ_LOCK], [_SELECT, _APPEND]]]
        for k, data in items:
            funs.append(_WRITE)
            args.append([self._record(k, data)])
        try:
            await self.transaction(_ZIPWITH, [_APPLY, funs, args], f"write of {len(items)}")
        except TransactionError as exc:
            match exc.reason:
                case ((what, (fun, [])), _) if what == _BADARITY and fun == _APPEND:
                    raise Conflict([key]) from None
            raise

    async def insert_if_absent(self, key: Any, data: Any) -> bool:
        """Write unless a record with ``key`` exists, atomically; True if written."""
        text = _INSERT_IF_ABSENT_DURABLE if self.durable else _INSERT_IF_ABSENT
        bindings = {"Tab": self._tab, "Key": key, "Value": data, "Timeout": self._sync_ms}
        result = await self._eval(text, bindings, "insert_if_absent", durable=self.durable)
        return bool(self._unwrap(result, "insert_if_absent"))

    async def compare_and_set(self, key: Any, expected: bytes | None, new: bytes | None) -> bool:
        """Replace the data with ``new`` (``None``: delete) iff it is ``expected`` (``None``:
        absent), atomically; True if it was."""
        text = _COMPARE_AND_SET_DURABLE if self.durable else _COMPARE_AND_SET
        bindings = {
            "Tab": self._tab,
            "Key": key,
            "Expected": _presence(expected),
            "New": _presence(new),
            "Timeout": self._sync_ms,
        }
        result = await self._eval(text, bindings, "compare_and_set", durable=self.durable)
        return bool(self._unwrap(result, "compare_and_set"))

    # -- reads ----------------------------------------------------------------------------
    async def replica_view(self) -> tuple[list[str], list[str]]:
        """``(replicas, reachable)`` as the coordinator sees them: the table's replicas and
        those among them it currently runs Mnesia with."""
        if await self.fragmented():
            layout = await self.frag_layout(refresh=True)
            running = await self._rpc(
                "mnesia", "system_info", [Atom("running_db_nodes")], "replica view", reading=True
            )
            live = {str(n) for n in running}
            pool = sorted(set(self._pool) | set(layout.owners()))
            return pool, [n for n in pool if n in live]
        replicas, running = await asyncio.gather(
            self._rpc(
                "mnesia",
                "table_info",
                [self._tab, Atom("all_nodes")],
                "replica view",
                reading=True,
            ),
            self._rpc(
                "mnesia", "system_info", [Atom("running_db_nodes")], "replica view", reading=True
            ),
        )
        live = {str(n) for n in running}
        return sorted(map(str, replicas)), sorted(str(n) for n in replicas if str(n) in live)

    async def read(self, key: Any) -> Any | None:
        """The data under ``key`` (dirty read), or ``None``."""
        if await self.fragmented():
            records = await self._activity(
                ASYNC_DIRTY, FRAG_READ, [self._tab, key], "read", copy=False, reading=True
            )
            return records[0][2] if records else None
        records = await self._rpc(
            "mnesia", "dirty_read", [self._tab, key], "read", copy=False, reading=True
        )
        return records[0][2] if records else None

    async def read_required(self, key: Any) -> Any:
        """Like :meth:`read`, but a missing record raises :class:`NotFound`."""
        data = await self.read(key)
        if data is None:
            raise NotFound(f"not_found: no record {key!r} in table {self.table!r}")
        return data

    async def read_many(
        self,
        keys: Sequence[Any],
        *,
        consistent: bool = False,
        placement: Placement | None = None,
    ) -> list[Any | None]:
        """The data under each key (``None`` where missing), in order.

        ``consistent=True`` reads them all in one transaction (read locks: a concurrent batch
        is seen entirely or not at all); otherwise each is a dirty read. An :class:`Either`
        in ``keys`` gives the data of the first of its keys that is present. A
        ``placement`` (:mod:`~pyrlang_zarr.mnesia.arriving`, indexed by the keys with each
        ``Either`` spelled out) may receive data in place, as the consistent read of a
        table that is not fragmented arrives: that data reads as the landing it went to.
        """
        if not keys:
            return []
        if any(isinstance(k, Either) for k in keys):
            flat = [k for key in keys for k in (key.keys if isinstance(key, Either) else (key,))]
            values = iter(await self.read_many(flat, consistent=consistent, placement=placement))
            out: list[Any | None] = []
            for key in keys:
                found = [next(values) for _ in (key.keys if isinstance(key, Either) else (key,))]
                out.append(next((v for v in found if v is not None), None))
            return out
        oids = [(self._tab, k) for k in keys]
        if await self.fragmented():
            if consistent:
                found = await self._frag_read(list(keys))
            else:
                found = await self._spread_read(list(keys))
            return [records[0][2] if records else None for records in list(found)]
        if consistent:
            found = await self._rpc(  # a read has nothing to force to disc, even when durable
                "mnesia",
                "sync_transaction",
                [_MAP, [_READ, oids]],
                f"read of {len(keys)}",
                unwrap=True,
                copy=False,
                reading=True,
                sink=None if placement is None else ReadSink(len(oids), placement),
            )
        else:
            found = await self._rpc(
                "lists",
                "map",
                [ExportFun("mnesia", "dirty_read", 1), oids],
                "read",
                copy=False,
                reading=True,
            )
        return [records[0][2] if records else None for records in list(found)]

    async def _frag_read(self, keys: list[Any]) -> list[Any]:
        """The records of each key, read in one transaction through ``mnesia_frag``."""
        found = await self._activity(
            SYNC_TRANSACTION,
            _MAP,
            [_READ, [(self._tab, k) for k in keys]],
            f"read of {len(keys)}",
            copy=False,
            reading=True,
        )
        return list(found)

    async def _spread_read(self, keys: list[Any]) -> list[Any]:
        """The records of each key of a fragmented table, read from the nodes holding
        their fragments in parallel (:func:`~.fragments.spread_read`)."""
        layout = await self.frag_layout()
        module, function, args = fragment_numbers_call(layout, keys)
        numbers = await self._rpc(module, function, args, "fragment of keys", reading=True)
        if not isinstance(numbers, list) or len(numbers) != len(keys):
            return await self._frag_read(keys)
        self._turn += 1
        found, stale = await spread_read(
            self.node,
            layout,
            numbers,
            keys,
            self._frag_read,
            timeout=self.timeout,
            start=self._turn,
        )
        if stale:
            self._layout = None
        # The hash state only changes when fragments are added or removed: if it is still
        # the layout's once any split begun meanwhile is done (the schema lock), every key
        # was looked for in its fragment, and a key not found there was looked for again
        # in a transaction (a copy not yet given the records of a split has none).
        if await self._settled_hash_state() != layout.hash_state:  # grown: again, in a transaction
            self._layout = None
            return await self._frag_read(keys)
        return found

    async def size(self, key: Any) -> int | None:
        """``byte_size`` of the data under ``key``, computed on the server."""
        found = await self._select(self.size_spec(key), "size", one_key=True)
        return found[0] if found else None

    async def read_range(self, key: Any, start: int, length: int | None) -> bytes | None:
        """Bytes ``[start, start + length)`` of the data under ``key``, clipped to its end
        (``length=None``: to the end), cut on the server. ``None`` if there is no record."""
        found = await self._select(
            self.range_spec(key, start, length), "read_range", copy=False, one_key=True
        )
        return found[0] if found else None

    async def read_suffix(self, key: Any, length: int) -> bytes | None:
        """The last ``length`` bytes (all of them if shorter), cut on the server."""
        found = await self._select(
            self.suffix_spec(key, length), "read_suffix", copy=False, one_key=True
        )
        return found[0] if found else None

    async def dirty_calls(
        self, calls: Sequence[tuple[ExportFun, list[Any]]], what: str, *, locked: bool = False
    ) -> list[Any]:
        """Several dirty reads or selects (``(fun, args)``) in one round trip, results in
        order: ``lists:zipwith(fun erlang:apply/2, Funs, Args)`` on the coordinator.
        ``locked``, on a fragmented table: in a transaction instead (read locks, after the
        schema lock), to look again at what a dirty read found missing while a fragment may
        have been split (:mod:`.fragments`)."""
        if not calls:
            return []
        funs = [f for f, _ in calls]
        args = [a for _, a in calls]
        if await self.fragmented():
            funs = [_FRAG_FUNS.get(f, f) for f in funs]
            if locked:
                return await self._second_look(funs, args)
            found: list[Any] = await self._activity(
                ASYNC_DIRTY, _ZIPWITH, [_APPLY, funs, args], what, copy=False
            )
            return list(found)
        found = await self._rpc("lists", "zipwith", [_APPLY, funs, args], what, copy=False)
        return list(found)

    async def _second_look(self, funs: list[ExportFun], args: list[Any]) -> list[Any]:
        """``funs`` applied to ``args`` in a transaction shared with the other second looks
        asked for on this loop meanwhile: a zarr read's missing chunks each ask for one,
        at once, and one transaction serves them all (one runs at a time; those asked for
        while it runs go in the next, up to :data:`SECOND_LOOK_CALLS` calls each)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[Any]] = loop.create_future()
        self._second_looks.setdefault(loop, []).append(_SecondLook(funs, args, done))
        run = self._second_look_runs.get(loop)
        if run is None or run.done():
            run = loop.create_task(self._second_looks_run(loop))
            if not run.done():  # (an eager task may have run to its end already)
                self._second_look_runs[loop] = run
                run.add_done_callback(lambda task: self._second_looks_ended(loop, task))
        return await done

    async def _second_looks_run(self, loop: asyncio.AbstractEventLoop) -> None:
        while waiting := self._second_looks.pop(loop, None):
            looks: list[_SecondLook] = []
            calls = 0
            while waiting and (not looks or calls + len(waiting[0].funs) <= SECOND_LOOK_CALLS):
                looks.append(waiting.pop(0))
                calls += len(looks[-1].funs)
            if waiting:  # the rest go in the next transaction
                self._second_looks.setdefault(loop, [])[:0] = waiting
            try:
                await self._second_looks_answer(looks)
            except BaseException:  # cancelled (the loop is closing): so are they
                for look in looks:
                    look.done.cancel()
                raise

    async def _second_looks_answer(self, looks: list[_SecondLook]) -> None:
        try:
            found = await self._second_looks_read(looks)
        except Exception as exc:  # one of them may be at fault: each on its own, to see which
            if len(looks) > 1:
                for look in looks:
                    await self._second_looks_answer([look])
            elif not looks[0].done.done():
                looks[0].done.set_exception(exc)
            return
        at = 0
        for look in looks:
            if not look.done.done():
                look.done.set_result(found[at : at + len(look.funs)])
            at += len(look.funs)

    async def _second_looks_read(self, looks: list[_SecondLook]) -> list[Any]:
        funs = [f for look in looks for f in look.funs]
        args = [a for look in looks for a in look.args]
        found = await self._activity(
            SYNC_TRANSACTION, _ZIPWITH, [_APPLY, funs, args], "read", copy=False
        )
        return list(found)

    def _second_looks_ended(self, loop: asyncio.AbstractEventLoop, run: asyncio.Task[None]) -> None:
        """A runner ended (its looks all answered), or was cancelled, even before it began
        (the loop closing): the looks left waiting are cancelled, and the next look on
        this loop starts a runner of its own."""
        if self._second_look_runs.get(loop) is not run:
            return  # another runner serves this loop already
        del self._second_look_runs[loop]
        if run.cancelled() or run.exception() is not None:
            for look in self._second_looks.pop(loop, []):
                look.done.cancel()

    def read_call(self, key: Any) -> tuple[ExportFun, list[Any]]:
        """:meth:`dirty_calls` entry: the records under ``key``."""
        return (_DIRTY_READ, [self._tab, key])

    async def _settled_hash_state(self) -> Any:
        """The table's hash state once any split in progress on the coordinator is done."""
        after = await self._rpc(
            *hash_state_call(self._tab), "fragment layout", unwrap=True, reading=True
        )
        return after[-1][-1]

    def select_call(self, spec: list[Any]) -> tuple[ExportFun, list[Any]]:
        """:meth:`dirty_calls` entry: ``mnesia:dirty_select`` with ``spec`` on the table."""
        return (_DIRTY_SELECT, [self._tab, spec])

    def size_spec(self, key: Any) -> list[Any]:
        """Match spec giving ``byte_size`` of the data under ``key``."""
        return [((self._tab, key, _V1), [], [(_BYTE_SIZE, _V1)])]

    def range_spec(self, key: Any, start: int, length: int | None) -> list[Any]:
        """Match spec giving bytes ``[start, start + length)`` of the data under ``key``,
        clipped to its end (``length=None``: to the end)."""
        if start < 0 or (length is not None and length < 0):
            raise ValueError(f"bad byte range start={start} length={length}")
        head = (self._tab, key, _V1)
        size = (_BYTE_SIZE, _V1)
        rest = (_BINARY_PART, _V1, start, (_MINUS, size, start))
        clauses: list[Any] = []
        if length is not None:
            clauses.append(
                (head, [(_LE, start + length, size)], [(_BINARY_PART, _V1, start, length)])
            )
        clauses.append((head, [(_LE, start, size)], [rest]))
        clauses.append((head, [], [b""]))
        return clauses

    def suffix_spec(self, key: Any, length: int) -> list[Any]:
        """Match spec giving the last ``length`` bytes (all of them if shorter)."""
        if length < 0:
            raise ValueError(f"bad suffix length {length}")
        head = (self._tab, key, _V1)
        size = (_BYTE_SIZE, _V1)
        tail = (_BINARY_PART, _V1, (_MINUS, size, length), length)
        return [(head, [(_LE, length, size)], [tail]), (head, [], [_V1])]

    async def select(
        self, spec: list[Any], what: str = "select", *, one_key: bool = False
    ) -> list[Any]:
        """``mnesia:dirty_select`` on the table: no lock, no transaction (on a fragmented
        table, see :meth:`_select`); ``one_key``: ``spec`` matches one key's record."""
        return await self._select(spec, what, copy=False, one_key=one_key)

    async def _select(
        self, spec: list[Any], what: str, *, copy: bool = True, one_key: bool = False
    ) -> list[Any]:
        """A dirty select; on a fragmented table, not always dirty. There every fragment is
        visited, one after the other, by the coordinator, each where its node reads it, and
        a dirty read there may come while a split is being applied on that node and not yet
        on another (a record moving seen twice, or in neither place). So a listing runs in
        a transaction (read locks on the fragments: it waits for a split in progress), and
        a select of ``one_key`` that found nothing is made again in one."""
        if await self.fragmented():
            args = [self._tab, spec]
            if one_key:
                selected = await self._activity(
                    ASYNC_DIRTY, FRAG_SELECT, args, what, copy=copy, reading=True
                )
                if selected:
                    return list(selected)
            locked = await self._activity(
                SYNC_TRANSACTION, FRAG_SELECT, args, what, copy=copy, reading=True
            )
            return list(locked)
        found: list[Any] = await self._rpc(
            "mnesia", "dirty_select", [self._tab, spec], what, copy=copy, reading=True
        )
        return found

    # -- listing --------------------------------------------------------------------------
    async def keys_under(self, prefix: Any) -> list[Any]:
        """Second elements of all keys ``{prefix, X}``: one array's keys, without its data."""
        spec: list[Any] = [((self._tab, (prefix, _V1), _ANY), [], [_V1])]
        return await self._select(spec, "list")

    async def sizes_under(self, prefix: Any) -> list[tuple[Any, int]]:
        """``(X, byte_size)`` for all keys ``{prefix, X}``, computed on the server."""
        body = ((_V1, (_BYTE_SIZE, _V2)),)  # {{A, B}} builds a tuple in a match spec body
        spec: list[Any] = [((self._tab, (prefix, _V1), _V2), [], [body])]
        return [tuple(x) for x in await self._select(spec, "sizes")]

    async def delete_under(self, prefix: Any) -> int:
        """Delete every ``{prefix, X}`` in one transaction; how many there were."""
        keys = await self.keys_under(prefix)
        if keys:
            await self.batch([Delete((prefix, x)) for x in keys])
        return len(keys)


# Guarded writes on several tables in one transaction (the checks and writes of
# _GUARDED_WRITES_BODY, for each {Tab, G, Ops} of Parts): a stale guard anywhere aborts the
# whole with {conflict, [{Tab, Key}]}, so all the parts are written or none.
_GUARDED_ACROSS_BODY = """
fun() ->
    Stale = [{Tab, K} || {Tab, G, _} <- Parts, {K, V, L} <- G,
                         [erlang:md5(D) || {_, _, D} <- mnesia:read(Tab, K, L)] =/= V],
    case Stale of
        [] -> [case O of {K, D} -> mnesia:write({Tab, K, D});
                         [K] -> mnesia:read(Tab, K, read) =:= [] orelse mnesia:delete({Tab, K})
               end || {Tab, _, Ops} <- Parts, O <- Ops],
              ok;
        S -> mnesia:abort({conflict, S})
    end
end
"""
_GUARDED_ACROSS = f"mnesia:sync_transaction({_GUARDED_ACROSS_BODY})."
_GUARDED_ACROSS_DURABLE = _durable(
    f"mnesia:sync_transaction({_GUARDED_ACROSS_BODY})", "[T || {T, _, _} <- Parts]"
)


def _guarded_terms(guards: Sequence[Guard], ops: Sequence[Op]) -> tuple[list[Any], list[Any]]:
    """``guards`` and ``ops`` in the small form of :data:`_GUARDED_WRITES_BODY`."""
    small: list[Any] = []
    for op in ops:
        if isinstance(op, Write):
            small.append((op.key, op.data))
            small += [[k] for k in op.replaces]
        elif isinstance(op, Delete):
            small.append([op.key])
        else:
            raise TypeError(f"guarded writes take Write and Delete operations, not {op!r}")
    terms = [
        (g.key, [] if g.md5 is None else [g.md5], Atom("write" if g.write else "read"))
        for g in guards
    ]
    return terms, small


async def guarded_across(
    via: MnesiaClient,
    parts: Sequence[tuple[MnesiaClient, Sequence[Guard], Sequence[Op]]],
) -> None:
    """The guarded writes of several clients' tables (same node, any tables) in **one**
    transaction run through ``via`` (its failover): if a guard of any part is stale, raise
    :class:`Conflict` with ``(table, key)`` pairs and write nothing; else apply every part's
    ops. Durable if any of the clients is."""
    if not parts:
        return
    terms: list[Any] = []
    for client, guards, ops in parts:
        if client.node is not via.node:
            raise ValueError(
                f"{client!r} talks through another node than {via!r}: one transaction "
                "spans one cluster, reached through one node"
            )
        g, o = _guarded_terms(guards, ops)
        terms.append((client.table_atom, g, o))
    durable = any(client.durable for client, _, _ in parts)
    what = f"transaction over {len(parts)} part(s)"
    bindings = {"Parts": terms, "Timeout": via._sync_ms}
    text = _GUARDED_ACROSS_DURABLE if durable else _GUARDED_ACROSS
    # one table fragmented is enough: mnesia_frag passes the others through as they are
    frag = any([await client.fragmented() for client, _, _ in parts])
    result = await via._eval(text, bindings, what, durable=durable, frag=frag)
    match result:
        case (atoms.ABORTED, (atoms.CONFLICT, stale)):
            raise Conflict([(str(t), k) for t, k in stale])
    via._unwrap(result, what)


async def read_across(
    via: MnesiaClient, oids: Sequence[tuple[str, Any]], *, fragmented: bool = False
) -> list[Any | None]:
    """The data under each ``(table, key)`` (``None`` where missing), read in **one**
    transaction through ``via``: a consistent view across tables (through ``mnesia_frag``
    if one of them is ``fragmented``)."""
    if not oids:
        return []
    terms = [(Atom(table), key) for table, key in oids]
    what = f"read of {len(oids)}"
    if fragmented:  # through mnesia_frag, which passes unfragmented tables through
        found = await via._activity(
            SYNC_TRANSACTION, _MAP, [_READ, terms], what, copy=False, reading=True
        )
    else:
        found = await via._rpc(
            "mnesia",
            "sync_transaction",
            [_MAP, [_READ, terms]],
            what,
            unwrap=True,
            copy=False,
            reading=True,
        )
    return [records[0][2] if records else None for records in list(found)]
