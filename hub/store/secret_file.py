"""The hub's small secret files (its id and broker password, the pages' cookie
key, the account service's token, the managed broker's admin password): read, or
made once, readable by the hub's user alone.

There were four copies of this, each `touch(mode=0o600)` then `write_text`: a
crash or a full disk between the two left an empty file, read back later as an
empty secret; two processes starting at once could each write their own; and one
copy (the cookie key's) had drifted to writing no final newline. Here a secret
is written whole to a private temporary file first and only then given its name,
so a reader sees the whole secret or none."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

SECRET_FILE_MODE = 0o600


def read_secret(path: Path) -> str:
    """The secret in the file, without its final newline ("" when it is empty)."""
    return path.read_text().strip()


def write_secret(path: Path, secret: str) -> None:
    """Replace the file with `secret` (and a newline), mode 0600, all at once."""
    temporary = _written_privately(path, secret)
    os.replace(temporary, path)


def read_or_create_secret(path: Path, make: Callable[[], str]) -> str:
    """The secret in the file; if there is none (or the file is empty, as an
    interrupted write of an older version could leave it), a new one from
    `make`, saved first. Of two processes making it at once, the first to name
    its file wins and both return that one."""
    with contextlib.suppress(FileNotFoundError):
        existing = read_secret(path)
        if existing:
            return existing
        write_secret(path, make())  # an empty file: nobody relies on an empty secret
        return read_secret(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _written_privately(path, make())
    try:
        os.link(temporary, path)  # fails if another process named its file first
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
    return read_secret(path)


def _written_privately(path: Path, secret: str) -> Path:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()  # left by a crash of this same pid number
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_FILE_MODE)
    with os.fdopen(descriptor, "w") as file:
        file.write(secret + "\n")
        file.flush()
        os.fsync(file.fileno())
    return temporary
