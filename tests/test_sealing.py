"""Sealed credentials without a broker: the hub seals (hub/core/sealing.py), the
device opens (firmware_sim/keys.py), and only the right key opens."""

from __future__ import annotations

import base64
import json
import re
import secrets
from pathlib import Path

import pytest
from nacl.public import PrivateKey, SealedBox

import linkhub_protocol as protocol
from firmware_sim import keys
from hub.core import sealing
from linkhub_protocol import ApprovedReply, LinkCredentials, MqttCredentials

REQUEST_ID = secrets.token_urlsafe(24)
DEVICE_ID = "dev-0a1b2c3d4e5f"


def approved(public_key: str, password: str = "Wc1y0kq2m4JbXo7UeR9tFh3sL6vN8aPd") -> ApprovedReply:
    credentials = LinkCredentials(
        REQUEST_ID, DEVICE_ID, MqttCredentials("192.168.1.10", 1884, DEVICE_ID, DEVICE_ID, password)
    )
    sealed = sealing.seal(public_key, protocol.encode(credentials))
    return ApprovedReply(REQUEST_ID, DEVICE_ID, sealed)


def test_sealed_credentials_open_with_the_devices_key_only() -> None:
    private_key = keys.new_private_key()
    password = secrets.token_urlsafe(24)
    reply = approved(keys.public_key(private_key), password)
    opened = keys.open_credentials(private_key, reply)
    assert opened == MqttCredentials("192.168.1.10", 1884, DEVICE_ID, DEVICE_ID, password)
    # Neither the reply on the wire nor its base64 box shows the password.
    wire = protocol.encode(reply)
    assert password.encode() not in wire and DEVICE_ID.encode() in wire
    assert password.encode() not in base64.b64decode(reply.sealed_credentials)
    with pytest.raises(keys.UnreadableCredentials):
        keys.open_credentials(keys.new_private_key(), reply)  # another device's key


def test_each_seal_is_new() -> None:
    """An ephemeral key per box: a re-sent approval is not the same bytes twice."""
    public_key = keys.public_key(keys.new_private_key())
    assert approved(public_key).sealed_credentials != approved(public_key).sealed_credentials


def test_a_tampered_box_does_not_open() -> None:
    private_key = keys.new_private_key()
    box = bytearray(base64.b64decode(approved(keys.public_key(private_key)).sealed_credentials))
    box[-1] ^= 1
    tampered = ApprovedReply(REQUEST_ID, DEVICE_ID, base64.b64encode(bytes(box)).decode())
    with pytest.raises(keys.UnreadableCredentials):
        keys.open_credentials(private_key, tampered)


def test_a_box_moved_to_another_reply_is_refused() -> None:
    private_key = keys.new_private_key()
    reply = approved(keys.public_key(private_key))
    moved = ApprovedReply(secrets.token_urlsafe(24), DEVICE_ID, reply.sealed_credentials)
    with pytest.raises(keys.UnreadableCredentials, match="another request"):
        keys.open_credentials(private_key, moved)


def test_what_is_sealed_is_documented_json() -> None:
    """docs/protocol.md names the plaintext; firmware with libsodium parses exactly this."""
    private_key = keys.new_private_key()
    reply = approved(keys.public_key(private_key), "pw-123")
    raw = SealedBox(PrivateKey(base64.b64decode(private_key))).decrypt(
        base64.b64decode(reply.sealed_credentials)
    )
    assert json.loads(raw) == {
        "v": 1,
        "type": "link_credentials",
        "request_id": REQUEST_ID,
        "device_id": DEVICE_ID,
        "mqtt": {
            "host": "192.168.1.10",
            "port": 1884,
            "client_id": DEVICE_ID,
            "username": DEVICE_ID,
            "password": "pw-123",
        },
    }
    assert len(base64.b64decode(reply.sealed_credentials)) == len(raw) + 48  # crypto_box_SEALBYTES


