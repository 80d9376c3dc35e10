"""The bootstrap guard plugin's build (hub/broker/bootstrap_guard.py): built once
per source into a shared cache, and a clear reason when it cannot be; the
managed broker runs without it then. What it refuses on the real broker is in
tests/test_bootstrap_guest.py."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
from conftest import free_port

from hub.broker.bootstrap_guard import SOURCE, GuardUnavailable, build_guard
from hub.broker.managed import ManagedBroker, ManagedBrokerConfig


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "linkhub"


def _failing_compiler(tmp_path: Path, message: str) -> Path:
    script = tmp_path / "fake-cc"
    script.write_text(f"#!/bin/sh\necho '{message}' >&2\nexit 1\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_built_once_per_source_into_the_cache(cache: Path, tmp_path: Path) -> None:
    built = build_guard(tmp_path / "broker")
    assert built.parent == cache and built.stat().st_size > 0
    assert built.read_bytes()[:4] == b"\x7fELF"
    first_build = built.stat().st_mtime_ns
    assert build_guard(tmp_path / "broker") == built
    assert built.stat().st_mtime_ns == first_build
    assert [p.name for p in cache.iterdir()] == [built.name]  # no temporary left behind
    assert SOURCE.name == "bootstrap_guard.c"


def test_missing_headers_are_named(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compiler = _failing_compiler(
        tmp_path, "bootstrap_guard.c:34:10: fatal error: mosquitto_broker.h: No such file or directory"
    )
    monkeypatch.setenv("CC", str(compiler))
    with pytest.raises(GuardUnavailable, match="install Debian's mosquitto-dev and libmosquitto-dev"):
        build_guard(tmp_path / "broker")
    assert list(cache.iterdir()) == []


def test_no_compiler_is_named(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(GuardUnavailable, match="no C compiler"):
        build_guard(tmp_path / "broker")


def test_the_broker_starts_without_the_guard_and_says_why(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CC", str(_failing_compiler(tmp_path, "error: something else broke")))
    broker = ManagedBroker(ManagedBrokerConfig(tmp_path / "mosquitto", "127.0.0.1", free_port()))
    with caplog.at_level(logging.WARNING, logger="hub.broker.managed"):
        broker.start()
    try:
        assert broker.running
        assert broker.bootstrap_guard is None
        problem = broker.bootstrap_guard_problem
        assert problem is not None and "something else broke" in problem
        assert "the bootstrap guard is off" in caplog.text
        assert "bootstrap_guard" not in (tmp_path / "mosquitto" / "mosquitto.conf").read_text()
    finally:
        broker.stop()
