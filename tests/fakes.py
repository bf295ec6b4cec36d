"""Stand-ins for the few objects the node's pure parts talk to, for tests without a cluster."""

from __future__ import annotations

from typing import Any


class SentBack:
    """Stands in for the connection a signal arrived on: records the control messages that
    go back on it."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def send(
        self, control: tuple[Any, ...], message: Any = None, *, has_message: bool = True
    ) -> None:
        self.sent.append(control)
