"""The files that let `linkhub-device set` reach a running `linkhub-device run`.

A linked device's broker identity is bound to its client id: a second
connection with it would kick the first. So only one process at a time talks
to the broker for a state file: whoever holds the lock file. Everything else
goes through files next to the state file:

- `<state>.lock`: held with `fcntl.flock` by the process that is connected
  (`run`, or a `set` that found no `run`); it contains "<pid> <role>".
- `<state>.buttons`: one JSON line per change pressed on the device,
  `{"request_id", "changes", "at"}`, appended by `set` and taken one at a time,
  oldest first, by the lock holder.
- `<state>.buttons.done`: one JSON line per outcome, appended by the lock
  holder: `{"request_id", "ok": true, "version"}` or
  `{"request_id", "ok": false, "error", "error_description"}`.

The spool and the done file are changed only under their own `flock`, so
concurrent `set`s and the holder never lose a line. flock locks belong to an
open file description: they conflict between threads of one process too, and
the kernel drops them when the holder dies, so a crashed `run` never leaves a
stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILE_MODE = 0o600
# The done file is trimmed to its newest lines once it is larger than this.
MAX_DONE_BYTES = 64 * 1024
KEEP_DONE_LINES = 100

Outcome = dict[str, Any]


def lock_path(state_path: str | os.PathLike[str]) -> Path:
    return Path(f"{os.fspath(state_path)}.lock")


def spool_path(state_path: str | os.PathLike[str]) -> Path:
    return Path(f"{os.fspath(state_path)}.buttons")


def done_path(state_path: str | os.PathLike[str]) -> Path:
    return Path(f"{os.fspath(state_path)}.buttons.done")


@dataclass(frozen=True, slots=True)
class ButtonRequest:
    """One change made on the device; `at` (epoch seconds) lets stale presses expire."""

    request_id: str
    changes: dict[str, Any]
    at: float

    def to_line(self) -> bytes:
        body = {"request_id": self.request_id, "changes": self.changes, "at": self.at}
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> ButtonRequest | None:
        try:
            obj = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(obj, dict):
            return None
        request_id, changes, at = obj.get("request_id"), obj.get("changes"), obj.get("at")
        if not isinstance(request_id, str) or not isinstance(changes, dict):
            return None
        if not isinstance(at, int | float) or isinstance(at, bool):
            return None
        return cls(request_id, changes, float(at))


class DeviceLock:
    """The right to be the one process connected for a state file."""

    def __init__(self, state_path: str | os.PathLike[str]) -> None:
        self.path = lock_path(state_path)
        self._fd: int | None = None

    def acquire(self, role: str) -> bool:
        """Take the lock without waiting; False if another process (or thread) holds it."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {role}\n".encode(), 0)
        self._fd = fd
        return True

    def release(self) -> None:
        """Let go; the file stays, since removing a flock'd file races with the next taker."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def holder(self) -> tuple[int, str] | None:
        """(pid, role) written by the holder, if any can be read; a hint, not a proof."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError:
            return None
        pid, _, role = text.strip().partition(" ")
        return (int(pid), role) if pid.isdigit() and role else None


@contextlib.contextmanager
def _locked(path: Path, flags: int) -> Iterator[int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # closing drops the flock


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _rewrite(fd: int, data: bytes) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def append_request(state_path: str | os.PathLike[str], request: ButtonRequest) -> None:
    with _locked(spool_path(state_path), os.O_WRONLY | os.O_APPEND) as fd:
        os.write(fd, request.to_line())


def take_request(state_path: str | os.PathLike[str]) -> ButtonRequest | None:
    """Remove and return the oldest request in the spool (malformed lines are dropped)."""
    path = spool_path(state_path)
    if not path.exists():
        return None
    with _locked(path, os.O_RDWR) as fd:
        lines = _read_all(fd).splitlines()
        taken: ButtonRequest | None = None
        while lines and taken is None:
            taken = ButtonRequest.from_line(lines.pop(0))
        _rewrite(fd, b"".join(line + b"\n" for line in lines))
    return taken


def withdraw_request(state_path: str | os.PathLike[str], request_id: str) -> bool:
    """Take one's own request back out of the spool; False if someone already took it."""
    path = spool_path(state_path)
    if not path.exists():
        return False
    with _locked(path, os.O_RDWR) as fd:
        lines = _read_all(fd).splitlines()
        keep = [
            line
            for line in lines
            if (request := ButtonRequest.from_line(line)) is None or request.request_id != request_id
        ]
        if len(keep) == len(lines):
            return False
        _rewrite(fd, b"".join(line + b"\n" for line in keep))
    return True


def record_outcome(state_path: str | os.PathLike[str], outcome: Outcome) -> None:
    line = json.dumps(outcome, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    with _locked(done_path(state_path), os.O_RDWR | os.O_APPEND) as fd:
        os.write(fd, line)
        if os.fstat(fd).st_size > MAX_DONE_BYTES:
            kept = _read_all(fd).splitlines()[-KEEP_DONE_LINES:]
            _rewrite(fd, b"".join(item + b"\n" for item in kept))


def find_outcome(state_path: str | os.PathLike[str], request_id: str) -> Outcome | None:
    """The outcome recorded for `request_id`, if any yet."""
    try:
        data = done_path(state_path).read_bytes()
    except FileNotFoundError:
        return None
    for line in reversed(data.splitlines()):
        try:
            obj = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue  # a line being written, or trimmed away under us
        if isinstance(obj, dict) and obj.get("request_id") == request_id:
            return obj
    return None
