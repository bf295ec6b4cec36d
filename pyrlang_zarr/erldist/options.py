"""The node's settings, checked before anything is sent, and Erlang's environment variables.

``ERL_EPMD_PORT`` names the port EPMD listens on (default 4369), as it does for ``erl`` and
``epmd``. ``ERL_DIST_PORT`` names the port every node's distribution listens on, with no
EPMD at all: what OTP's ``erl -erl_epmd_port Port -start_epmd false`` does; EPMD-less
deployments (container images, edeliver's and epmdless's EPMD modules) name it so.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

DEFAULT_EPMD_PORT = 4369


def check_timeout(label: str, value: Any, *, allow_none: bool) -> float | None:
    """``value`` if it is a positive number of seconds (or ``None`` where allowed); a clear
    ``TypeError``/``ValueError`` otherwise (bools and strings are not seconds, and neither
    are zero, negative numbers or NaN)."""
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{label} must be a positive number of seconds, not None")
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "a positive number of seconds" + (" or None" if allow_none else "")
        raise TypeError(f"{label} must be {kind}, not {type(value).__name__} {value!r}")
    if math.isnan(value) or not value > 0:
        raise ValueError(f"{label} must be a positive number of seconds, got {value!r}")
    return float(value)


def check_port(label: str, value: Any) -> int:
    """``value`` as a TCP port number (1..65535), with a clear error naming ``label``."""
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValueError(f"{label} must be a port number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{label} must be a port number, not {type(value).__name__}")
    if not 0 < value < 65536:
        raise ValueError(f"{label} must be a port number from 1 to 65535, got {value}")
    return value


def env_port(variable: str) -> int | None:
    """The port in environment variable ``variable``; ``None`` when it is unset or empty."""
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return None
    return check_port(f"${variable}", raw)


@dataclass(slots=True)
class Settings:
    """What the node's parts read each time they need it (the node's attributes of the same
    names set these, so a change applies to the next use). Holds no reference to the node:
    the IO thread reads it, and must not keep a dropped node alive."""

    rpc_timeout: float | None = 60.0
    connect_timeout: float = 10.0
    tick_time: float = 60.0
    liveness_timeout: float = 10.0
    epmd_port: int = DEFAULT_EPMD_PORT
    dist_port: int | None = None
