"""What the benchmarks share, so that each file keeps only its workload.

- :func:`main` (:func:`parse` then :func:`run`): a benchmark's parameters are a frozen
  dataclass with a ``reps`` field, in a full and a quick instance; ``--quick`` picks the
  quick one and ``--reps`` (and the options a benchmark names) override single fields. The
  run is ``asyncio.run``, where SIGTERM cancels it as Ctrl-C does, so ``finally`` blocks and
  ``async with LocalCluster(...)`` stop the Erlang nodes; an interrupted run returns 130.
- :func:`environment`: versions, machine, BEAM flags and load average before/after.
- :func:`alternate` and :class:`Reps`: interleaved repetitions, their medians, spread and
  per-rep ratios.
- :func:`render`: a Markdown table.
- :func:`start_escript` (a native BEAM client) and :func:`profiling_io_thread`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import dataclasses
import os
import platform
import shutil
import signal
import statistics
import sys
from collections.abc import (
    AsyncIterator,
    Callable,
    Collection,
    Coroutine,
    Hashable,
    Iterable,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from pyrlang_zarr import Atom, Node
from pyrlang_zarr.testing.cluster import DIST_BUFFER_FLAGS, SMALL_MACHINE_FLAGS


class Params(Protocol):
    """A frozen dataclass of counts with at least ``reps``: runs of the whole workload."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def reps(self) -> int: ...


P = TypeVar("P", bound=Params)
K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


# -- parameters and the run --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings(Generic[P]):
    params: P
    quick: bool
    args: argparse.Namespace  # the benchmark's own options too

    @property
    def mode(self) -> str:
        return "quick" if self.quick else "full"


def parse(
    doc: str | None,
    full: P,
    quick: P,
    *,
    options: Mapping[str, str] | None = None,
    configure: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: Sequence[str] | None = None,
) -> Settings[P]:
    """``--quick``, ``--reps`` and an ``--x-y N`` option for each field ``x_y`` of
    ``options`` (field name -> help); ``configure`` adds a benchmark's other options."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, to check it works")
    fields = {"reps": "runs of the whole workload, medians reported", **(options or {})}
    for name, text in fields.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=int,
            metavar="N",
            help=f"{text} (default {getattr(full, name)}; --quick: {getattr(quick, name)})",
        )
    if configure is not None:
        configure(parser)
    args = parser.parse_args(argv)
    changes = {name: getattr(args, name) for name in fields if getattr(args, name) is not None}
    if any(value < 1 for value in changes.values()):
        parser.error(f"{', '.join('--' + n.replace('_', '-') for n in fields)} must be positive")
    params = dataclasses.replace(quick if args.quick else full, **changes)
    return Settings(params, args.quick, args)


def run(bench: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """``asyncio.run(bench())``, SIGTERM cancelling it like Ctrl-C; 130 if interrupted."""

    async def guarded() -> int:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await bench()

    try:
        return asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; the Erlang nodes are stopped", file=sys.stderr)
        return 130


def main(
    doc: str | None,
    full: P,
    quick: P,
    bench: Callable[[Settings[P]], Coroutine[Any, Any, int]],
    *,
    options: Mapping[str, str] | None = None,
    configure: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: Sequence[str] | None = None,
) -> int:
    """:func:`parse` the command line, then :func:`run` ``bench`` with what it chose."""
    settings = parse(doc, full, quick, options=options, configure=configure, argv=argv)
    return run(lambda: bench(settings))


# -- environment -------------------------------------------------------------------------


def load_average() -> float:
    return os.getloadavg()[0]


def cpu_ticks() -> tuple[int, int]:
    """(wanted, steal) CPU ticks of the machine so far, from ``/proc/stat``; (0, 0)
    elsewhere. Wanted is every tick but idle and iowait: time the virtual CPUs ran or
    wanted to run; steal is time the hypervisor ran something else while one wanted to: on
    a shared VM, the noise no interleaving cancels."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
    except (OSError, ValueError):
        return 0, 0
    return user + nice + system + irq + softirq + steal, steal


_TICKS_AT_START = cpu_ticks()  # a benchmark is one process: its run starts about here


async def erlang_release(node: Node, server: str) -> str:
    """``OTP 25 (erts 13.2.2)``, as the Erlang node ``server`` reports it."""
    info = [
        bytes(await node.rpc(server, "erlang", "system_info", [Atom(item)])).decode()
        for item in ("otp_release", "version")
    ]
    return f"OTP {info[0]} (erts {info[1]})"


