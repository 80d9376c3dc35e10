"""The local network: the hub's addresses and its mDNS advertisement."""
