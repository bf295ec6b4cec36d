"""End-to-end array throughput through zarr: our array API against zarr's own stores.

    python -m benchmarks.bench_array              # 256 MiB array, 32 MiB slices, 5 reps
    python -m benchmarks.bench_array --quick      # 32 MiB array, 8 MiB slices, 1 rep
    python -m benchmarks.bench_array --mib 512 --slice-mib 64 --reps 3 --no-replicated

Writes one float64 array (1024 columns, 1 MiB chunks of (128, 1024)) in row slices and
reads it back in the same slices, through every backend below, with the same data (a smooth
field plus integer noise on a 1/256 grid, made once: zstd keeps about 30 % of it), the same
chunks and the same codecs: zarr's default for float64 in zarr v3 (``ZstdCodec(level=0)``,
i.e. zstd's default level 3) and none (``compressors=None``).

- ``pz.create`` + ``set_slice``/``get_slice``: one Mnesia transaction per slice, on a
  one-node ``LocalCluster``, ``disc_copies`` and ``ram_copies``, and (unless
  ``--no-replicated``) ``disc_copies`` replicated on a two-node cluster;
- plain zarr (``zarr.api.asynchronous``) on ``pz.MnesiaStore``, ``disc_copies``: one
  transaction per chunk, zarr's own concurrency (``async.concurrency``, 10);
- zarr's ``MemoryStore`` and ``LocalStore`` (a temporary directory).

Every slice read back is compared with what was written (``np.array_equal``). MB/s counts
uncompressed array bytes (1 MB = 10**6 bytes) over the ``set_slice``/``setitem`` and
``get_slice``/``getitem`` calls only; each rep runs every backend once, and the table shows
the median rep and the range.

Then, per codec, one 32 MiB ``set_slice`` and ``get_slice`` (``disc_copies``) run under
cProfile in every thread that works for them (``--reps`` times, averaged), and their wall
time is split into codec, transport, Mnesia/server and the rest (method: ``split_profile``).

No assertions on timings. Exits 0, or 1 if some data read back differs from what was
written. Needs Erlang/OTP (``erl``) on ``PATH``; the Erlang nodes are stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import cProfile
import pstats
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numcodecs  # type: ignore[import-untyped]
import numpy as np
import zarr
import zarr.api.asynchronous as zasync
from zarr.storage import LocalStore, MemoryStore

import pyrlang_zarr as pz
from benchmarks import harness
from pyrlang_zarr.erldist import Node
from pyrlang_zarr.erldist.node_registry import shared_node
from pyrlang_zarr.testing.cluster import LocalCluster

MB = 1_000_000
MIB = 1 << 20
COLS = 1024
CHUNK_ROWS = 128  # (128, 1024) float64 = 1 MiB per chunk
ROW_BYTES = COLS * 8
PROFILE_MIB = 32
CODECS: dict[str, Any] = {"zstd": "auto", "none": None}  # "auto": zstd level 0 for float64
DISC_TABLE = "pzb_array_disc"
RAM_TABLE = "pzb_array_ram"
STORE_TABLE = "pzb_array_store"


@dataclass(frozen=True)
class Params:
    mib: int  # array size
    slice_mib: int  # rows per set_slice/get_slice (or zarr setitem/getitem), in MiB
    reps: int  # runs of every backend, interleaved: rep 1 of each, then rep 2 ...


FULL = Params(mib=256, slice_mib=32, reps=5)
QUICK = Params(mib=32, slice_mib=8, reps=1)


# -- data and timing ---------------------------------------------------------------------


def make_data(rows: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    """A smooth field plus integer noise, on a 1/256 grid: random-ish, yet compressible."""
    rng = np.random.default_rng(20240601)
    r = np.arange(rows, dtype=np.float64)[:, None]
    c = np.arange(COLS, dtype=np.float64)[None, :]
    data = np.sin(r / 500.0) * np.cos(c / 50.0)
    data *= 100 * 256
    np.round(data, out=data)
    data += rng.integers(-128, 129, size=(rows, COLS))
    data /= 256
    return data


@dataclass
class Results:
    """MB/s per rep of every (backend, codec, "write" or "read"), and whether every read of
    a (backend, codec) returned what was written."""

    rates: harness.Reps[tuple[str, str, str]] = field(default_factory=harness.Reps)
    ok: dict[tuple[str, str], bool] = field(default_factory=dict)


Writer = Callable[[np.ndarray[Any, Any], int, int], Awaitable[None]]
Reader = Callable[[int, int], Awaitable[np.ndarray[Any, Any]]]


async def run_slices(
    data: np.ndarray[Any, Any], slice_rows: int, write: Writer, read: Reader
) -> tuple[float, float, bool]:
    """Write ``data`` slice by slice, then read it back the same way; (write s, read s, equal)."""
    bounds = [(a, min(a + slice_rows, len(data))) for a in range(0, len(data), slice_rows)]
    write_s = 0.0
    for a, b in bounds:
        t0 = time.perf_counter()
        await write(data[a:b], a, b)
        write_s += time.perf_counter() - t0
    read_s = 0.0
    ok = True
    for a, b in bounds:
        t0 = time.perf_counter()
        got = await read(a, b)
        read_s += time.perf_counter() - t0
        ok = ok and got.shape == (b - a, COLS) and bool(np.array_equal(got, data[a:b]))
        del got
    return write_s, read_s, ok


# -- backends ----------------------------------------------------------------------------

Case = Callable[[np.ndarray[Any, Any], int], Awaitable[tuple[float, float, bool]]]


async def create(
    array_id: str, shape: tuple[int, ...], codec: str, *, cookie: str, nodes: list[str], **kw: Any
) -> pz.MnesiaArray:
    """``pz.create`` of a float64 array of ``shape`` in 1 MiB chunks, through ``nodes[0]``."""
    return await pz.create(
        array_id=array_id,
        shape=shape,
        chunks=(CHUNK_ROWS, COLS),
        dtype="float64",
        node=nodes[0],
        cookie=cookie,
        nodes=nodes,
        compressors=CODECS[codec],
        overwrite=True,
        **kw,
    )


def array_api_case(
    codec: str, *, cookie: str, nodes: list[str], table: str, ram_copies: bool
) -> Case:
    """``pz.create`` + ``set_slice``/``get_slice``: one Mnesia transaction per slice."""

    async def case(data: np.ndarray[Any, Any], slice_rows: int) -> tuple[float, float, bool]:
        arr = await create(
            f"bench-{codec}",
            data.shape,
            codec,
            cookie=cookie,
            nodes=nodes,
            ram_copies=ram_copies,
            table_name=table,
        )

        async def write(block: np.ndarray[Any, Any], a: int, b: int) -> None:
            await arr.set_slice(block, start=(a, 0), stop=(b, COLS))

        async def read(a: int, b: int) -> np.ndarray[Any, Any]:
            return await arr.get_slice(start=(a, 0), stop=(b, COLS))

        try:
            return await run_slices(data, slice_rows, write, read)
        finally:
            await arr.store.clear()  # keep the Erlang node's memory and disc log small

    return case


async def zarr_slices(
    store: Any, codec: str, data: np.ndarray[Any, Any], slice_rows: int
) -> tuple[float, float, bool]:
    """Plain zarr (async API) on ``store``, the same slices."""
    arr = await zasync.create_array(
        store,
        shape=data.shape,
        chunks=(CHUNK_ROWS, COLS),
        dtype="float64",
        compressors=CODECS[codec],
        overwrite=True,
    )

    async def write(block: np.ndarray[Any, Any], a: int, b: int) -> None:
        await arr.setitem((slice(a, b), slice(None)), block)

    async def read(a: int, b: int) -> np.ndarray[Any, Any]:
        return np.asarray(await arr.getitem((slice(a, b), slice(None))))

    return await run_slices(data, slice_rows, write, read)


def mnesia_store_case(codec: str, *, node: str, cookie: str) -> Case:
    """zarr on ``pz.MnesiaStore``: a transaction per chunk, zarr's own concurrency."""

    async def case(data: np.ndarray[Any, Any], slice_rows: int) -> tuple[float, float, bool]:
        store = pz.MnesiaStore(
            f"bench-store-{codec}", node=node, cookie=cookie, nodes=[node], table_name=STORE_TABLE
        )
        try:
            return await zarr_slices(store, codec, data, slice_rows)
        finally:
            await store.clear()

    return case