def environment(
    erlang: str,
    load_before: float,
    *,
    versions: Mapping[str, str] | None = None,
    notes: Iterable[str] = (),
) -> str:
    """Python, ``versions`` of libraries, ``erlang``, the machine; the BEAM flags of
    ``LocalCluster``'s nodes (the native clients use the same); ``notes`` one per line; the
    1-minute load average, ``load_before`` and now; the CPU time stolen meanwhile."""
    libraries = "".join(f", {name} {version}" for name, version in (versions or {}).items())
    flags = " ".join(SMALL_MACHINE_FLAGS + DIST_BUFFER_FLAGS)
    return "\n".join(
        [
            f"Python {platform.python_version()} ({platform.python_implementation()})"
            f"{libraries}, {erlang}, {os.cpu_count()} cores, "
            f"{platform.system()} {platform.release()} {platform.machine()}",
            f"BEAM nodes (cluster and native clients): {flags}",
            *notes,
            f"load average (1 min) before/after: {load_before:.2f} / {load_average():.2f}; "
            f"{steal_since_start()}",
        ]
    )


def steal_since_start() -> str:
    """The share of the CPU time wanted since the benchmark started that the hypervisor
    took, with its ticks."""
    wanted, steal = (now - then for now, then in zip(cpu_ticks(), _TICKS_AT_START, strict=True))
    if wanted <= 0:
        return "steal time not known"
    return (
        f"CPU time stolen by the hypervisor since the start: {100 * steal / wanted:.1f} % "
        f"of the time wanted ({steal} of {wanted} ticks)"
    )


# -- repetitions -------------------------------------------------------------------------


def alternate(turn: int, *sides: T) -> tuple[T, ...]:
    """``sides`` in order on even turns, reversed on odd ones: load that drifts during a
    run then hits every side alike."""
    return sides if turn % 2 == 0 else sides[::-1]


class Reps(Generic[K]):
    """One value per repetition for each key (a side, a backend, a metric ...)."""

    def __init__(self) -> None:
        self.values: dict[K, list[float]] = {}

    def add(self, key: K, value: float) -> None:
        self.values.setdefault(key, []).append(value)

    def last(self, key: K) -> float:
        return self.values[key][-1]

    def median(self, key: K) -> float:
        return statistics.median(self.values[key])

    def spread(self, key: K, spec: str = ".0f") -> str:
        """``lowest-highest`` of the reps."""
        values = self.values[key]
        return f"{min(values):{spec}}-{max(values):{spec}}"

    def ratios(self, key: K, base: K) -> str:
        """Each rep's ``key / base``, in rep order."""
        pairs = zip(self.values[key], self.values[base], strict=True)
        return " ".join(f"{a / b:.2f}" for a, b in pairs)


# -- tables ------------------------------------------------------------------------------


def render(
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    left: Collection[int] = (0,),
    indent: str = "",
) -> str:
    """A Markdown table; the columns in ``left`` left-aligned, the others right-aligned."""
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = []
    for n, row in enumerate(table):
        cells = [
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append(f"{indent}| " + " | ".join(cells) + " |")
        if n == 0:
            lines.append(f"{indent}|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


# -- native clients and profiling --------------------------------------------------------


async def start_escript(
    script: Path,
    *args: object,
    stdin: int = asyncio.subprocess.DEVNULL,
    env: Mapping[str, str] | None = None,
) -> asyncio.subprocess.Process:
    """``escript script args...``, stdout and stderr piped, in a session of its own (a
    Ctrl-C reaches only us, and we stop it ourselves). ``env`` is added to our environment:
    secrets (the cookie) go there, never in ``args`` (``/proc/PID/cmdline`` is public)."""
    escript = shutil.which("escript")
    if escript is None:
        raise FileNotFoundError("`escript` not found on PATH (it comes with Erlang/OTP)")
    return await asyncio.create_subprocess_exec(
        escript,
        str(script),
        *map(str, args),
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )


@contextlib.asynccontextmanager
async def profiling_io_thread(node: Node, profile: cProfile.Profile) -> AsyncIterator[None]:
    """``profile`` enabled meanwhile in ``node``'s IO thread, where its sockets, framing and
    term codec run (a profiler sees only the thread that enabled it)."""
    io_loop = node.start_io_thread()
    await _call_in(io_loop, profile.enable)
    try:
        yield
    finally:
        await _call_in(io_loop, profile.disable)


async def _call_in(loop: asyncio.AbstractEventLoop, fn: Callable[[], object]) -> None:
    """Call ``fn`` in ``loop``'s thread and wait until it returned."""
    done = asyncio.get_running_loop().create_future()

    def finish() -> None:  # in our loop
        if not done.done():  # we may have been cancelled meanwhile
            done.set_result(None)

    def call() -> None:  # in ``loop``
        try:
            fn()
        finally:
            done.get_loop().call_soon_threadsafe(finish)

    loop.call_soon_threadsafe(call)
    await done
