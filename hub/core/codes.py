"""User codes: making them and reading back what a person typed (RFC 8628 §6.1)."""

from __future__ import annotations

import random

# Consonants only: no vowels means no words, and nothing that reads as 0/O or 1/I.
ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
CODE_LENGTH = 8
_SEPARATORS = str.maketrans("", "", " -_.\t")


_CODE_SPACE = len(ALPHABET) ** CODE_LENGTH


def generate(rng: random.Random) -> str:
    """A fresh code in its canonical form, without the dash (8 chars, ~34.5 bits).

    Pass `random.SystemRandom()` in production; tests pass a seeded RNG. One
    draw from the whole code space, written in base 20: a `choice` per letter
    read the system's random source about 13 times a code (docs/performance.md).
    """
    number = rng.randrange(_CODE_SPACE)
    letters = []
    for _ in range(CODE_LENGTH):
        number, digit = divmod(number, len(ALPHABET))
        letters.append(ALPHABET[digit])
    return "".join(letters)


def display(code: str) -> str:
    """XXXX-XXXX, the form shown on the device and the page."""
    return f"{code[:4]}-{code[4:]}"


def normalise(typed: str) -> str | None:
    """Canonical form of what a person typed, or None if it cannot be a code.

    Case, dashes and spaces are forgiven (RFC 8628 §6.1).
    """
    cleaned = typed.translate(_SEPARATORS).upper()
    if len(cleaned) != CODE_LENGTH or any(ch not in ALPHABET for ch in cleaned):
        return None
    return cleaned
