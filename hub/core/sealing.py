"""Sealing a device's credentials to the public key it sent (libsodium sealed boxes).

The approved reply travels over plain MQTT, through a broker every unlinked
device shares. crypto_box_seal (an ephemeral X25519 key, XSalsa20-Poly1305)
makes its secret part readable only by the holder of the device's private key,
whoever else subscribes or listens on the LAN. A sealed box is anonymous: it
gives confidentiality, not proof that the hub wrote it; that the reply came
from the hub rests on the broker's ACLs (only the hub may publish to reply
topics). docs/protocol.md, "Sealed credentials", says what a device does.

The hub side only: firmware_sim opens boxes with PyNaCl itself, since it may
import nothing from the hub but linkhub_protocol.
"""

from __future__ import annotations

import base64

from nacl.exceptions import CryptoError
from nacl.public import PublicKey, SealedBox

from hub.errors import LinkHubError
from linkhub_protocol import decode_public_key


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


# The u-coordinates of Curve25519's points of small order, reduced mod p: 0, 1,
# p - 1 and the two of order 8. libsodium's has_small_order() refuses exactly
# these (its list also spells 0 and 1 as p and p + 1, and ignores the top bit),
# and X25519 gives the all-zero secret, which it also refuses, only for them.
_P = 2**255 - 19
_SMALL_ORDER_U = frozenset(
    {
        0,
        1,
        _P - 1,
        int.from_bytes(
            bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"), "little"
        ),
        int.from_bytes(
            bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"), "little"
        ),
    }
)


def is_usable(public_key_b64: str) -> bool:
    """Whether credentials can be sealed to this key: checked when a request
    arrives, so a bad key is refused then, not after a person approved.

    crypto_box_seal refuses a key exactly when it is a point of small order
    (above). Comparing with that list costs microseconds; sealing an empty
    message to find out cost a quarter of the hub's work for a link request on
    a slow core (docs/performance.md). tests/test_sealing.py checks the two agree.
    """
    try:
        raw = decode_public_key(public_key_b64)
    except ValueError:
        return False
    u = int.from_bytes(raw, "little") & ((1 << 255) - 1)  # X25519 ignores the top bit
    return u % _P not in _SMALL_ORDER_U
