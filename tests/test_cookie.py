"""Where the cookie comes from, in the order ``erl`` and Elixir releases use."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyrlang_zarr.erldist.cookie import resolve_cookie
from pyrlang_zarr.errors import AuthenticationError


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("ERLANG_COOKIE", raising=False)
    monkeypatch.delenv("RELEASE_COOKIE", raising=False)
    return tmp_path


def write_cookie_file(home: Path, text: str, mode: int = 0o400) -> None:
    path = home / ".erlang.cookie"
    path.write_text(text)
    path.chmod(mode)


def test_argument_first(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERLANG_COOKIE", "from-env")
    write_cookie_file(home, "from-file")
    assert resolve_cookie("from-arg", home=home) == "from-arg"


def test_erlang_cookie_before_release_cookie(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERLANG_COOKIE", "erlang")
    monkeypatch.setenv("RELEASE_COOKIE", "release")
    assert resolve_cookie(home=home) == "erlang"


def test_release_cookie_of_an_elixir_release(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELEASE_COOKIE", "release")
    write_cookie_file(home, "from-file")
    assert resolve_cookie(home=home) == "release"


def test_cookie_file_last(home: Path) -> None:
    write_cookie_file(home, "from-file\n")
    assert resolve_cookie(home=home) == "from-file"


def test_cookie_file_readable_by_others_is_refused(home: Path) -> None:
    write_cookie_file(home, "from-file", mode=0o644)
    with pytest.raises(AuthenticationError, match="owner only"):
        resolve_cookie(home=home)


def test_no_cookie_anywhere_says_where_to_put_one(home: Path) -> None:
    with pytest.raises(AuthenticationError, match="RELEASE_COOKIE"):
        resolve_cookie(home=home)


@pytest.mark.parametrize("bad", ["", "caf\u00e9\u20ac"])
def test_bad_cookie_text(home: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        resolve_cookie(bad, home=home)
