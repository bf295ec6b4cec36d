"""Live arrays: how fast an Erlang write reaches Python as a watch event, and how many events
per second a watch carries before it has to signal a resync.

    python -m benchmarks.bench_watch              # 300 paced writes, 5000-write bursts, 5 reps
    python -m benchmarks.bench_watch --quick      # 60 paced writes, 1000-write bursts, 1 rep

On a two-node ``LocalCluster`` (``disc_copies`` on both), an Erlang process on node 1 writes
ExZarr chunk records of one array with plain ``mnesia:transaction`` + ``mnesia:write`` (an
``erl_eval`` expression parsed here, run through ``rpc``), while this process watches it.

- **Latency**: writes paced 5 ms apart; for each, the system clock (``os:system_time``)
  just before its transaction, against ``time.time_ns()`` when the event comes out of the
  watch's iterator (one machine, one clock). The forwarder runs on the writing node, or on
  the other replica; the two are interleaved per rep.
- **Throughput**: writes back to back, as fast as one Erlang process makes them (in
  transactions; and as ``mnesia:dirty_write``, faster than a watch can follow); the
  consumer only counts. For each window (messages the forwarder sends ahead of our acks),
  the write rate, the events delivered per second, how many came before the first resync,
  and how many resyncs there were. The cases are interleaved per rep.

No assertions on timings; exits 0. Needs Erlang/OTP (``erl``) on ``PATH``.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from dataclasses import dataclass

import numpy as np

import pyrlang_zarr as pz
from benchmarks import harness
from pyrlang_zarr.mnesia.expr import tree
from pyrlang_zarr.term import Atom
from pyrlang_zarr.testing.cluster import LocalCluster
from pyrlang_zarr.watch import DEFAULT_BACKLOG

# (writer, window): transactions as applications write; dirty writes, faster than a watch
CASES = (("tx", 256), ("dirty", 64), ("dirty", 256), ("dirty", 1024))

WRITER = """
begin
    Write = fun Write(I, Acc) when I >= Count -> lists:reverse(Acc);
                Write(I, Acc) ->
                    timer:sleep(Pause),
                    T = os:system_time(nanosecond),
                    Record = {zarr_storage, {Id, {chunk, {I}}}, <<1>>},
                    ok = case Dirty of
                        true -> mnesia:dirty_write(Record);
                        false -> {atomic, ok} = mnesia:transaction(fun() ->
                                     mnesia:write(Record)
                                 end), ok
                    end,
                    Write(I + 1, [T | Acc])
            end,
    Write(0, [])
end.
"""


@dataclass(frozen=True)
class Params:
    reps: int
    paced: int  # writes 5 ms apart, per latency sample set
    burst: int  # writes back to back, per throughput run
    backlog: int  # the forwarder's mailbox limit (the watch's backlog=)


FULL = Params(reps=5, paced=300, burst=5000, backlog=DEFAULT_BACKLOG)
QUICK = Params(reps=1, paced=60, burst=1000, backlog=DEFAULT_BACKLOG)


async def write_from_erlang(
    arr: pz.MnesiaArray, peer: str, count: int, pause: int, dirty: bool = False
) -> tuple[list[int], float]:
    """``count`` writes by an Erlang process on ``peer``: their start times (ns) and the
    seconds they took."""
    client = await arr.store.client()
    bindings = {"Id": arr.array_id.encode(), "Count": count, "Pause": pause, "Dirty": dirty}
    binds = sorted((Atom(k), v) for k, v in bindings.items())
    t0 = time.perf_counter()
    stamps = await client.node.rpc(
        peer,
        "erl_eval",
        "expr",
        [tree(WRITER), binds, Atom("none"), Atom("none"), Atom("value")],
        timeout=600,
    )
    return list(stamps), time.perf_counter() - t0


async def latency(arr: pz.MnesiaArray, writer: str, watcher: str, count: int) -> list[float]:
    """Milliseconds from each Erlang write's start to its event in Python."""
    client = await arr.store.client()
    client.coordinator = watcher  # the watch subscribes on its client's coordinator
    seen: dict[int, int] = {}
    async with arr.watch() as w:
        assert w.node == watcher, (w.node, watcher)

        async def consume() -> None:
            while len(seen) < count:
                event = await w.next(timeout=60)
                if event.chunk is not None:
                    seen.setdefault(event.chunk[0], time.time_ns())

        consumer = asyncio.create_task(consume())
        stamps, _ = await write_from_erlang(arr, writer, count, 5)
        await consumer
    return [(seen[i] - t) / 1e6 for i, t in enumerate(stamps)]


