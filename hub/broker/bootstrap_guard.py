"""The bootstrap guard: a small mosquitto plugin, built here, that refuses the
public bootstrap login the client ids of linked devices and of the hub.

Why a plugin: mosquitto takes over a connected client's session when another
client connects with the same client id (MQTT-3.1.4-3), and nothing in
mosquitto 2.0's configuration or dynamic security can keep one username out of
a space of client ids (docs/security.md, "Knocking a device off the broker").
The C source (bootstrap_guard.c, next to this file) says how it answers.

It is compiled once per source text into a cache shared by every hub of the
user (`$XDG_CACHE_HOME/linkhub`, else `~/.cache/linkhub`, else the broker's own
directory), written under a temporary name and then renamed, so hubs started
at once neither build twice into one file nor load half a file. Where there is
no C compiler or no mosquitto headers (Debian's mosquitto-dev and
libmosquitto-dev: scripts/bootstrap and deploy/install.sh install them), the
managed broker runs without it and the hub says so in its log.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import linkhub_protocol as protocol
from hub.errors import ConfigError

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("bootstrap_guard.c")

# Linked devices' client ids are their device ids (`dev-` and 48 random bits,
# hub/services/link_decisions.py); the hub's own connections are `linkhub-<role>-...`
# (hub/broker/dynsec.py `service_client_id`). docs/protocol.md section 3.1
# keeps devices' bootstrap client ids out of both.
RESERVED_CLIENT_ID_PREFIXES = ("dev-", "linkhub-")

_COMPILE_TIMEOUT_S = 60.0


class GuardUnavailable(ConfigError):
    """The plugin could not be built here; the message says what is missing."""


def _cache_directories(fallback: Path) -> list[Path]:
    places: list[Path] = []
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        places.append(Path(xdg) / "linkhub")
    home = os.environ.get("HOME")
    if home:
        places.append(Path(home) / ".cache" / "linkhub")
    places.append(fallback)
    return places


def _writable_directory(candidates: list[Path]) -> Path:
    for candidate in candidates:
        try:
            candidate.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError:
            continue
        if os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    raise GuardUnavailable(f"no writable directory to build it in (tried {', '.join(map(str, candidates))})")


def build_guard(fallback_directory: Path) -> Path:
    """The built plugin's path, compiling it first if this source was not built yet."""
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    directory = _writable_directory(_cache_directories(fallback_directory))
    target = directory / f"bootstrap-guard-{digest}.so"
    if target.exists():
        return target
    wanted = os.environ.get("CC")
    compiler = shutil.which(wanted) if wanted else shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise GuardUnavailable(f"no C compiler ({wanted or 'cc or gcc'}) found")
    descriptor, partial_name = tempfile.mkstemp(prefix=".bootstrap-guard-", suffix=".so", dir=directory)
    os.close(descriptor)
    partial = Path(partial_name)
    try:
        result = subprocess.run(
            [compiler, "-shared", "-fPIC", "-O2", "-o", str(partial), str(SOURCE)],
            capture_output=True,
            text=True,
            timeout=_COMPILE_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            first_error = next(
                (line for line in result.stderr.splitlines() if "error" in line), result.stderr.strip()
            )
            if "mosquitto" in first_error and "No such file" in first_error:
                raise GuardUnavailable(
                    "mosquitto's plugin headers are missing "
                    "(install Debian's mosquitto-dev and libmosquitto-dev)"
                )
            raise GuardUnavailable(f"{compiler} failed: {first_error}")
        os.replace(partial, target)
    except subprocess.TimeoutExpired as exc:
        raise GuardUnavailable(f"{compiler} did not finish in {_COMPILE_TIMEOUT_S:.0f} s") from exc
    finally:
        partial.unlink(missing_ok=True)
    return target


def plugin_lines(plugin: Path) -> list[str]:
    """mosquitto.conf lines that load the guard; they go before dynamic security's."""
    return [
        f"plugin {plugin}",
        f"plugin_opt_bootstrap_username {protocol.BOOTSTRAP_USERNAME}",
        f"plugin_opt_reserved_prefixes {','.join(RESERVED_CLIENT_ID_PREFIXES)}",
    ]