def memory_case(codec: str) -> Case:
    async def case(data: np.ndarray[Any, Any], slice_rows: int) -> tuple[float, float, bool]:
        return await zarr_slices(await MemoryStore.open(), codec, data, slice_rows)

    return case


def local_case(codec: str) -> Case:
    async def case(data: np.ndarray[Any, Any], slice_rows: int) -> tuple[float, float, bool]:
        tmp = tempfile.mkdtemp(prefix="pzb-array-")
        try:
            return await zarr_slices(await LocalStore.open(tmp), codec, data, slice_rows)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    return case


def one_node_cases(cluster: LocalCluster) -> list[tuple[str, str, Case]]:
    node, cookie = cluster.nodes[0], cluster.cookie
    cases: list[tuple[str, str, Case]] = []
    for codec in CODECS:
        for label, table, ram in (
            ("array API, disc_copies", DISC_TABLE, False),
            ("array API, ram_copies", RAM_TABLE, True),
        ):
            case = array_api_case(codec, cookie=cookie, nodes=[node], table=table, ram_copies=ram)
            cases.append((label, codec, case))
        label = "zarr on MnesiaStore, disc_copies"
        cases.append((label, codec, mnesia_store_case(codec, node=node, cookie=cookie)))
    for codec in CODECS:
        cases.append(("zarr MemoryStore", codec, memory_case(codec)))
        cases.append(("zarr LocalStore (temp dir)", codec, local_case(codec)))
    return cases


