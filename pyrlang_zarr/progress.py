"""Progress of long work (copies, large slices): a callback, and a bar on a terminal.

Anything long takes ``progress=``: a callable that receives a :class:`Progress` after each
step, or ``True`` for a :class:`ProgressBar` on stderr. The bar redraws one line when the
stream is a terminal and prints a plain line every few seconds (and at the end) when it is
not, so logs and CI output stay readable.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import numpy.typing as npt

__all__ = ["Progress", "ProgressBar", "ProgressCallback", "SliceProgress", "resolve"]


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a piece of long work stands. ``chunks_*`` count zarr keys (chunks and
    metadata documents, or parts of a slice), ``bytes_*`` their bytes."""

    what: str
    chunks_done: int
    chunks_total: int
    bytes_done: int
    elapsed: float
    chunks_skipped: int = 0
    bytes_total: int | None = None
    finished: bool = False

    @property
    def rate(self) -> float:
        """Bytes per second so far."""
        return self.bytes_done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def fraction(self) -> float:
        if self.chunks_total <= 0:
            return 1.0
        return min(self.chunks_done / self.chunks_total, 1.0)

    @property
    def eta(self) -> float | None:
        """Seconds left at the pace so far, by chunk count; ``None`` until known."""
        if self.finished or self.chunks_done >= self.chunks_total:
            return 0.0
        moved = self.chunks_done - self.chunks_skipped  # skipped chunks cost almost nothing
        if moved <= 0 or self.elapsed <= 0:
            return None
        return (self.chunks_total - self.chunks_done) * self.elapsed / moved