# Small-order points of Curve25519: sealing to one would give a shared secret
# anyone can compute, so libsodium refuses them (and the hub refuses the request).
SMALL_ORDER = [
    bytes(32),
    bytes([1]) + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]


@pytest.mark.parametrize("raw", SMALL_ORDER, ids=[f"point{i}" for i in range(len(SMALL_ORDER))])
def test_small_order_keys_are_not_usable(raw: bytes) -> None:
    key = base64.b64encode(raw).decode()
    assert not sealing.is_usable(key)
    with pytest.raises((sealing.UnusablePublicKey, protocol.ProtocolError)):
        sealing.seal(key, b"secret")


def _seals(key: str) -> bool:
    try:
        sealing.seal(key, b"secret")
    except (sealing.UnusablePublicKey, protocol.ProtocolError):
        return False
    return True


_P = 2**255 - 19
# The small-order points, also spelled past p (0 as p, 1 as p + 1) and with the
# top bit set (X25519 ignores it); their neighbours; ordinary keys.
_SPELLINGS = [*SMALL_ORDER, (_P).to_bytes(32, "little"), (_P + 1).to_bytes(32, "little")]
KEYS_TO_COMPARE = [
    *_SPELLINGS,
    *(raw[:31] + bytes([raw[31] | 0x80]) for raw in _SPELLINGS),
    *(((int.from_bytes(raw, "little") + 1) % 2**256).to_bytes(32, "little") for raw in _SPELLINGS),
    (_P - 2).to_bytes(32, "little"),
    *(secrets.token_bytes(32) for _ in range(50)),
]


@pytest.mark.parametrize("raw", KEYS_TO_COMPARE)
def test_the_quick_key_check_agrees_with_sealing(raw: bytes) -> None:
    """is_usable compares with the list of small-order points: it must refuse
    exactly the keys that sealing (libsodium) refuses."""
    key = base64.b64encode(raw).decode()
    assert sealing.is_usable(key) == _seals(key)


@pytest.mark.parametrize("key", ["", "AAAA", "x" * 44, base64.b64encode(secrets.token_bytes(31)).decode()])
def test_malformed_keys_are_refused(key: str) -> None:
    assert not sealing.is_usable(key)
    with pytest.raises(protocol.ProtocolError):
        sealing.seal(key, b"secret")


def test_a_fresh_device_key_is_usable() -> None:
    assert sealing.is_usable(keys.public_key(keys.new_private_key()))


@pytest.mark.parametrize("saved", ["", "not base64!", base64.b64encode(b"short").decode()])
def test_a_damaged_saved_key_is_reported(saved: str) -> None:
    with pytest.raises(ValueError, match="link key"):
        keys.public_key(saved)


def test_the_documented_example_box_opens_to_the_documented_credentials() -> None:
    """docs/protocol.md, section 6.2, gives firmware a test vector: a box, the
    private key that opens it and the JSON inside. It must stay true."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    section = doc.split("### 6.2", 1)[1].split("### 6.3", 1)[0]
    box = re.search(r'"sealed_credentials": "([A-Za-z0-9+/=]+)"', section)
    private_key = re.search(r"private key\s+`([A-Za-z0-9+/]{43}=)`", section)
    inside = re.search(r'```json\n(\{\n  "v": 1,\n  "type": "link_credentials".*?\n\})\n```', section, re.S)
    example_request = re.search(r'"public_key": "([A-Za-z0-9+/]{43}=)"', doc)
    assert box and private_key and inside and example_request
    key = PrivateKey(base64.b64decode(private_key[1]))
    assert base64.b64encode(bytes(key.public_key)).decode() == example_request[1]
    opened = SealedBox(key).decrypt(base64.b64decode(box[1]))
    assert opened == protocol.encode(protocol.parse_link_credentials(opened))  # type: ignore[arg-type]
    assert json.loads(opened) == json.loads(inside[1])
    assert opened == json.dumps(json.loads(inside[1]), separators=(",", ":")).encode()  # the compact form
