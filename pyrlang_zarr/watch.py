"""Changes pushed from the cluster: a forwarder on a replica turns Mnesia's table events
for one array into messages to a process of ours.

Nothing is installed: the forwarder is an ``erl_eval`` expression (its tree built here, see
:mod:`pyrlang_zarr.mnesia.expr`) spawned with ``erlang:spawn/3`` on a node holding the table.
It calls ``mnesia:subscribe({table, Tab, simple})``, so it sees every committed write and
delete whoever made it (this library, ExZarr, a plain ``mnesia:write``), keeps only the
records of one array (and of one region of it; a match spec built here, run natively by
``ets:match_spec_run/2``) and sends ``{Kind, X}`` for the key ``{ArrayId, X}``: keys only,
never chunk bytes.

Bounded on both sides, never silent:

- The forwarder sends at most ``window`` messages the watcher has not acknowledged (we ack
  in batches as events are consumed). When it must drop an event it sends one ``resync``
  (read the region again) instead, as message ``window + 1``; if it drops more while that
  one is unacknowledged, it owes another and sends it as soon as there is room. A resync
  is always sent after the events it covers were committed, so reading the region after
  seeing it misses nothing.
- If its own mailbox grows past ``backlog`` (it cannot keep up with the table), it empties
  it and counts that as a drop.
- On a fragmented table (``mnesia_frag``) it subscribes to every fragment: where a fragment
  has no copy on its node (Mnesia's table events are local), a relay spawned on a node
  holding it subscribes there and passes our array's events on (a lost relay is replaced
  on another holder, with a ``resync``). It also follows the schema (and looks again after
  emptying its mailbox): a fragment added while it runs is subscribed to, and a
  ``resync`` sent (records moved into the new fragment may show as deletes from their old
  one). A fragment it cannot watch within seconds (no copy running) ends it: the watch
  then moves, as below, and fails with :class:`WatchError` if no replica can watch all.
- It monitors our process and ``mnesia_subscr``: closing the watch, losing the connection
  to us, or Mnesia stopping there ends it (Mnesia drops the subscription of a process that
  exits).
- We monitor it: if it or its node dies, or is cut off, the watch starts a forwarder on
  another replica and yields a resync, since events may have been missed in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyrlang_zarr.errors import NodeDown, NodeUnreachable, PyrlangZarrError, RpcError, RpcTimeout
from pyrlang_zarr.keys import CHUNK, METADATA, Root
from pyrlang_zarr.mnesia.expr import tree
from pyrlang_zarr.term import Atom, Pid, atoms

if TYPE_CHECKING:
    from pyrlang_zarr.array import MnesiaArray
    from pyrlang_zarr.erldist.processes import Process
    from pyrlang_zarr.store import MnesiaStore

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 256
DEFAULT_BACKLOG = 10_000
#: How long a watch whose forwarder was lost keeps trying the replicas before it fails.
FAILOVER_TIMEOUT = 60.0
#: After this many seconds without a message, a watch asks the forwarder's node whether the
#: forwarder still runs (and moves if no answer comes in as long).
PROBE_INTERVAL = 5.0

_PZ_WATCH = Atom("pz_watch")
_READY = Atom("ready")
_ERROR = Atom("error")
_RESYNC = Atom("resync")
_WRITE = Atom("write")
_DELETE = Atom("delete")
_ACK = Atom("ack")
_STOP = Atom("stop")
_ANY = Atom("any")

FORWARDER = """
begin
    Self = self(),
    WRef = erlang:monitor(process, Watcher),
    MRef = erlang:monitor(process, mnesia_subscr),
    Send = fun(Msg) -> Watcher ! {pz_watch, Self, Msg} end,
    Filter = ets:match_spec_compile(Spec),
    Drain = fun Drain(N) ->
        receive {mnesia_table_event, _} -> Drain(N + 1) after 0 -> N end
    end,
    Drop = fun(Out, Owe) ->
        case Out =< Window of
            true -> Send(resync), {Out + 1, false};
            false -> {Out, true}
        end
    end,
    Push = fun(Msg, Out, Owe) ->
        case Out < Window andalso Owe =:= false of
            true -> Send(Msg), {Out + 1, false};
            false -> Drop(Out, Owe)
        end
    end,
    Frags = fun() ->
        mnesia:activity(async_dirty, fun mnesia:table_info/2, [Tab, frag_names], mnesia_frag)
    end,
    Relay = fun(T) ->
        fun() ->
            Up = erlang:monitor(process, Self),
            Mine = ets:match_spec_compile(Spec),
            Sub = fun Sub(Tries) ->
                case mnesia:subscribe({table, T, simple}) of
                    {ok, _} -> Self ! {pz_relay_up, self()};
                    _ when Tries > 0 -> timer:sleep(100), Sub(Tries - 1);
                    Error -> exit(Error)
                end
            end,
            Sub(50),
            Pass = fun Pass() ->
                receive
                    {mnesia_table_event, E} ->
                        case ets:match_spec_run([E], Mine) of
                            [] -> ok;
                            _ -> Self ! {mnesia_table_event, E}
                        end,
                        Pass();
                    {_, Up, _, _, _} -> done
                end
            end,
            Pass()
        end
    end,
    Place = fun(T) ->
        Here = lists:member(T, mnesia:system_info(tables))
            andalso lists:member(node(), mnesia:table_info(T, where_to_write)),
        case Here of
            true -> mnesia:subscribe({table, T, simple});
            false ->
                case mnesia:table_info(T, where_to_read) of
                    nowhere -> {error, {no_replica_running, T}};
                    Owner ->
                        R = erlang:spawn(Owner, Relay(T)),
                        erlang:monitor(process, R),
                        put({pz_relay, R}, T),
                        receive
                            {pz_relay_up, R} -> {ok, R};
                            {_, _, process, R, Why} ->
                                erase({pz_relay, R}),
                                {error, {relay_down, T, Owner, Why}}
                        after 10000 ->
                            erase({pz_relay, R}),
                            exit(R, kill),
                            {error, {relay_not_subscribed, T, Owner}}
                        end
                end
        end
    end,
    Settle = fun Settle(T, Tries) ->
        case Place(T) of
            {ok, _} -> ok;
            _ when Tries > 0 -> timer:sleep(100), Settle(T, Tries - 1);
            Error -> Error
        end
    end,
    Grow = fun(Tries) ->
        Known = get(pz_known),
        New = lists:subtract(Frags(), Known),
        put(pz_known, Known ++ New),
        lists:filter(fun(R) -> R =/= ok end, lists:map(fun(T) -> Settle(T, Tries) end, New))
    end,
    Catchup = fun(Out, Owe) ->
        Drain(0),
        case Grow(50) of
            [] -> Drop(Out, Owe);
            Errs -> exit({fragments_not_watched, Errs})
        end
    end,
    Unsubscribe = fun() ->
        lists:foreach(
            fun(T) -> mnesia:unsubscribe({table, T, simple}) end, [schema | get(pz_known)]
        )
    end,
    Loop = fun Loop(Out, Owe) ->
        receive
            {mnesia_table_event, {write, {schema, _, _}, _}} ->
                Before = length(get(pz_known)),
                case length(Frags()) of
                    Before -> Loop(Out, Owe);
                    _ -> {Out4, Owe4} = Catchup(Out, Owe), Loop(Out4, Owe4)
                end;
            {mnesia_table_event, {_, {schema, _, _}, _}} ->
                Loop(Out, Owe);
            {mnesia_table_event, Event} ->
                {message_queue_len, Queued} = erlang:process_info(Self, message_queue_len),
                {Out2, Owe2} = case Queued > Backlog of
                    true -> Catchup(Out, Owe);
                    false ->
                        case ets:match_spec_run([Event], Filter) of
                            [Msg] -> Push(Msg, Out, Owe);
                            [] -> {Out, Owe}
                        end
                end,
                Loop(Out2, Owe2);
            {ack, Count} ->
                Left = Out - Count,
                case Owe of
                    true -> {Out3, Owe3} = Drop(Left, Owe), Loop(Out3, Owe3);
                    false -> Loop(Left, false)
                end;
            {_, WRef, _, _, _} -> Unsubscribe(), done;
            stop -> Unsubscribe(), done;
            {_, MRef, _, _, Why} -> exit({mnesia_subscr_down, Why});
            {_, _, process, Lost, _} ->
                case erase({pz_relay, Lost}) of
                    undefined -> Loop(Out, Owe);
                    T ->
                        case Settle(T, 50) of
                            ok -> {Out5, Owe5} = Drop(Out, Owe), Loop(Out5, Owe5);
                            Err -> exit({fragment_not_watched, Err})
                        end
                end
        end
    end,
    mnesia:subscribe({table, schema, simple}),
    put(pz_known, []),
    case Grow(20) of
        [] -> Send({ready, node()}), Loop(0, false);
        Errors -> Unsubscribe(), Send({error, Errors}), Errors
    end
