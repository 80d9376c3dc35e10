"""The machine's own LAN addresses, for the URLs the hub prints and hands out."""

from __future__ import annotations

import ipaddress

import ifaddr  # comes with zeroconf


def lan_addresses() -> list[str]:
    """Private IPv4 addresses of this machine's interfaces, loopback excluded.

    Read from the interfaces, never by opening a socket towards the outside.
    """
    found = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if not isinstance(ip.ip, str):
                continue
            address = ipaddress.IPv4Address(ip.ip)
            if address.is_private and not address.is_loopback and not address.is_link_local:
                found.append(str(address))
    return found
