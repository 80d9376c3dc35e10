"""Advertising the hub on the home network over mDNS / DNS-SD (RFC 6762, 6763).

Devices find the hub's broker as `_linkhub._tcp.local.` and people's browsers
find its web page as `_http._tcp.local.`, both under one stable host name
(`linkhub.local.` by default). It is only a convenience: a device can always be
given the broker's address instead, so mDNS trouble is logged and never stops
the hub.

This module alone owns python-zeroconf, as hub/broker/connection.py alone owns paho. The
records are built by pure functions (`txt_records`, `broker_host_for_txt`) and
the address choice lives in hub/net/addresses.py, so both are tested without a
network.

Addresses: zeroconf binds one socket per address it is given, so when the
machine's addresses change (DHCP, Wi-Fi roaming, a Pi that booted before its
network came up) an `update_service` on the old sockets would not reach a new
network. The advertiser therefore polls the interfaces every few seconds and,
when the set changes, says goodbye on the old sockets and registers again on
new ones.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from zeroconf import IPVersion, NonUniqueNameException, ServiceInfo, Zeroconf

from hub.errors import ConfigError
from hub.net.addresses import interface_addresses, mdns_addresses, unknown_mdns_interfaces
from linkhub_protocol import MDNS_SERVICE_TYPE, PROTOCOL_VERSION

log = logging.getLogger(__name__)

HTTP_SERVICE_TYPE = "_http._tcp.local."
LINK_PATH = "/link"
DEFAULT_POLL_INTERVAL_S = 5.0
NO_HOME_NETWORK = (
    "mDNS: no interface with a home-network (RFC 1918) address; pass --mdns-interface to choose one"
)
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})


@dataclass(frozen=True, slots=True)
class HubAnnouncement:
    """What the hub says about itself, apart from its addresses (which change).

    `broker_host` is where devices are told to connect when it is not simply
    this machine (an external broker); None when the hub's own broker listens
    on every address. `http_host` is where the web page listens.
    """

    label: str
    hub_id: str
    mqtt_port: int
    http_port: int
    broker_host: str | None = None
    http_host: str = "0.0.0.0"
    # The broker's TLS port (same host as mqtt_port), when it listens with TLS.
    mqtt_tls_port: int | None = None

    @property
    def host_name(self) -> str:
        return f"{self.label}.local."


def broker_host_for_txt(announcement: HubAnnouncement, addresses: Sequence[str]) -> str | None:
    """The `mqtt_host` TXT value, or None when a device reaches the broker at
    the address it resolved for the hub (the usual case).

    Loopback and wildcards mean "this machine", and so does the hub's own mDNS
    name: saying so in TXT would only send devices to their own loopback.
    """
    host = announcement.broker_host
    if host is None or host in _WILDCARDS or host in addresses:
        return None
    if host.lower().rstrip(".") in ("localhost", announcement.host_name.rstrip(".")):
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:  # a host name
        pass
    return host


def txt_records(announcement: HubAnnouncement, addresses: Sequence[str]) -> dict[str, str]:
    """The `_linkhub._tcp` TXT record (docs/protocol.md, "Finding the hub").

    `v` comes first: a device reads it to decide whether it may talk to this
    hub at all. Values are strings, as TXT holds text.
    """
    txt = {"v": str(PROTOCOL_VERSION), "mqtt_port": str(announcement.mqtt_port)}
    mqtt_host = broker_host_for_txt(announcement, addresses)
    if mqtt_host is not None:
        txt["mqtt_host"] = mqtt_host
    if announcement.mqtt_tls_port is not None:
        txt["mqtt_tls_port"] = str(announcement.mqtt_tls_port)
    txt |= {
        "link_path": LINK_PATH,
        "http_port": str(announcement.http_port),
        "hub_id": announcement.hub_id,
        "name": announcement.label,
    }
    return txt


def serves_web_page(announcement: HubAnnouncement, addresses: Sequence[str]) -> bool:
    """Whether the web page answers on the advertised addresses: a page bound to
    one address elsewhere must not be announced as `_http._tcp` here."""
    return announcement.http_host in _WILDCARDS or announcement.http_host in addresses


def service_infos(announcement: HubAnnouncement, addresses: Sequence[str]) -> list[ServiceInfo]:
    """The records to register: the broker for devices, the web page for people."""
    infos = [
        ServiceInfo(
            MDNS_SERVICE_TYPE,
            f"{announcement.label}.{MDNS_SERVICE_TYPE}",
            port=announcement.mqtt_port,
            properties=txt_records(announcement, addresses),
            server=announcement.host_name,
            parsed_addresses=list(addresses),
        )
    ]
    if serves_web_page(announcement, addresses):
        infos.append(
            ServiceInfo(
                HTTP_SERVICE_TYPE,
                f"{announcement.label}.{HTTP_SERVICE_TYPE}",
                port=announcement.http_port,
                properties={"path": LINK_PATH},
                server=announcement.host_name,
                parsed_addresses=list(addresses),
            )
        )
    return infos


class HubAdvertiser:
    """Keeps the hub's records registered on `addresses`, and follows address
    changes when given `find_addresses`.

    Registering probes the network for about 1.7 s, so it happens on the
    advertiser's own thread and `start()` returns at once; `wait_advertised()`
    is for whoever needs to know it is done (tests).
    """

    def __init__(
        self,
        announcement: HubAnnouncement,
        addresses: list[str],
        *,
        find_addresses: Callable[[], list[str]] | None = None,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    ) -> None:
        self.announcement = announcement
        self._initial = list(addresses)
        self._addresses: list[str] = []
        self._find_addresses = find_addresses
        self._poll_interval_s = poll_interval_s
        self._zeroconf: Zeroconf | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._advertised = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_problem: str | None = None

    @property
    def addresses(self) -> list[str]:
        """Where the records are registered right now (empty: nowhere)."""
        return list(self._addresses) if self._zeroconf is not None else []

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mdns", daemon=True)
        self._thread.start()

    def wait_advertised(self, timeout_s: float) -> bool:
        return self._advertised.wait(timeout_s)

    def stop(self) -> None:
        """Say goodbye (so browsers drop the hub now, not when the TTL runs
        out) and close the sockets."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if not self._lock.acquire(timeout=5):
            log.warning("mDNS: still busy registering; not waiting to unregister")
            return
        try:
            self._withdraw()
        finally:
            self._lock.release()

    # --- the advertiser's thread ------------------------------------------------
    def _run(self) -> None:
        self._apply(self._initial)
        while not self._stop.wait(self._poll_interval_s):
            if self._find_addresses is None:
                if self._zeroconf is None and self._initial:
                    self._apply(self._initial)  # retry after a failure
                continue
            try:
                current = self._find_addresses()
            except Exception:  # reading interfaces must never end the advertising
                log.exception("mDNS: cannot read the interface addresses; trying again")
                continue
            if current != self._addresses or (current and self._zeroconf is None):
                if current != self._addresses:
                    log.info(
                        "mDNS: addresses changed from %s to %s", self._addresses or "none", current or "none"
                    )
                self._apply(current)

    def _apply(self, addresses: list[str]) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            self._withdraw()
            self._addresses = list(addresses)
            if not addresses:
                return
            try:
                zeroconf = Zeroconf(interfaces=list(addresses), ip_version=IPVersion.V4Only)
            except Exception as exc:  # mDNS trouble must never stop the hub
                self._problem(f"mDNS: cannot listen on {', '.join(addresses)} ({exc}); retrying")
                return
            try:
                _register(zeroconf, service_infos(self.announcement, addresses))
            except NonUniqueNameException:
                zeroconf.close()
                self._problem(
                    f"mDNS: another device here already uses the name {self.announcement.label!r}; "
                    "choose another with --mdns-name NAME (retrying meanwhile)"
                )
                return
            except Exception as exc:  # OSError, zeroconf's errors, a timeout: log, retry
                zeroconf.close()
                self._problem(f"mDNS: could not advertise the hub ({exc!r}); retrying")
                return
            self._zeroconf = zeroconf
            self._last_problem = None
            self._advertised.set()
            log.info(
                "mDNS: advertising %s (%s, broker port %d) on %s",
                self.announcement.host_name,
                MDNS_SERVICE_TYPE,
                self.announcement.mqtt_port,
                ", ".join(addresses),
            )

    def _withdraw(self) -> None:
        """Goodbye packets, then close. The caller holds the lock."""
        zeroconf, self._zeroconf = self._zeroconf, None
        if zeroconf is None:
            return
        try:
            zeroconf.unregister_all_services()
        except Exception:  # the old network may be gone already; closing still matters
            log.debug("mDNS: goodbye not sent", exc_info=True)
        try:
            zeroconf.close()
        except Exception:
            log.debug("mDNS: close failed", exc_info=True)
        log.info("mDNS: stopped advertising on %s", ", ".join(self._addresses))

    def _problem(self, message: str) -> None:
        """Log a failure once, not at every retry."""
        if message != self._last_problem:
            log.warning("%s", message)
            self._last_problem = message


