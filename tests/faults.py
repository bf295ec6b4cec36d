"""A record of the faults the tests injected and what happened to the writes around them,
printed as a table at the end of the run (see ``conftest.pytest_terminal_summary``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FaultRun:
    scenario: str
    fault: str
    attempted: int
    acked: int
    refused: int
    lost: int
    note: str = ""


REPORT: list[FaultRun] = []

# OTP 25's global disconnects a node from peers that still reach a lost node; in a partition
# that also splits the healthy majority from itself (see README: partitions).
NO_OVERLAP_PREVENTION = ("-kernel", "prevent_overlapping_partitions", "false")

# The whole table as a node holds it, hashed by Erlang itself: equal digests, equal records.
TABLE_DIGEST = "erlang:md5(term_to_binary(lists:sort(ets:tab2list(zarr_storage))))."


def table() -> list[str]:
    head = ("scenario", "fault", "writes", "acked", "refused", "lost", "note")
    rows = [
        (r.scenario, r.fault, str(r.attempted), str(r.acked), str(r.refused), str(r.lost), r.note)
        for r in REPORT
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    line = lambda cells: " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return [line(head), "-+-".join("-" * w for w in widths), *map(line, rows)]
