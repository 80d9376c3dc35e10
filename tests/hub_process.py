"""`linkhub run` in a subprocess, written once for the tests and bench/: the
command on loopback ports without mDNS, and reading a child's output up to a
line (LineReader, on a thread of its own, when the wait must end at its
deadline even if the child prints nothing)."""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

BIN = Path(sys.executable).parent
LINKHUB = str(BIN / "linkhub")
DEVICE = str(BIN / "linkhub-device")
LOOPBACK = "127.0.0.1"
# What `linkhub run` prints last once it serves (linkhub/server.py).
READY = "Stop with"


def linkhub_run_command(
    data_dir: Path, *, http_port: int, mqtt_port: int | None = None, extra: Sequence[str] = ()
) -> list[str]:
    """`linkhub run` on loopback only, without mDNS; `mqtt_port` for the hub's own
    mosquitto (None: leave it to `extra`, e.g. `--broker URL`)."""
    command = [
        LINKHUB, "run", "--data-dir", str(data_dir), "--no-mdns",
        "--http-host", LOOPBACK, "--http-port", str(http_port),
    ]  # fmt: skip
    if mqtt_port is not None:
        command += ["--mqtt-host", LOOPBACK, "--mqtt-port", str(mqtt_port)]
    return [*command, *extra]


class LineReader:
    """The lines of a child's output, read on a thread of their own, so that a
    wait for one ends at its deadline whether or not the child prints."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)  # the child closed its output

    def next_matching(self, predicate: Callable[[str], bool], timeout_s: float) -> str | None:
        """The next line `predicate` accepts; None at the deadline or the end of output."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                return None
            if line is None:
                self._lines.put(None)  # stays ended for the next caller
                return None
            self.seen.append(line)
            if predicate(line):
                return line
        return None

    def until(self, predicate: Callable[[str], bool], timeout_s: float = 30) -> list[str]:
        """The lines up to and including the first that `predicate` accepts."""
        start = len(self.seen)
        if self.next_matching(predicate, timeout_s) is None:
            raise AssertionError(
                f"did not see the expected line within {timeout_s:g} s; got {self.seen[start:]}"
            )
        return self.seen[start:]


def read_lines_until(stream: IO[str], predicate: Callable[[str], bool], timeout_s: float = 30) -> list[str]:
    """The stream's lines up to the first `predicate` accepts, read on this thread,
    so the rest stays in the stream for the caller (`communicate()` after it).
    A child that prints nothing blocks the read: the test's own timeout ends it
    (pytest-timeout); LineReader instead where the wait must end on its own."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if predicate(lines[-1]):
            return lines
    raise AssertionError(f"did not see the expected line; got {lines}")