def _register(zeroconf: Zeroconf, infos: list[ServiceInfo], timeout_s: float = 10.0) -> None:
    """Register all records at once: each registration probes for about 1.7 s,
    and one after the other would double the wait before a device can find us."""

    async def register_all() -> None:
        broadcasts = await asyncio.gather(*(zeroconf.async_register_service(info) for info in infos))
        await asyncio.gather(*broadcasts)

    assert zeroconf.loop is not None
    asyncio.run_coroutine_threadsafe(register_all(), zeroconf.loop).result(timeout=timeout_s)


def check_interfaces(requested: Sequence[str]) -> None:
    """Refuse a `--mdns-interface` that names no interface or address here,
    at start, rather than advertise silently nowhere."""
    unknown = unknown_mdns_interfaces(requested, interface_addresses())
    if unknown:
        raise ConfigError(
            f"--mdns-interface {unknown[0]}: no interface here has that name or IPv4 address "
            "(mDNS is advertised over IPv4 only)"
        )


def advertise_hub(
    announcement: HubAnnouncement,
    requested: Sequence[str] = (),
    *,
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
) -> HubAdvertiser:
    """Start advertising on the requested interfaces, or on the home-network
    (RFC 1918) ones when none were requested; follow address changes."""
    requested = tuple(requested)

    def find() -> list[str]:
        return mdns_addresses(requested, interface_addresses())

    addresses = find()
    if not addresses and not requested:
        log.warning("%s", NO_HOME_NETWORK)
    elif not addresses:
        log.warning("mDNS: %s has no IPv4 address yet; advertising once it has one", ", ".join(requested))
    advertiser = HubAdvertiser(announcement, addresses, find_addresses=find, poll_interval_s=poll_interval_s)
    advertiser.start()
    return advertiser