def replicated_cases(cluster: LocalCluster) -> list[tuple[str, str, Case]]:
    cookie, nodes = cluster.cookie, cluster.nodes
    label = "array API, disc_copies x2 nodes"
    return [
        (
            label,
            codec,
            array_api_case(codec, cookie=cookie, nodes=nodes, table=DISC_TABLE, ram_copies=False),
        )
        for codec in CODECS
    ]


async def run_cases(
    cases: list[tuple[str, str, Case]],
    data: np.ndarray[Any, Any],
    slice_rows: int,
    reps: int,
    results: Results,
) -> None:
    """Every case once per rep, reps outermost: load that drifts hits every backend alike."""
    for rep in range(reps):
        for backend, codec, case in cases:
            w, r, ok = await case(data, slice_rows)
            results.rates.add((backend, codec, "write"), data.nbytes / MB / w)
            results.rates.add((backend, codec, "read"), data.nbytes / MB / r)
            results.ok[backend, codec] = results.ok.get((backend, codec), True) and ok
            print(
                f"  rep {rep + 1}/{reps}  {backend:<34} {codec:<5} "
                f"write {data.nbytes / MB / w:7.1f}  read {data.nbytes / MB / r:7.1f} MB/s"
                + ("" if ok else "  DATA MISMATCH"),
                flush=True,
            )


# -- profile -----------------------------------------------------------------------------


