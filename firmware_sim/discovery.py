"""Finding a hub on the local network over mDNS / DNS-SD (RFC 6762, 6763).

The device side of hub/net/mdns.py: browse for `_linkhub._tcp.local.`, read each
answer's TXT record (docs/protocol.md, "Finding the hub"), and hand back every
hub that speaks our protocol version. Discovery only saves typing: a device
given `--hub mqtt://HOST:PORT` never multicasts at all.

Like the rest of firmware_sim this imports nothing from LinkHub but
linkhub_protocol, so the small "home network" rule (RFC 1918 addresses only) is
written again here rather than imported from hub.net.addresses: a device must not
multicast onto a network that is not somebody's LAN either.
"""

from __future__ import annotations

import ipaddress
import queue
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ifaddr
from zeroconf import DNSQuestionType, IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

from firmware_sim.events import Event, error
from linkhub_protocol import MDNS_SERVICE_TYPE, PROTOCOL_VERSION

DEFAULT_DISCOVER_TIMEOUT_S = 5.0
# Every responder answers a query within about 120 ms (RFC 6762 §6), so once a
# hub has answered, a second of silence means nobody else is going to.
SETTLE_S = 1.0
_RFC1918 = (
    ipaddress.IPv4Network("10.0.0.0/8"),
    ipaddress.IPv4Network("172.16.0.0/12"),
    ipaddress.IPv4Network("192.168.0.0/16"),
)
HINT = "to use another: --hub-name NAME or --hub mqtt://HOST:PORT"


class NoNetwork(Exception):
    """There is no home-network address to browse from (and none was given)."""


@dataclass(frozen=True, slots=True)
class FoundHub:
    """One hub that answered. `host` and `port` are where its broker is: the TXT
    `mqtt_host` / `mqtt_port` when given, else the hub's own address and SRV port."""

    name: str
    host: str
    port: int
    hub_id: str | None = None
    server: str | None = None
    addresses: tuple[str, ...] = ()
    txt: Mapping[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def tls_port(self) -> int | None:
        """The broker's TLS port (TXT `mqtt_tls_port`, same host), if it listens with TLS."""
        return _port(self.txt.get("mqtt_tls_port"))

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "host": self.host, "port": self.port}


def is_home_network(address: str) -> bool:
    """RFC 1918 IPv4 only: the same rule as the hub's (hub/net/addresses.py)."""
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return False
    return any(ip in network for network in _RFC1918)


def home_network_addresses(addresses: Sequence[str] | None = None) -> list[str]:
    """This machine's RFC 1918 IPv4 addresses (or those among `addresses`)."""
    if addresses is None:
        addresses = [
            ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips if isinstance(ip.ip, str)
        ]
    found: list[str] = []
    for address in addresses:
        if is_home_network(address) and address not in found:
            found.append(address)
    return found


def _port(text: str | None) -> int | None:
    try:
        port = int(text) if text is not None else None
    except ValueError:
        return None
    return port if port is not None and 0 < port < 65536 else None


def hub_from_records(
    instance: str, txt: Mapping[str, str], addresses: Sequence[str], srv_port: int | None, server: str | None
) -> FoundHub | None:
    """A FoundHub from one service's records, or None when it is not a hub we
    can use (another protocol version, or no address to reach it at)."""
    if txt.get("v") != str(PROTOCOL_VERSION):
        return None
    host = txt.get("mqtt_host") or (addresses[0] if addresses else None)
    port = _port(txt.get("mqtt_port")) or _port(str(srv_port) if srv_port is not None else None)
    if not host or port is None:
        return None
    return FoundHub(
        name=instance,
        host=host,
        port=port,
        hub_id=txt.get("hub_id"),
        server=server,
        addresses=tuple(addresses),
        txt=dict(txt),
    )


def _sorted(hubs: dict[str, FoundHub]) -> list[FoundHub]:
    return sorted(hubs.values(), key=lambda hub: (hub.name.casefold(), hub.name))


