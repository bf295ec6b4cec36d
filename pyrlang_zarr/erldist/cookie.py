"""Where the cookie comes from: the argument, ``ERLANG_COOKIE``, ``RELEASE_COOKIE`` (what
Elixir releases set), or ``~/.erlang.cookie``, in that order."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pyrlang_zarr.errors import AuthenticationError


def resolve_cookie(cookie: str | None = None, *, home: Path | None = None) -> str:
    """The cookie to use, checked like ``erl`` checks its cookie file (owner-only access)."""
    if cookie is not None:
        if not isinstance(cookie, str):
            raise TypeError(f"cookie must be a str, not {type(cookie).__name__}")
        return _checked(cookie, "the cookie argument")
    for variable in ("ERLANG_COOKIE", "RELEASE_COOKIE"):
        env = os.environ.get(variable)
        if env:
            return _checked(env, variable)
    path = (home or Path.home()) / ".erlang.cookie"
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise AuthenticationError(
            "no cookie: pass cookie=..., set ERLANG_COOKIE (or RELEASE_COOKIE), or create "
            "~/.erlang.cookie"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AuthenticationError(
            f"{path} must be accessible by its owner only (chmod 400 {path}), as erl requires"
        )
    return _checked(path.read_text(encoding="latin-1").strip(), str(path))


def _checked(cookie: str, source: str) -> str:
    if not cookie:
        raise ValueError(f"the cookie from {source} is empty")
    try:
        cookie.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"the cookie from {source} must be latin-1 text, as Erlang's") from None
    return cookie
