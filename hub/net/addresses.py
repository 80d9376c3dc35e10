"""The machine's own addresses: for the URLs the hub prints and hands out, and
for choosing where the hub advertises itself over mDNS.

Both follow one rule: an address counts as "the home network" only if it is an
RFC 1918 private IPv4 address (10/8, 172.16/12, 192.168/16). Python's
`is_private` is broader (it also says yes to the documentation, benchmarking,
link-local and reserved ranges, e.g. 192.0.2.0/24 or 198.18/15), and a hub must
never multicast onto a network that is not somebody's LAN.

The selection functions are pure (they take the address list), so they are
tested with fake lists; only `interface_addresses()` reads the machine.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import ifaddr  # comes with zeroconf

RFC1918_NETWORKS = (
    ipaddress.IPv4Network("10.0.0.0/8"),
    ipaddress.IPv4Network("172.16.0.0/12"),
    ipaddress.IPv4Network("192.168.0.0/16"),
)


class InterfaceAddress(NamedTuple):
    """One IPv4 address of one interface, e.g. ("wlan0", "192.168.1.20")."""

    interface: str
    address: str


def interface_addresses() -> list[InterfaceAddress]:
    """Every IPv4 address of every interface, read from the interfaces
    (never by opening a socket towards the outside)."""
    return [
        InterfaceAddress(adapter.nice_name, ip.ip)
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
        if isinstance(ip.ip, str)  # IPv6 entries are tuples
    ]


def is_home_network(address: str) -> bool:
    """True for an RFC 1918 IPv4 address: what a home LAN uses."""
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return False
    return any(ip in network for network in RFC1918_NETWORKS)


def home_network_addresses(addresses: Iterable[InterfaceAddress]) -> list[str]:
    """The RFC 1918 addresses among `addresses`, in order, without repeats."""
    found: list[str] = []
    for entry in addresses:
        if is_home_network(entry.address) and entry.address not in found:
            found.append(entry.address)
    return found


def lan_addresses(addresses: Iterable[InterfaceAddress] | None = None) -> list[str]:
    """This machine's home-network (RFC 1918) IPv4 addresses, loopback excluded."""
    return home_network_addresses(interface_addresses() if addresses is None else addresses)


def _ipv4(text: str) -> str | None:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        return None


def unknown_mdns_interfaces(requested: Sequence[str], addresses: Iterable[InterfaceAddress]) -> list[str]:
    """The entries of `--mdns-interface` that name neither an interface nor one
    of its IPv4 addresses: checked once at start so a typo fails loudly."""
    known = list(addresses)
    names = {entry.interface for entry in known}
    ips = {entry.address for entry in known}
    return [item for item in requested if item not in names and _ipv4(item) not in ips]


def mdns_addresses(requested: Sequence[str], addresses: Iterable[InterfaceAddress]) -> list[str]:
    """The IPv4 addresses the hub binds mDNS to and advertises.

    `requested` is what `--mdns-interface` gave (interface names or IPv4
    addresses); an interface stands for all its IPv4 addresses, whatever their
    range, because a person chose it. With nothing requested, only home-network
    (RFC 1918) addresses are used: possibly none, and then nothing is sent.
    Entries that match nothing right now are skipped, so this never raises and
    can be called again whenever the addresses change.
    """
    known = list(addresses)
    if not requested:
        return home_network_addresses(known)
    chosen: list[str] = []
    for item in requested:
        ip = _ipv4(item)
        for entry in known:
            if (entry.interface == item or entry.address == ip) and entry.address not in chosen:
                chosen.append(entry.address)
    return chosen
