"""Two-factor sign-in: TOTP codes (RFC 6238) and one-time recovery codes.

No I/O and no clock of its own: the account service (hub/services/local_accounts.py) passes
`now_s` in, keeps the secret and the hashes, and records which time step was
used last, so each code works once (RFC 6238 §5.2). The web never sees a stored
secret or a recovery code hash.

The parameters are the ones every authenticator app assumes when the
otpauth:// URI names none: SHA-1, 6 digits, 30-second steps. One step either
side is accepted (a phone's clock a little off, a code typed as it changed),
so at most three codes are live at any time.
"""

from __future__ import annotations

import hmac
import re
import secrets

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from hub.core.accounts import TotpEnrolment

ISSUER = "LinkHub"
STEP_S = 30
DIGITS = 6
VALID_WINDOW = 1  # steps either side of now
RECOVERY_CODE_COUNT = 10
# Crockford's base32 alphabet: no i, l, o or u, so nothing reads as another
# character; 12 characters of it are 60 random bits per recovery code.
_RECOVERY_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_RECOVERY_LENGTH = 12
_RECOVERY_GROUP = 4
_RECOVERY_LOOKALIKES = str.maketrans({"o": "0", "i": "1", "l": "1"})
_TOTP_INPUT = re.compile(rf"[0-9]{{{DIGITS}}}")
_MAX_TYPED = 64  # longer input is no code of ours; not worth scanning

# A recovery code carries 60 random bits, so no amount of hashing effort is what
# protects it (a guesser cannot enumerate 2^60); argon2 is there so a copied
# database does not hand out working codes. Lighter settings than passwords get
# keep checking a code against all ten of an account's hashes well under a
# second on a Raspberry Pi.
_recovery_hasher = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)


def new_enrolment(account_name: str) -> TotpEnrolment:
    """160 random bits (RFC 4226 §4 recommends at least that for HMAC-SHA-1)."""
    secret = pyotp.random_base32(length=32)
    uri = pyotp.TOTP(secret).provisioning_uri(name=account_name, issuer_name=ISSUER)
    return TotpEnrolment(secret, uri)


def is_secret(text: str) -> bool:
    """A base32 secret as new_enrolment makes them (what the web hands back to confirm)."""
    return bool(re.fullmatch(r"[A-Z2-7]{32}", text))


def looks_like_totp(code: str) -> bool:
    return bool(_TOTP_INPUT.fullmatch(_squeeze(code)))


def matching_step(secret: str, code: str, now_s: float, *, after_step: int | None) -> int | None:
    """The time step `code` belongs to, if it is a live code newer than `after_step`.

    Steps at or before `after_step` (the last one accepted) are refused, which
    stops both a replay of the same code and the use of an older code still
    inside the window once a newer one was used.
    """
    code = _squeeze(code)
    if not _TOTP_INPUT.fullmatch(code):
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_S)
    now_step = int(now_s // STEP_S)
    for step in range(now_step - VALID_WINDOW, now_step + VALID_WINDOW + 1):
        if after_step is not None and step <= after_step:
            continue
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def new_recovery_codes() -> list[str]:
    """Ten codes, each written "abcd-efgh-jkmn" to be copied by hand."""
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
        groups = [raw[i : i + _RECOVERY_GROUP] for i in range(0, _RECOVERY_LENGTH, _RECOVERY_GROUP)]
        codes.append("-".join(groups))
    return codes


def normalise_recovery_code(typed: str) -> str | None:
    """What a person typed, as the code it means: case, dashes, spaces and look-alikes forgiven."""
    squeezed = _squeeze(typed).lower().translate(_RECOVERY_LOOKALIKES)
    if len(squeezed) != _RECOVERY_LENGTH or any(c not in _RECOVERY_ALPHABET for c in squeezed):
        return None
    return squeezed


def hash_recovery_code(code: str) -> str:
    normalised = normalise_recovery_code(code)
    if normalised is None:
        raise ValueError("not a recovery code")
    return _recovery_hasher.hash(normalised)


def recovery_code_matches(stored_hash: str, normalised: str) -> bool:
    try:
        return _recovery_hasher.verify(stored_hash, normalised)
    except (VerificationError, InvalidHashError):
        return False


def _squeeze(text: str) -> str:
    if len(text) > _MAX_TYPED:
        return ""
    return "".join(c for c in text if not c.isspace() and c != "-")
