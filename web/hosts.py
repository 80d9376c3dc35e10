"""Which `Host` the pages answer to: the hub's own names and addresses only.

DNS rebinding: a page on the internet makes its own name resolve to the hub's
LAN address, and a browser on the LAN then sends the hub requests that the page
may read (same origin, as far as the browser knows), with `Host:` the
attacker's name. /setup on a fresh hub and the sign-in form are the targets,
and /link/qr builds a link from the `Host` it was given. A request whose `Host`
is not one of the hub's names or addresses is refused with 400, before anything
else is read (RFC 9110 §7.2: the origin server decides which names it serves).

Accepted: loopback (`localhost`, `127.0.0.1`, `::1`), every IPv4 address of the
machine's interfaces (read again at most every 30 s: DHCP may change them), and
the names handed in (the mDNS name, `public_host`, `web_hosts`). The port is
not compared: a port mapping in front of the hub changes it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from hub.net.addresses import interface_addresses

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_REFRESH_S = 30.0


def host_name(host: str) -> str:
    """`Host` without its port, in lower case, without a final dot: "[::1]:80" -> "::1"."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def machine_addresses() -> list[str]:
    return [entry.address for entry in interface_addresses()]


class HostCheck:
    def __init__(
        self,
        names: Iterable[str],
        addresses: Callable[[], Iterable[str]] = machine_addresses,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._names = frozenset(host_name(name) for name in (*LOOPBACK_NAMES, *names) if name.strip())
        self._addresses = addresses
        self._clock = clock
        self._lock = threading.Lock()
        self._known: frozenset[str] = frozenset()
        self._read_at: float | None = None

    def allows(self, host: str) -> bool:
        name = host_name(host)
        return name in self._names or name in self._current_addresses()

    def _current_addresses(self) -> frozenset[str]:
        now = self._clock()
        with self._lock:
            if self._read_at is None or now - self._read_at >= _REFRESH_S:
                self._known = frozenset(host_name(address) for address in self._addresses())
                self._read_at = now
            return self._known