class ProfilingExecutor(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor while profiling: zarr runs its codecs here
    (``asyncio.to_thread``), so every task gets a cProfile of its own worker thread."""

    def __init__(self) -> None:
        super().__init__(thread_name_prefix="pzb-codec")
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        return super().submit(self._profiled, fn, args, kwargs)

    def _profiled(self, fn: Any, args: Any, kwargs: Any) -> Any:
        prof = cProfile.Profile(time.thread_time)
        prof.enable()
        try:
            return fn(*args, **kwargs)
        finally:
            prof.disable()
            with self._lock:
                self.profiles.append(prof)


@dataclass
class Profiled:
    """``n`` calls under the profilers; times are per call (totals divided by ``n``)."""

    n: int
    wall: float
    unprofiled_wall: float
    unprofiled_rpc_wall: float
    rpc_wall: float
    rpc_calls: float
    threads: dict[str, list[cProfile.Profile]] = field(default_factory=dict)


@contextlib.contextmanager
def timed_rpcs() -> Iterator[list[float]]:
    """Record the wall time of every ``Node.rpc`` made meanwhile (a benchmark-local patch)."""
    walls: list[float] = []
    original = Node.rpc

    async def rpc(self: Node, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await original(self, *args, **kwargs)
        finally:
            walls.append(time.perf_counter() - t0)

    Node.rpc = rpc  # type: ignore[method-assign]
    try:
        yield walls
    finally:
        Node.rpc = original  # type: ignore[method-assign]


async def profile_call(make: Callable[[], Awaitable[Any]], node: Node, n: int) -> Profiled:
    """Run ``make()`` ``n`` times plain, then ``n`` times under cProfile in every thread it
    uses (the caller's, the node's IO thread, the codec workers)."""
    with timed_rpcs() as plain_walls:
        t0 = time.perf_counter()
        for _ in range(n):
            await make()
        unprofiled = time.perf_counter() - t0

    loop = asyncio.get_running_loop()
    executor = ProfilingExecutor()
    loop.set_default_executor(executor)
    # thread_time: each thread's CPU time, so waiting (for the GIL, the socket, Mnesia) is
    # not counted as work, and parallel codec workers do not add up their waits.
    main, io_side = cProfile.Profile(time.thread_time), cProfile.Profile(time.thread_time)
    async with harness.profiling_io_thread(node, io_side):
        with timed_rpcs() as walls:
            main.enable()
            t0 = time.perf_counter()
            try:
                for _ in range(n):
                    await make()
            finally:
                wall = time.perf_counter() - t0
                main.disable()
    executor.shutdown(wait=True)
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor())
    return Profiled(
        n=n,
        wall=wall / n,
        unprofiled_wall=unprofiled / n,
        unprofiled_rpc_wall=sum(plain_walls) / n,
        rpc_wall=sum(walls) / n,
        rpc_calls=len(walls) / n,
        threads={"main": [main], "io": [io_side], "codec": executor.profiles},
    )


THREAD_NAMES = {
    "main": "caller (zarr, our array)",
    "io": "node IO thread",
    "codec": "codec workers (to_thread)",
}

# Classification of cProfile entries by own time (tottime), from thread, file path and name.
_IDLE = (
    "<method 'poll' of 'select.epoll' objects>",
    "<method 'select' of 'select.",
    "<method 'acquire' of '_thread.lock' objects>",
    "<method 'wait' of",
)
_CODEC_MODULES = ("/numcodecs/", "/zarr/codecs/", "/zarr/core/buffer/", "/numpy/")
_CODEC_BUILTINS = ("numcodecs", "zstd", "numpy", "ndarray", "frombuffer", "copyto", "tobytes")
_TRANSPORT_MODULES = ("/pyrlang_zarr/term/", "/pyrlang_zarr/erldist/")
_TRANSPORT_BUILTINS = ("_socket.socket",)


def bucket_of(path: str, name: str, thread: str) -> str:
    """``codec``, ``transport``, ``idle`` or ``other`` for one profile entry.

    The node's IO thread does nothing but our rpc (term encode/decode, framing, asyncio
    transport, socket): all of its work is transport. The executor's workers run zarr's
    codecs: all codec. In the caller's thread, by module: numcodecs, zarr codecs and buffers
    and numpy are codec; ``pyrlang_zarr.term``/``pyrlang_zarr.erldist`` are transport; the rest
    (zarr indexing, asyncio task plumbing, our overlay and client) is other.
    """
    if path == "~" and name.startswith(_IDLE):
        return "idle"
    if thread == "io":
        return "transport"
    if thread == "codec":
        return "codec"
    if path == "~":
        if any(s in name for s in _CODEC_BUILTINS):
            return "codec"
        if any(s in name for s in _TRANSPORT_BUILTINS):
            return "transport"
        return "other"
    if any(s in path for s in _TRANSPORT_MODULES):
        return "transport"
    if any(s in path for s in _CODEC_MODULES):
        return "codec"
    return "other"


def bucket_times(profiles: list[cProfile.Profile], thread: str, n: int) -> dict[str, float]:
    """Own time per bucket, per call (the profiles cover ``n`` calls)."""
    out = {"codec": 0.0, "transport": 0.0, "idle": 0.0, "other": 0.0}
    if not profiles:
        return out
    stats = pstats.Stats(profiles[0])
    for prof in profiles[1:]:
        stats.add(prof)
    for (path, _line, name), row in stats.stats.items():  # type: ignore[attr-defined]
        out[bucket_of(path, name, thread)] += row[2] / n  # tottime
    return out


def split_profile(p: Profiled) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Split one call's (profiled) wall time into codec, transport, Mnesia/server and rest.

    Method. A ``set_slice`` is two phases in sequence: zarr encodes every chunk into the
    overlay (main thread, codecs in executor threads), then one rpc commits them; a
    ``get_slice`` is the rpc first, then zarr decodes. So:

    - rpc phase = the summed wall time of ``Node.rpc`` calls (a patched ``Node.rpc``
      records it). Within it, **transport** = the CPU the node's IO thread spends on the
      call (its profile minus ``epoll.poll``: ``pyrlang_zarr.term`` encode/decode,
      ``pyrlang_zarr.erldist`` framing, asyncio transports and socket calls), plus the main
      thread's own CPU in ``pyrlang_zarr.term``/``pyrlang_zarr.erldist``;
      **Mnesia/server** = rpc wall
      minus transport: the Erlang node decoding, running the transaction and encoding the
      reply, and the kernel moving the bytes over loopback, which we cannot separate here.
    - zarr phase = wall minus rpc phase. Codec work runs in parallel worker threads, so its
      CPU can exceed the phase; the phase is shared out between **codec** (numcodecs/zstd,
      zarr codec classes, numpy copies, from the workers' and main thread's profiles) and
      **other** (zarr indexing and task plumbing, our overlay, md5) in proportion to CPU.

    The profilers count each thread's CPU time (``time.thread_time``), so waits are not work.
    cProfile slows Python code more than C code: the split comes from the profiled run,
    next to which the unprofiled wall time of the same call is printed.
    """
    per_thread = {name: bucket_times(profs, name, p.n) for name, profs in p.threads.items()}
    transport = min(per_thread["io"]["transport"] + per_thread["main"]["transport"], p.rpc_wall)
    server = max(p.rpc_wall - transport, 0.0)
    zarr_phase = max(p.wall - p.rpc_wall, 0.0)
    codec_cpu = per_thread["codec"]["codec"] + per_thread["main"]["codec"]
    other_cpu = per_thread["main"]["other"]
    share = codec_cpu / (codec_cpu + other_cpu) if codec_cpu + other_cpu > 0 else 0.0
    split = {
        "codec": zarr_phase * share,
        "transport": transport,
        "Mnesia/server": server,
        "other (zarr, overlay, asyncio)": zarr_phase * (1 - share),
    }
    return split, per_thread