def discover(
    timeout_s: float = DEFAULT_DISCOVER_TIMEOUT_S,
    interfaces: Sequence[str] | None = None,
    *,
    settle_s: float = SETTLE_S,
    until: Callable[[list[FoundHub]], bool] | None = None,
) -> list[FoundHub]:
    """Every hub that answers within `timeout_s`, sorted by name.

    Returns early once `settle_s` passed without a new hub, or once `until`
    says the hubs found so far are enough. `interfaces` are the IPv4 addresses
    to browse from; by default the home-network ones, and NoNetwork when there
    are none. OSError when zeroconf cannot open its sockets there.
    """
    binds = list(interfaces) if interfaces else home_network_addresses()
    if not binds:
        raise NoNetwork("no interface with a home-network (RFC 1918) address")
    zeroconf = Zeroconf(interfaces=binds, ip_version=IPVersion.V4Only)
    names: queue.SimpleQueue[str] = queue.SimpleQueue()

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        # Runs on zeroconf's thread: hand the name over, resolve it on ours.
        if state_change is not ServiceStateChange.Removed:
            names.put(name)

    found: dict[str, FoundHub] = {}
    suffix = "." + MDNS_SERVICE_TYPE
    deadline = time.monotonic() + timeout_s
    quiet_from: float | None = None  # when to stop if nothing new answers
    # QM questions: on loopback and on most LANs the answer comes in ~0.1 s,
    # where the default first QU question waits for a unicast reply.
    browser = ServiceBrowser(
        zeroconf, MDNS_SERVICE_TYPE, handlers=[on_change], question_type=DNSQuestionType.QM
    )
    try:
        while True:
            end = deadline if quiet_from is None else min(deadline, quiet_from)
            left = end - time.monotonic()
            if left <= 0:
                break
            try:
                name = names.get(timeout=left)
            except queue.Empty:
                break
            wait_ms = int(max(0.1, min(1.0, deadline - time.monotonic())) * 1000)
            info = zeroconf.get_service_info(
                MDNS_SERVICE_TYPE, name, timeout=wait_ms, question_type=DNSQuestionType.QM
            )
            if info is None:
                continue
            instance = name[: -len(suffix)] if name.endswith(suffix) else name
            hub = hub_from_records(
                instance,
                {key: value or "" for key, value in info.decoded_properties.items()},
                info.parsed_addresses(IPVersion.V4Only),
                info.port,
                info.server,
            )
            if hub is None:
                continue
            if instance not in found:
                quiet_from = time.monotonic() + settle_s
            found[instance] = hub  # an update replaces what we had
            if until is not None and until(_sorted(found)):
                break
    finally:
        browser.cancel()
        zeroconf.close()
    return _sorted(found)


def matches(hub: FoundHub, wanted: str) -> bool:
    """`--hub-name` matches the instance name or the TXT name, ignoring case."""
    wanted = wanted.casefold()
    return hub.name.casefold() == wanted or hub.txt.get("name", "").casefold() == wanted


def choose_hub(
    hubs: Sequence[FoundHub], wanted: str | None, timeout_s: float
) -> tuple[FoundHub | None, Event]:
    """Which hub to use, and the event that says so (or why there is none).

    Several hubs and no `--hub-name`: the first by name, and the event lists
    the others and how to pick one, so the choice is never silent.
    """
    if wanted is not None:
        chosen = next((hub for hub in hubs if matches(hub, wanted)), None)
        if chosen is None:
            answered = ", ".join(hub.name for hub in hubs) or "none"
            return None, error(
                "no_hub_found",
                f"no LinkHub named {wanted!r} answered within {timeout_s:g} s (answered: {answered}); "
                "pass --hub mqtt://HOST:PORT",
            )
        return chosen, {"event": "hub", **chosen.summary()}
    if not hubs:
        return None, error(
            "no_hub_found",
            f"no LinkHub answered on the local network within {timeout_s:g} s; pass --hub mqtt://HOST:PORT",
        )
    chosen, others = hubs[0], hubs[1:]
    event: Event = {"event": "hub", **chosen.summary()}
    if others:
        event["others"] = [hub.summary() for hub in others]
        event["hint"] = f"{len(hubs)} hubs answered; using {chosen.name!r} (first by name); {HINT}"
    return chosen, event
