"""A guest flooding the public bootstrap login, written as bare MQTT 5 packets on
a socket: as fast as one thread can write, without a client library's
bookkeeping. Used by tests/test_bootstrap_flood.py (a few seconds) and
bench/bootstrap_flood.py (30 s). Loopback only; every loop ends at its deadline.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from dataclasses import dataclass, field

import linkhub_protocol as protocol


def _varint(value: int) -> bytes:
    """MQTT 5 §1.5.5 Variable Byte Integer."""
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _string(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def connect_packet(client_id: str, username: str, password: str) -> bytes:
    """CONNECT, MQTT 5 (§3.1): clean start, username and password, no properties."""
    body = _string("MQTT") + bytes([5, 0xC2]) + (60).to_bytes(2, "big") + b"\x00"
    body += _string(client_id) + _string(username) + _string(password)
    return b"\x10" + _varint(len(body)) + body


def publish_packet(topic: str, payload: bytes, *, response_topic: str | None, retain: bool) -> bytes:
    """PUBLISH at QoS 0 (§3.3), with a Response Topic (property 0x08) if given."""
    properties = b"" if response_topic is None else b"\x08" + _string(response_topic)
    body = _string(topic) + _varint(len(properties)) + properties + payload
    return bytes([0x30 | (1 if retain else 0)]) + _varint(len(body)) + body


@dataclass
class FloodCounts:
    sent: int = 0
    bytes_sent: int = 0
    connections: int = 0
    disconnects: int = 0
    errors: list[str] = field(default_factory=list)


class Flooder(threading.Thread):
    """One connection on the bootstrap login sending one kind of publish until the
    deadline, reconnecting whenever the broker drops it (as it does for a packet
    over its max_packet_size)."""

    def __init__(
        self,
        port: int,
        *,
        payload_bytes: int,
        retain: bool = False,
        reply_to: str | None = None,
        duration_s: float,
        new_topic_each: bool = False,
        max_messages: int | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.client_id = f"guest-{secrets.token_hex(6)}"
        self.payload = (b'{"v": 1, "type": "link_request", "pad": "' + b"x" * payload_bytes)[:payload_bytes]
        self.retain = retain
        self.reply_to = reply_to
        self.duration_s = duration_s
        self.new_topic_each = new_topic_each
        self.max_messages = max_messages
        self.counts = FloodCounts()

    def _packet(self) -> bytes:
        # With `new_topic_each`, every retained publish parks under an id of its own.
        client = f"{self.client_id}-{self.counts.sent}" if self.new_topic_each else self.client_id
        topic = protocol.link_request_topic(client)
        return publish_packet(topic, self.payload, response_topic=self.reply_to, retain=self.retain)

    def _enough(self) -> bool:
        return self.max_messages is not None and self.counts.sent >= self.max_messages

    def run(self) -> None:
        deadline = time.monotonic() + self.duration_s
        fixed = None if self.new_topic_each else self._packet()
        while time.monotonic() < deadline and not self._enough():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                    login = (protocol.BOOTSTRAP_USERNAME, protocol.BOOTSTRAP_PASSWORD)
                    sock.sendall(connect_packet(self.client_id, *login))
                    if sock.recv(4)[:1] != b"\x20":  # CONNACK
                        self.counts.errors.append("no CONNACK")
                        continue
                    self.counts.connections += 1
                    while time.monotonic() < deadline and not self._enough():
                        packet = fixed or self._packet()
                        sock.sendall(packet)
                        self.counts.sent += 1
                        self.counts.bytes_sent += len(packet)
            except OSError:
                self.counts.disconnects += 1


def rss_kb(pid: int | str = "self") -> int:
    """Resident memory of a process from /proc/PID/status (VmRSS), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")
