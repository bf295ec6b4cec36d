"""The progress bar and plain lines, with a fake clock."""

from __future__ import annotations

import io

import pytest

from pyrlang_zarr.progress import Progress, ProgressBar, describe, human_bytes, resolve


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def step(done: int, *, t: float, total: int = 10, finished: bool = False) -> Progress:
    return Progress("copy", done, total, done * 1024 * 1024, t, finished=finished)


def test_describe_has_chunks_bytes_rate_and_eta() -> None:
    line = describe(Progress("copy", 5, 10, 5 << 20, 5.0, chunks_skipped=1))
    assert line.startswith("copy 5/10 chunks (50%)")
    assert "1 already there" in line and "5.0 MiB" in line and "1.0 MiB/s" in line
    assert "ETA 0:06" in line  # 5 left at 4 moved per 5 s
    assert "done in 1:01:40" in describe(Progress("read", 1, 1, 1, 3700.0, finished=True))
    assert describe(Progress("copy", 0, 3, 0, 0.0)).endswith("ETA ?")
    assert human_bytes(3 * 1024**4) == "3.0 TiB"


def test_terminal_bar_redraws_one_line() -> None:
    out, clock = io.StringIO(), Clock()
    bar = ProgressBar(out, tty=True, clock=clock)
    for i in range(11):
        clock.now = i * 0.5
        bar(step(i, t=clock.now, finished=i == 10))
    text = out.getvalue()
    assert text.count("\r[") == 11 and text.endswith("\n") and text.count("\n") == 1
    assert "[" + "#" * 24 + "] copy 10/10 chunks (100%)" in text


def test_plain_lines_when_not_a_terminal() -> None:
    out, clock = io.StringIO(), Clock()
    bar = ProgressBar(out, clock=clock, every=5.0)  # a StringIO is no terminal
    for i in range(11):
        clock.now = float(i)
        bar(step(i, t=clock.now, finished=i == 10))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [line.split(" chunks")[0] for line in lines] == [
        "copy 0/10",
        "copy 5/10",
        "copy 10/10",
    ]
    assert "done in 0:10" in lines[-1]


def test_resolve() -> None:
    assert resolve(None) is None and resolve(False) is None
    assert isinstance(resolve(True), ProgressBar)
    with pytest.raises(TypeError):
        resolve(3)  # type: ignore[arg-type]
