"""The hub's secret files: made once, whole, readable by the hub's user alone."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from hub.store.secret_file import read_or_create_secret, read_secret, write_secret

pytestmark = pytest.mark.timeout(10)


def _counting(values: list[str]) -> tuple[list[str], Callable[[], str]]:
    made: list[str] = []

    def make() -> str:
        made.append(values[len(made)])
        return made[-1]

    return made, make


def test_a_new_secret_is_saved_0600_with_a_newline_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "deeper" / "hub-password"
    made, make = _counting(["first", "second"])
    assert read_or_create_secret(path, make) == "first"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "first\n"
    assert read_or_create_secret(path, make) == "first"
    assert made == ["first"]
    assert [p.name for p in path.parent.iterdir()] == ["hub-password"]  # no temporary left


def test_an_existing_secret_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "web-secret"
    path.write_text("kept-from-before")  # an older version wrote no newline
    assert read_or_create_secret(path, lambda: "new") == "kept-from-before"
    assert path.read_text() == "kept-from-before"


def test_an_empty_file_left_by_an_interrupted_write_gets_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "account-service-token"
    path.touch(mode=0o644)
    assert read_or_create_secret(path, lambda: "fresh") == "fresh"
    assert read_secret(path) == "fresh"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_of_two_makers_the_first_to_name_its_file_wins(tmp_path: Path) -> None:
    path = tmp_path / "hub-id"

    def slow_loser() -> str:
        # Another process names its file while this one is still making its own.
        write_secret(path, "winner")
        return "loser"

    assert read_or_create_secret(path, slow_loser) == "winner"
    assert read_secret(path) == "winner"


def test_write_replaces_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "admin-password"
    path.write_text("a much longer old secret\n")
    write_secret(path, "short")
    assert path.read_text() == "short\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