def top_functions(p: Profiled, top: int = 12) -> list[tuple[str, str, float, float]]:
    """The ``n`` entries with the most own time across all threads (idle waits left out)."""
    rows: list[tuple[str, str, float, float]] = []
    for thread, profs in p.threads.items():
        if not profs:
            continue
        stats = pstats.Stats(profs[0])
        for prof in profs[1:]:
            stats.add(prof)
        for (path, line, name), row in stats.stats.items():  # type: ignore[attr-defined]
            if bucket_of(path, name, thread) == "idle":
                continue
            where = name if path == "~" else f"{short_path(path)}:{line}({name})"
            rows.append((thread, where, row[2] / p.n, row[1] / p.n))
    rows.sort(key=lambda r: -r[2])
    return rows[:top]


def short_path(path: str) -> str:
    for marker in ("site-packages/", "/pyrlang_zarr/", "/lib/python3"):
        i = path.find(marker)
        if i >= 0:
            return path[i + len(marker) :] if marker != "/pyrlang_zarr/" else path[i + 1 :]
    return path


async def bench_profile(
    cluster: LocalCluster, data: np.ndarray[Any, Any], codec: str, reps: int
) -> tuple[Profiled, Profiled]:
    node, cookie = cluster.nodes[0], cluster.cookie
    rows = min(PROFILE_MIB * MIB // ROW_BYTES, len(data))
    block = np.ascontiguousarray(data[:rows])
    arr = await create(
        f"bench-profile-{codec}",
        block.shape,
        codec,
        cookie=cookie,
        nodes=[node],
        table_name=DISC_TABLE,
    )
    try:
        await arr.set_slice(block)  # warm up: connection, parsed expressions, metadata
        write = await profile_call(lambda: arr.set_slice(block), shared_node(cookie), reps)
        got: list[np.ndarray[Any, Any]] = []

        async def read() -> None:
            got[:] = [await arr.get_slice()]

        read_p = await profile_call(read, shared_node(cookie), reps)
        if not np.array_equal(got[0], block):
            raise RuntimeError("profiled get_slice returned other data than was written")
    finally:
        await arr.store.clear()
    return write, read_p


# -- report ------------------------------------------------------------------------------


def table(results: Results) -> str:
    """Medians, ratios to ``MemoryStore`` with the same codec, and each rep's range."""
    header = "backend|codec|write MB/s|read MB/s|write vs Mem|read vs Mem|write range|read range|ok"
    ops = ("write", "read")
    rows = []
    # our array API first, then the stores, each in the order they ran
    for backend, codec in sorted(results.ok, key=lambda case: not case[0].startswith("array")):
        rate = [results.rates.median((backend, codec, op)) for op in ops]
        mem = [("zarr MemoryStore", codec, op) for op in ops]
        if ("zarr MemoryStore", codec) in results.ok:
            vs = [f"{r / results.rates.median(m):.2f}x" for r, m in zip(rate, mem, strict=True)]
        else:
            vs = ["-", "-"]
        spread = [results.rates.spread((backend, codec, op)) for op in ops]
        ok = "yes" if results.ok[backend, codec] else "NO"
        rows.append((backend, codec, *(f"{r:.1f}" for r in rate), *vs, *spread, ok))
    return harness.render(header.split("|"), rows, left={0, 1, 8})


def print_split(title: str, p: Profiled) -> None:
    split, per_thread = split_profile(p)
    print(
        f"\n{title}, per call (mean of {p.n}): {p.wall:.3f} s under cProfile, "
        f"{p.rpc_calls:g} rpc call(s) taking "
        f"{p.rpc_wall:.3f} s (without the profiler: {p.unprofiled_wall:.3f} s, rpc "
        f"{p.unprofiled_rpc_wall:.3f} s)"
    )
    rows = [(name, f"{secs:.3f}", f"{100 * secs / p.wall:.1f}%") for name, secs in split.items()]
    print(harness.render(("bucket", "seconds", "share"), rows, indent="  "))
    print("  CPU per thread and bucket (own time, s; waits excluded):")
    for thread, b in per_thread.items():
        busy = ", ".join(f"{k} {v:.3f}" for k, v in b.items() if k != "idle" and v >= 0.0005)
        print(f"    {THREAD_NAMES[thread]:<26} {busy or '-'}")
    print("  top functions by own time (CPU per call):")
    for thread, where, secs, calls in top_functions(p, 8):
        print(f"    {secs:7.3f} s {calls:>6.0f}x  [{thread}] {where}")


# -- main --------------------------------------------------------------------------------


async def amain(settings: harness.Settings[Params]) -> int:
    p = settings.params
    rows = p.mib * MIB // ROW_BYTES
    slice_rows = max(p.slice_mib * MIB // ROW_BYTES, CHUNK_ROWS)
    t_start = time.perf_counter()
    load_before = harness.load_average()
    data = make_data(rows)
    sample = data[: min(rows, 32 * CHUNK_ROWS)]  # up to 32 chunks, compressed one by one
    zstd = numcodecs.Zstd(level=0)
    stored = sum(
        len(zstd.encode(sample[i : i + CHUNK_ROWS])) for i in range(0, len(sample), CHUNK_ROWS)
    )
    print(
        f"array: {data.shape} float64 = {data.nbytes / MIB:.0f} MiB, chunks ({CHUNK_ROWS}, {COLS})"
        f" = 1 MiB, written and read in slices of {slice_rows} rows "
        f"({slice_rows * ROW_BYTES / MIB:.0f} MiB); zstd keeps {100 * stored / sample.nbytes:.1f} %"
    )
    print(f"running {p.reps} rep(s), all backends in each:", flush=True)

    results = Results()
    async with LocalCluster(n=1) as cluster:
        node = shared_node(cluster.cookie)
        erlang = await harness.erlang_release(node, cluster.nodes[0])
        await run_cases(one_node_cases(cluster), data, slice_rows, p.reps, results)
        print("profiling one set_slice and one get_slice per codec ...", flush=True)
        profiles = {codec: await bench_profile(cluster, data, codec, p.reps) for codec in CODECS}
        await node.close()
    if settings.args.replicated:
        async with LocalCluster(n=2) as cluster:
            await run_cases(replicated_cases(cluster), data, slice_rows, p.reps, results)
            await shared_node(cluster.cookie).close()
    elapsed = time.perf_counter() - t_start

    versions = {"zarr": zarr.__version__, "numcodecs": numcodecs.__version__}
    print()
    print(harness.environment(erlang, load_before, versions={**versions, "numpy": np.__version__}))
    print(
        f"\nthroughput: {data.nbytes / MIB:.0f} MiB float64 in {slice_rows * ROW_BYTES / MIB:.0f}"
        f" MiB slices, median of {p.reps} rep(s); MB/s of array data (1 MB = 10^6 bytes)"
    )
    print(table(results))
    for codec, (write_p, read_p) in profiles.items():
        print(
            f"\ntime split of our array API: one {PROFILE_MIB} MiB slice, disc_copies, "
            f"codec {codec}"
        )
        print_split("set_slice", write_p)
        print_split("get_slice", read_p)
    print(f"\ntotal run time {elapsed:.0f} s")
    if not all(results.ok.values()):
        print("DATA MISMATCH: some backend read back other data than was written")
        return 1
    return 0


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-replicated",
        dest="replicated",
        action="store_false",
        help="skip the two-node replicated disc_copies row",
    )


if __name__ == "__main__":
    sizes = {"mib": "array size in MiB", "slice_mib": "MiB per set_slice/get_slice"}
    sys.exit(harness.main(__doc__, FULL, QUICK, amain, options=sizes, configure=options))