async def throughput(
    arr: pz.MnesiaArray, writer: str, count: int, window: int, dirty: bool, backlog: int
) -> dict[str, float]:
    client = await arr.store.client()
    client.coordinator = writer
    events = resyncs = 0
    before_resync: int | None = None
    first = last = 0.0
    async with arr.watch(window=window, backlog=backlog) as w:

        async def consume() -> None:
            nonlocal events, resyncs, before_resync, first, last
            while True:
                try:
                    event = await w.next(timeout=2)
                except TimeoutError:
                    return
                now = time.perf_counter()
                first = first or now
                last = now
                if event.kind == "resync":
                    resyncs += 1
                    before_resync = events if before_resync is None else before_resync
                else:
                    events += 1

        consumer = asyncio.create_task(consume())
        _, seconds = await write_from_erlang(arr, writer, count, 0, dirty)
        await consumer
    return {
        "write_rate": count / seconds,
        "event_rate": events / max(last - first, 1e-9),
        "delivered": events,
        "before_resync": float(events if before_resync is None else before_resync),
        "resyncs": resyncs,
    }


async def amain(settings: harness.Settings[Params]) -> int:
    p = settings.params
    load_before = harness.load_average()
    with LocalCluster(n=2) as c:
        arr = await pz.create(
            f"bench-watch-{uuid.uuid4().hex[:6]}",
            shape=(max(p.paced, p.burst),),
            chunks=(1,),
            dtype="uint8",
            node=c.nodes[0],
            cookie=c.cookie,
            nodes=c.nodes,
        )
        client = await arr.store.client()
        erlang = await harness.erlang_release(client.node, c.nodes[0])
        lat: harness.Reps[str] = harness.Reps()
        samples: dict[str, list[float]] = {"same": [], "other": []}
        tput: harness.Reps[tuple[str, int, str]] = harness.Reps()
        for rep in range(p.reps):
            for side in harness.alternate(rep, "same", "other"):
                watcher = c.nodes[0] if side == "same" else c.nodes[1]
                ms = await latency(arr, c.nodes[0], watcher, p.paced)
                samples[side] += ms
                lat.add(side + " p50", statistics.median(ms))
                lat.add(side + " p99", float(np.percentile(ms, 99)))
            for kind, window in harness.alternate(rep, *CASES):
                result = await throughput(
                    arr, c.nodes[0], p.burst, window, kind == "dirty", p.backlog
                )
                for k, v in result.items():
                    tput.add((kind, window, k), v)
    print(harness.environment(erlang, load_before))
    print()
    print(
        f"Latency, Erlang write start -> Python event ({p.paced} writes 5 ms apart per rep; "
        f"median of the reps' p50/p99, and their range; {p.reps} reps):"
    )
    print()
    rows = []
    for side, label in (("same", "on the writing node"), ("other", "on the other replica")):
        rows.append(
            [
                f"forwarder {label}",
                f"{lat.median(side + ' p50'):.2f} ({lat.spread(side + ' p50', '.2f')})",
                f"{lat.median(side + ' p99'):.2f} ({lat.spread(side + ' p99', '.2f')})",
                f"{max(samples[side]):.2f}",
            ]
        )
    print(harness.render(["watch", "p50 ms", "p99 ms", "max ms"], rows))
    print()
    print(
        f"Throughput, {p.burst} writes back to back by one Erlang process, backlog "
        f"{p.backlog} (medians of "
        f"{p.reps} reps, range in brackets):"
    )
    print()
    rows = []
    for kind, window in CASES:

        def cell(key: str, spec: str = ".0f", w: int = window, k: str = kind) -> str:
            return f"{tput.median((k, w, key)):{spec}} ({tput.spread((k, w, key), spec)})"

        rows.append(
            [
                {"tx": "mnesia:transaction", "dirty": "mnesia:dirty_write"}[kind],
                str(window),
                cell("write_rate"),
                cell("event_rate"),
                cell("before_resync"),
                cell("resyncs"),
            ]
        )
    header = [
        "writer",
        "window",
        "writes/s",
        "events/s to Python",
        "events before 1st resync",
        "resyncs",
    ]
    print(harness.render(header, rows, {0}))
    return 0


if __name__ == "__main__":
    options = {"backlog": "the forwarder's mailbox limit", "burst": "writes per burst"}
    sys.exit(harness.main(__doc__, FULL, QUICK, amain, options=options))