end.
"""


def _guards(region: Any) -> list[Any]:
    """Match spec guards (all must hold; one that fails, as ``element/2`` out of range does,
    is false): ``$1`` is a chunk index inside ``region`` (``any``: any tuple)."""
    idx = Atom("$1")
    if region == _ANY:
        return [(Atom("is_tuple"), idx)]
    rank, lo, hi = region
    # size/1, not tuple_size/1: match specs of OTP 25 do not know the latter
    guards: list[Any] = [(Atom("is_tuple"), idx), (Atom("=="), (Atom("size"), idx), rank)]
    for d, (a, b) in enumerate(zip(lo, hi, strict=True), start=1):
        i = (Atom("element"), d, idx)
        guards += [(Atom("is_integer"), i), (Atom(">="), i, a), (Atom("<"), i, b)]
    return guards


def filter_spec(array_key: Any, region: Any, *, other: bool) -> list[Any]:
    """The forwarder's filter, a match spec run on each table event (natively, by
    ``ets:match_spec_run/2``): the chunk records of ``array_key`` inside ``region`` (in
    ExZarr's ``{chunk, Index}`` form, or the earlier bare ``Index``), its metadata record,
    and with ``other`` its other records; each gives ``{write | delete, X}``."""
    any_ = Atom("_")
    idx = Atom("$1")
    guards = _guards(region)
    spec: list[Any] = []
    for tag, out in ((_WRITE, _WRITE), (Atom("delete_object"), _DELETE), (_DELETE, _DELETE)):

        def head(x: Any, tag: Atom = tag) -> Any:
            if tag == _DELETE:  # {delete, {Tab, Key}, Tid}
                return (tag, (any_, (array_key, x)), any_)
            return (tag, (any_, (array_key, x), any_), any_)  # {write, Record, Tid}

        spec.append((head((CHUNK, idx)), guards, [((out, ((CHUNK, idx),)),)]))
        spec.append((head(idx), guards, [((out, idx),)]))
        spec.append((head(METADATA), [], [((out, METADATA),)]))
        if other:
            spec.append((head(idx), [], [((out, idx),)]))
    return spec


class WatchError(PyrlangZarrError):
    """A watch could not subscribe on any replica of the table (or lost them all)."""


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One change: ``kind`` is ``"write"`` or ``"delete"`` of a chunk (``chunk`` its index,
    ``region`` the ``(start, stop)`` of the array it covers), ``"metadata"`` (the array's
    metadata record changed: the regions of later events follow its new shape and chunk
    grid; a ``MnesiaArray`` you hold keeps the old ones until opened again), ``"key"``
    (another record of the array, for store watches: ``key`` is the zarr key and
    ``deleted`` says how), or ``"resync"``: changes may have been missed, read ``region``
    again. ``node`` is where the subscription runs."""

    kind: str
    chunk: tuple[int, ...] | None = None
    region: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    key: str | None = None
    deleted: bool = False
    node: str | None = None


def shape_and_grid(root: Root) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The array's shape and its chunk grid (shards, when sharded) from its metadata
    document, or ``None`` if it holds none that says so."""
    meta = root.metadata()
    shape, grid = meta.get("shape"), meta.get("shards") or meta.get("chunks")
    if shape is None or grid is None or len(shape) != len(grid) or 0 in grid:
        return None
    return shape, grid


def _int_tuple(x: Any) -> tuple[int, ...] | None:
    if type(x) is tuple and all(type(i) is int for i in x):
        return x
    return None


class Watch:
    """An async iterator of :class:`ChangeEvent`; also an async context manager that
    closes it. Made by :meth:`MnesiaArray.watch` and :meth:`MnesiaStore.watch`."""

    def __init__(
        self,
        store: MnesiaStore,
        *,
        region: tuple[tuple[int, ...], tuple[int, ...]] | None,
        grid: tuple[int, ...] | None,
        shape: tuple[int, ...] | None,
        keys: bool = False,
        window: int = DEFAULT_WINDOW,
        backlog: int = DEFAULT_BACKLOG,
    ) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 2:
            raise ValueError(f"window must be an int of at least 2, got {window!r}")
        if isinstance(backlog, bool) or not isinstance(backlog, int) or backlog < 1:
            raise ValueError(f"backlog must be a positive int, got {backlog!r}")
        self._client: Any = None  # the store's, on start
        self._id = store.mnesia_key(None)[0]
        self._region = region
        self._grid = grid
        self._shape = shape
        self._source = store
        self._store = store if keys else None
        self.window = window
        self.backlog = backlog
        self._ack_every = max(1, window // 2)
        self._proc: Process | None = None
        self._forwarder: Pid | None = None
        self._monitor: Any = None
        self._unacked = 0
        self._closed = False
        self._pending: list[ChangeEvent] = []
        self._handling: asyncio.Future[None] | None = None
        self._layout: Any = None
        self.node: str | None = None

    def __repr__(self) -> str:
        return f"<Watch {self._id!r} region={self._region} via {self.node}>"

    @property
    def forwarder(self) -> Pid | None:
        """The forwarder's pid on the cluster (``None`` before :meth:`start`, which the
        first ``next`` or ``async with`` calls, and after :meth:`close`)."""
        return self._forwarder

    def _bindings(self, pid: Pid) -> list[tuple[Atom, Any]]:
        if self._region is None or self._grid is None:
            region: Any = _ANY
        else:
            start, stop = self._region
            lo = [a // c for a, c in zip(start, self._grid, strict=True)]
            hi = [-(-b // c) for b, c in zip(stop, self._grid, strict=True)]
            region = (len(self._grid), lo, hi)
        binds = {
            "Watcher": pid,
            "Tab": self._client.table_atom,
            "Spec": filter_spec(self._id, region, other=self._store is not None),
            "Window": self.window,
            "Backlog": self.backlog,
        }
        return sorted((Atom(k), v) for k, v in binds.items())

    async def start(self) -> Watch:
        """Subscribe (on the client's coordinator, else another replica)."""
        if self._proc is None:
            self._client = await self._source.client()
            self._proc = self._client.node.process()
            try:
                if self._store is not None:
                    self._layout = await self._store.root()
                await self._subscribe(exclude=None, deadline=None)
            except BaseException:  # not started: the next call tries again from scratch
                proc, self._proc = self._proc, None
                await proc.close()
                raise
        return self

    async def _subscribe(self, *, exclude: str | None, deadline: float | None) -> None:
        """Start a forwarder on the first replica that takes it."""
        assert self._proc is not None
        client = self._client
        loop = asyncio.get_running_loop()
        errors: list[str] = []
        while True:
            peers = [client.coordinator, *client.replicas]
            peers = list(dict.fromkeys(p for p in peers if p != exclude)) or [client.coordinator]
            if exclude is not None:
                peers.append(exclude)  # last: it may have come back
            for peer in peers:
                try:
                    await self._spawn(peer)
                    return
                except (NodeDown, NodeUnreachable, RpcError, RpcTimeout, WatchError) as exc:
                    errors.append(f"{peer}: {exc}")
                    log.debug("watch could not subscribe on %s: %s", peer, exc)
            if deadline is None or loop.time() > deadline:
                raise WatchError(
                    f"could not watch {self._id!r} in table {client.table!r} on any replica: "
                    + "; ".join(errors[-len(peers) :])
                )
            await asyncio.sleep(0.5)

    async def _spawn(self, peer: str) -> None:
        assert self._proc is not None
        proc = self._proc
        args = [Atom("erl_eval"), Atom("expr"), [tree(FORWARDER), self._bindings(proc.pid)]]
        pid = await self._client.node.rpc(peer, "erlang", "spawn", args, timeout=10)
        if not isinstance(pid, Pid):
            raise WatchError(f"spawn of the forwarder returned {pid!r}")
        ref = await proc.monitor(pid)
        while True:
            try:
                msg = await proc.receive(timeout=10)
            except TimeoutError:
                with contextlib.suppress(NodeDown, NodeUnreachable):
                    await self._client.node.send(pid, _STOP)
                    await proc.demonitor(ref)
                raise WatchError(f"the forwarder on {peer} did not subscribe in 10 s") from None
            match msg:
                case (tag, sender, (status, value)) if tag == _PZ_WATCH and sender == pid:
                    if status == _READY:
                        self._forwarder, self._monitor = pid, ref
                        self._unacked = 0
                        self.node = str(value)
                        return
                    await proc.demonitor(ref)
                    raise WatchError(f"mnesia:subscribe on {peer} answered {value!r}")
                case (tag, r, _, _, reason) if tag == atoms.DOWN and r == ref:
                    raise WatchError(f"the forwarder on {peer} exited: {reason!r}")
                case _:
                    log.debug("watch dropped a stale message %r", msg)

    # -- iteration ------------------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[ChangeEvent]:
        return self

    async def __anext__(self) -> ChangeEvent:
        if self._closed:
            raise StopAsyncIteration
        await self.start()
        while not self._pending:
            await self._next_message()
            if self._closed:
                raise StopAsyncIteration
        return self._pending.pop(0)

    async def next(self, timeout: float | None = None) -> ChangeEvent:
        """The next event; ``TimeoutError`` if none comes within ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            return await self.__anext__()

    async def _next_message(self) -> None:
        """Take one message and act on it. What is taken is handled to the end even if
        the caller gives up meanwhile (``next(timeout=...)``): handling runs as a task of
        its own, which the next call waits for before taking another (so nothing taken is
        lost, and events keep their order)."""
        if self._handling is None:
            msg = await self._take()
            if msg is None:  # the forwarder's node went quiet and did not answer
                msg = (atoms.DOWN, self._monitor, None, None, Atom("no_answer"))
            self._handling = asyncio.ensure_future(self._handle(msg))
        task = self._handling
        try:
            await asyncio.shield(task)
        finally:
            if task.done():
                self._handling = None

    async def _take(self) -> Any:
        proc = self._proc
        assert proc is not None
        try:
            return await proc.receive(timeout=0)
        except TimeoutError:  # about to wait: first let the forwarder send again
            await self._ack()
        while True:
            try:
                return await proc.receive(timeout=PROBE_INTERVAL)
            except TimeoutError:  # quiet: is the forwarder's node still there?
                if not await self._forwarder_alive():
                    return None

    async def _handle(self, msg: Any) -> None:
        match msg:
            case (tag, sender, body) if tag == _PZ_WATCH and sender == self._forwarder:
                self._unacked += 1
                if self._unacked >= self._ack_every:
                    await self._ack()
                event = await self._event(body)
                if event is not None:
                    self._pending.append(event)
            case (tag, ref, _, _, reason) if tag == atoms.DOWN and ref == self._monitor:
                await self._failover(self.node, reason)
            case _:
                log.debug("watch dropped a stale message %r", msg)

    async def _forwarder_alive(self) -> bool:
        """A silent node is not a dead one to the distribution for a whole tick time: ask."""
        fwd = self._forwarder
        if fwd is None:
            return True
        try:
            answer = await self._client.node.rpc(
                str(fwd.node), "erlang", "is_process_alive", [fwd], timeout=PROBE_INTERVAL
            )
        except (NodeDown, NodeUnreachable, RpcError, RpcTimeout):
            return False
        return answer is True

    async def _ack(self) -> None:
        if self._unacked and self._forwarder is not None:
            count, self._unacked = self._unacked, 0
            try:
                await self._client.node.send(self._forwarder, (_ACK, count))
            except (NodeDown, NodeUnreachable):
                pass  # the DOWN that follows moves the watch

    async def _failover(self, lost: str | None, reason: Any) -> None:
        log.warning(
            "watch of %r lost its forwarder on %s (%r); subscribing on another replica",
            self._id,
            lost,
            reason,
        )
        old, ref = self._forwarder, self._monitor
        self._forwarder = self._monitor = None
        if old is not None and self._proc is not None:  # if it still runs: stop, unheard
            with contextlib.suppress(Exception):
                await self._proc.demonitor(ref)
                await asyncio.wait_for(self._client.node.send(old, _STOP), PROBE_INTERVAL)
        deadline = asyncio.get_running_loop().time() + FAILOVER_TIMEOUT
        await self._subscribe(exclude=lost, deadline=deadline)
        self._pending.append(self._resync())

    def _resync(self) -> ChangeEvent:
        region = self._region
        if region is None and self._shape is not None:
            region = ((0,) * len(self._shape), self._shape)
        return ChangeEvent("resync", region=region, node=self.node)

    async def _event(self, body: Any) -> ChangeEvent | None:
        if body == _RESYNC:
            return self._resync()
        if not (type(body) is tuple and len(body) == 2):
            return None
        kind, x = body
        deleted = kind == _DELETE
        if x == METADATA:
            if self._store is not None:
                self._layout = await self._store.root()
                name = self._layout.m_name or "zarr.json"
                return ChangeEvent("key", key=name, deleted=deleted, node=self.node)
            if not deleted:  # resized, say: later events' regions follow the new shape
                await self._follow_metadata()
            return ChangeEvent("metadata", deleted=deleted, node=self.node)
        index = None
        if type(x) is tuple and len(x) == 2 and x[0] == CHUNK:
            index = _int_tuple(x[1])
        elif type(x) is tuple:
            index = _int_tuple(x)
        if self._store is not None:
            name = self._layout.name(x) if self._layout is not None else None
            if name is None:
                return None
            return ChangeEvent("key", chunk=index, key=name, deleted=deleted, node=self.node)
        if index is None or self._grid is None or len(index) != len(self._grid):
            return None
        assert self._shape is not None
        start = tuple(i * c for i, c in zip(index, self._grid, strict=True))
        stop = tuple(min(a + c, n) for a, c, n in zip(start, self._grid, self._shape, strict=True))
        return ChangeEvent(
            "delete" if deleted else "write",
            chunk=index,
            region=(start, stop),
            node=self.node,
        )

    async def _follow_metadata(self) -> None:
        try:
            found = shape_and_grid(await self._source.root())
        except PyrlangZarrError as exc:  # the event still goes out; a resync follows a loss
            log.warning("watch of %r: the changed metadata could not be read: %s", self._id, exc)
            return
        if found is not None:
            self._shape, self._grid = found

    # -- closing --------------------------------------------------------------------------
    async def close(self) -> None:
        """Stop the forwarder (it unsubscribes and exits) and our process."""
        if self._closed:
            return
        self._closed = True
        task, self._handling = self._handling, None
        if task is not None:  # a message being handled (a failover, say): stop it first
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        forwarder, self._forwarder = self._forwarder, None
        if forwarder is not None:
            try:
                await self._client.node.send(forwarder, _STOP)
            except (NodeDown, NodeUnreachable):
                pass
        if self._proc is not None:
            await self._proc.close()

    async def __aenter__(self) -> Watch:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def watch_array(
    array: MnesiaArray,
    region: tuple[Sequence[int], Sequence[int]] | None = None,
    *,
    window: int = DEFAULT_WINDOW,
    backlog: int = DEFAULT_BACKLOG,
) -> Watch:
    """:meth:`MnesiaArray.watch`: events for the chunks of ``array`` that ``region``
    (``(start, stop)``, default the whole array) touches."""
    grid = tuple(array.zarr.shards or array.zarr.chunks)
    box = None
    if region is not None:
        if not (isinstance(region, tuple | list) and len(region) == 2):
            raise TypeError(f"region must be a (start, stop) pair, got {region!r}")
        box = array._region(region[0], region[1])
    return Watch(
        array.store,
        region=box,
        grid=grid,
        shape=array.shape,
        window=window,
        backlog=backlog,
    )


def watch_store(
    store: MnesiaStore,
    *,
    window: int = DEFAULT_WINDOW,
    backlog: int = DEFAULT_BACKLOG,
) -> Watch:
    """:meth:`MnesiaStore.watch`: events (``kind="key"``) for every key of the store."""
    return Watch(
        store,
        region=None,
        grid=None,
        shape=None,
        keys=True,
        window=window,
        backlog=backlog,
    )