ProgressCallback = Callable[[Progress], None]


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_seconds(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "?"
    s = round(s)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def describe(p: Progress) -> str:
    """One line: ``copy 45/100 chunks (45%), 3.2 MiB, 1.1 MiB/s, ETA 0:05``."""
    parts = [f"{p.what} {p.chunks_done}/{p.chunks_total} chunks ({p.fraction:.0%})"]
    if p.chunks_skipped:
        parts.append(f"{p.chunks_skipped} already there")
    total = f" of {human_bytes(p.bytes_total)}" if p.bytes_total is not None else ""
    parts.append(f"{human_bytes(p.bytes_done)}{total}")
    parts.append(f"{human_bytes(p.rate)}/s")
    if p.finished:
        parts.append(f"done in {human_seconds(p.elapsed)}")
    else:
        parts.append(f"ETA {human_seconds(p.eta)}")
    return ", ".join(parts)


@dataclass
class ProgressBar:
    """A :data:`ProgressCallback` that draws on ``stream`` (stderr by default).

    On a terminal (``tty=None`` asks the stream) one line is redrawn at most every
    ``redraw`` seconds; elsewhere a plain line is printed at the start, every ``every``
    seconds and at the end.
    """

    stream: IO[str] | None = None
    tty: bool | None = None
    every: float = 5.0
    redraw: float = 0.1
    width: int = 24
    clock: Callable[[], float] = time.monotonic
    _last: float | None = field(default=None, init=False, repr=False)
    _drawn: bool = field(default=False, init=False, repr=False)

    def _out(self) -> IO[str]:
        return self.stream if self.stream is not None else sys.stderr

    def _is_tty(self) -> bool:
        if self.tty is not None:
            return self.tty
        isatty = getattr(self._out(), "isatty", None)
        return bool(isatty and isatty())

    def __call__(self, p: Progress) -> None:
        now = self.clock()
        gap = self.redraw if self._is_tty() else self.every
        if not p.finished and self._last is not None and now - self._last < gap:
            return
        self._last = now
        out = self._out()
        if self._is_tty():
            filled = round(self.width * p.fraction)
            bar = "#" * filled + "." * (self.width - filled)
            out.write(f"\r[{bar}] {describe(p)}\x1b[K")
            if p.finished:
                out.write("\n")
        else:
            out.write(describe(p) + "\n")
        out.flush()


def resolve(progress: ProgressCallback | bool | None) -> ProgressCallback | None:
    """``True``: a bar on stderr; ``False``/``None``: no reporting; a callable as is."""
    if progress is True:
        return ProgressBar()
    if progress is None or progress is False:
        return None
    if not callable(progress):
        raise TypeError(f"progress must be a callable, True or None, got {progress!r}")
    return progress


def _part_steps(counts: Sequence[int], budget: int) -> list[int]:
    """Chunks per part along each axis: whole trailing axes while they fit in ``budget``."""
    steps = [1] * len(counts)
    room = max(budget, 1)
    for axis in reversed(range(len(counts))):
        take = min(counts[axis], room)
        steps[axis] = max(take, 1)
        if take < counts[axis]:
            break
        room //= max(counts[axis], 1)
    return steps


def slice_parts(
    start: Sequence[int], stop: Sequence[int], grid: Sequence[int], budget: int
) -> Iterator[tuple[tuple[int, ...], tuple[int, ...]]]:
    """``[start, stop)`` cut at chunk boundaries into boxes of at most ``budget`` chunks."""
    first = [a // c for a, c in zip(start, grid, strict=True)]
    last = [-(-b // c) for b, c in zip(stop, grid, strict=True)]
    counts = [max(hi - lo, 0) for lo, hi in zip(first, last, strict=True)]
    if 0 in counts:
        return
    steps = _part_steps(counts, budget)
    axes = [range(lo, hi, s) for lo, hi, s in zip(first, last, steps, strict=True)]
    for corner in itertools.product(*axes):
        a = tuple(max(i * c, s0) for i, c, s0 in zip(corner, grid, start, strict=True))
        b = tuple(
            min((i + s) * c, s1) for i, s, c, s1 in zip(corner, steps, grid, stop, strict=True)
        )
        yield a, b


class SliceProgress:
    """``get_slice``/``set_slice`` of an array in parts, reporting after each part.

    Each part is whole chunks (``part_chunks`` of them at most; by default about 4 MiB of
    values) and one transaction: a read is consistent per part, a write all-or-none per
    part. Parts run ``concurrency`` at a time.
    """

    def __init__(
        self,
        array: Any,
        progress: ProgressCallback | bool,
        part_chunks: int | None = None,
        *,
        concurrency: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.array = array
        self.callback = resolve(progress)
        grid = array.zarr.shards or array.zarr.chunks
        self.grid = tuple(int(c) for c in grid)
        if part_chunks is None:
            chunk_bytes = int(np.prod(self.grid, dtype=np.int64)) * array.dtype.itemsize
            part_chunks = max(1, (4 << 20) // max(chunk_bytes, 1))
        if part_chunks < 1:
            raise ValueError(f"part_chunks must be at least 1, got {part_chunks}")
        self.part_chunks = part_chunks
        self.concurrency = concurrency
        self.clock = clock

    def _region(
        self, start: Sequence[int] | None, stop: Sequence[int] | None
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        shape = tuple(self.array.shape)
        a = tuple(start) if start is not None else (0,) * len(shape)
        b = tuple(stop) if stop is not None else shape
        if len(a) != len(shape) or len(b) != len(shape):
            raise ValueError(
                f"start {a} and stop {b} need one index per dimension of shape {shape}"
            )
        for d, (x, y, n) in enumerate(zip(a, b, shape, strict=True)):
            if isinstance(x, bool) or isinstance(y, bool):
                raise TypeError(f"start and stop must hold integers, got {a}, {b}")
            if not 0 <= x <= y <= n:
                raise IndexError(f"region {a}..{b} is not inside shape {shape} (dimension {d})")
        return tuple(map(int, a)), tuple(map(int, b))

    def _chunks(self, s: Sequence[int], e: Sequence[int]) -> int:
        """How many chunks the box ``[s, e)`` touches."""
        return int(np.prod([-(-b // c) - a // c for a, b, c in zip(s, e, self.grid, strict=True)]))

    async def _run(
        self,
        what: str,
        parts: list[tuple[tuple[int, ...], tuple[int, ...]]],
        itemsize: int,
        one: Callable[[tuple[int, ...], tuple[int, ...]], Any],
    ) -> None:
        t0 = self.clock()
        done = 0  # chunks (shards, if sharded) of the parts done
        nbytes = 0
        total = sum(int(np.prod([b - a for a, b in zip(s, e, strict=True)])) for s, e in parts)
        total *= itemsize
        chunks_total = sum(self._chunks(s, e) for s, e in parts)
        limit = asyncio.Semaphore(self.concurrency)

        def report(finished: bool = False) -> None:
            if self.callback is not None:
                self.callback(
                    Progress(
                        what,
                        done,
                        chunks_total,
                        nbytes,
                        self.clock() - t0,
                        bytes_total=total,
                        finished=finished,
                    )
                )

        async def part(s: tuple[int, ...], e: tuple[int, ...]) -> None:
            nonlocal done, nbytes
            async with limit:
                await one(s, e)
            done += self._chunks(s, e)
            nbytes += int(np.prod([b - a for a, b in zip(s, e, strict=True)])) * itemsize
            report()

        report()
        await asyncio.gather(*(part(s, e) for s, e in parts))
        report(finished=True)

    async def get_slice(
        self, start: Sequence[int] | None = None, stop: Sequence[int] | None = None
    ) -> np.ndarray[Any, Any]:
        a, b = self._region(start, stop)
        out = np.empty([y - x for x, y in zip(a, b, strict=True)], dtype=self.array.dtype)
        parts = list(slice_parts(a, b, self.grid, self.part_chunks))

        async def one(s: tuple[int, ...], e: tuple[int, ...]) -> None:
            where = tuple(slice(x - o, y - o) for x, y, o in zip(s, e, a, strict=True))
            out[where] = await self.array.get_slice(s, e)

        await self._run("read", parts, self.array.dtype.itemsize, one)
        return out

    async def set_slice(
        self,
        data: npt.ArrayLike,
        start: Sequence[int] | None = None,
        stop: Sequence[int] | None = None,
    ) -> None:
        a, b = self._region(start, stop)
        values = np.asarray(data)
        want = tuple(y - x for x, y in zip(a, b, strict=True))
        if values.shape != want:
            raise ValueError(f"data has shape {values.shape}, the region {a}..{b} has shape {want}")
        parts = list(slice_parts(a, b, self.grid, self.part_chunks))

        async def one(s: tuple[int, ...], e: tuple[int, ...]) -> None:
            where = tuple(slice(x - o, y - o) for x, y, o in zip(s, e, a, strict=True))
            await self.array.set_slice(values[where], s, e)

        await self._run("write", parts, self.array.dtype.itemsize, one)
