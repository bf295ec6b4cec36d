"""A record of the attacks the hostile-peer tests played and what came of them, printed as a
table at the end of the run (like :mod:`tests.faults`; see ``conftest.pytest_terminal_summary``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Attack:
    attack: str  # what the hostile peer did
    outcome: str  # what the client did about it
    measured: str = ""  # memory, work, or what reached a healthy node


REPORT: list[Attack] = []


def record(attack: str, outcome: str, measured: str = "") -> None:
    REPORT.append(Attack(attack, outcome, measured))


def mib(nbytes: int) -> str:
    return f"{nbytes / (1 << 20):.1f} MiB"


def table() -> list[str]:
    head = ("attack", "outcome", "measured")
    rows = [(a.attack, a.outcome, a.measured) for a in REPORT]
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]

    def line(cells: tuple[str, ...]) -> str:
        return " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))

    return [line(head), "-+-".join("-" * w for w in widths), *map(line, rows)]
