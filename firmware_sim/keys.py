"""The device's link key: an X25519 key pair made for one link attempt.

The device sends the public half in its link request; the hub seals the
credentials to it (libsodium's crypto_box_seal), and only this private half
opens them (crypto_box_seal_open), so another client on the broker or someone
listening on the LAN sees a sealed box, not a password. The private key is
kept with the pending request in the state file (mode 0600), so a device
restarted mid-link can still open the answer to the request it resends.

PyNaCl here, not hub/core/sealing.py: firmware_sim may import nothing from the hub
but linkhub_protocol, as real firmware would have only libsodium.
"""

from __future__ import annotations

import base64
import binascii

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, SealedBox

from linkhub_protocol import (
    ApprovedReply,
    MqttCredentials,
    ProtocolError,
    Rejection,
    approved_credentials,
    decode_sealed,
)


class UnreadableCredentials(Exception):
    """The approved reply's sealed box does not open with this key, or holds no credentials."""


def new_private_key() -> str:
    """A fresh X25519 private key (32 random bytes), base64, for the state file."""
    return base64.b64encode(bytes(PrivateKey.generate())).decode("ascii")


def _private(private_key_b64: str) -> PrivateKey:
    try:
        raw = base64.b64decode(private_key_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"the saved link key is not base64: {exc}") from None
    if len(raw) != PrivateKey.SIZE:
        raise ValueError(f"the saved link key has {len(raw)} bytes, not {PrivateKey.SIZE}")
    return PrivateKey(raw)


def public_key(private_key_b64: str) -> str:
    """The public half, as the link request carries it (standard padded base64).

    Raises ValueError if the saved private key is not 32 bytes of base64.
    """
    return base64.b64encode(bytes(_private(private_key_b64).public_key)).decode("ascii")


def open_credentials(private_key_b64: str, reply: ApprovedReply) -> MqttCredentials:
    """The broker identity sealed in `reply`. Raises UnreadableCredentials."""
    try:
        plaintext = SealedBox(_private(private_key_b64)).decrypt(decode_sealed(reply.sealed_credentials))
    except (CryptoError, ProtocolError, ValueError) as exc:
        raise UnreadableCredentials(
            f"the sealed credentials do not open with this device's key ({exc})"
        ) from None
    credentials = approved_credentials(reply, plaintext)
    if isinstance(credentials, Rejection):
        raise UnreadableCredentials(credentials.description)
    return credentials
