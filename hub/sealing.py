"""Sealing a device's credentials to the public key it sent (libsodium sealed boxes).

The approved reply travels over plain MQTT, through a broker every unlinked
device shares. crypto_box_seal (an ephemeral X25519 key, XSalsa20-Poly1305)
makes its secret part readable only by the holder of the device's private key,
whoever else subscribes or listens on the LAN. A sealed box is anonymous: it
gives confidentiality, not proof that the hub wrote it; that the reply came
from the hub rests on the broker's ACLs (only the hub may publish to reply
topics). docs/protocol.md, "Sealed credentials", says what a device does.

The hub side only: firmware_sim opens boxes with PyNaCl itself, since it may
import nothing from the hub but hub/protocol.py.
"""

from __future__ import annotations

import base64

from nacl.exceptions import CryptoError
from nacl.public import PublicKey, SealedBox

from hub.errors import LinkHubError
from hub.protocol import decode_public_key


class UnusablePublicKey(LinkHubError):
    """libsodium refuses to seal to this key (a small-order point): nobody could open it."""


def seal(public_key_b64: str, plaintext: bytes) -> str:
    """`plaintext` sealed to the device's X25519 key, as standard base64.

    Raises ProtocolError for a key that is not 32 bytes of canonical base64,
    UnusablePublicKey for one libsodium will not use.
    """
    box = SealedBox(PublicKey(decode_public_key(public_key_b64)))
    try:
        sealed = box.encrypt(plaintext)
    except (CryptoError, RuntimeError) as exc:
        # PyNaCl 1.5+ reports libsodium's refusal of a small-order point as a RuntimeError.
        raise UnusablePublicKey("libsodium refuses this public key (a small-order point)") from exc
    return base64.b64encode(sealed).decode("ascii")


def is_usable(public_key_b64: str) -> bool:
    """Whether credentials can be sealed to this key: checked when a request
    arrives, so a bad key is refused then, not after a person approved."""
    try:
        seal(public_key_b64, b"")
    except (ValueError, UnusablePublicKey):
        return False
    return True
