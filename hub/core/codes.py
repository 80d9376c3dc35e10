"""User codes: making them and reading back what a person typed (RFC 8628 §6.1)."""

from __future__ import annotations

import random
import re

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


# A code inside other text: 8 letters, maybe with one separator in the middle,
# standing on their own (not part of a longer word).
_EMBEDDED = re.compile(r"(?<![A-Za-z])([A-Za-z]{4})[ \-_.]?([A-Za-z]{4})(?![A-Za-z])")


def find_in(text: str) -> str | None:
    """The code in what was pasted ("Code: fznd-jkqv", "your code is BCDF GHJK."),
    canonical; None unless exactly one code is in it (two would be a guess)."""
    whole = normalise(text)
    if whole is not None:
        return whole
    found = {
        normalised
        for first, second in _EMBEDDED.findall(text)
        if (normalised := normalise(first + second)) is not None
    }
    return found.pop() if len(found) == 1 else None


def why_not(typed: str) -> str:
    """What is wrong with something that is not a code, in a person's words."""
    cleaned = typed.translate(_SEPARATORS).upper()
    if not cleaned:
        return "Type the code your device shows: 8 letters like BCDF-GHJK."
    strangers = sorted({ch for ch in cleaned if ch not in ALPHABET})
    if strangers:
        shown = ", ".join(strangers[:5])
        return (
            f"Codes use only the consonants {ALPHABET[:3]}…{ALPHABET[-3:]} (no vowels, digits or Y), "
            f"so {shown} cannot be in one. Check the code on your device's screen."
        )
    letters = "letter" if len(cleaned) == 1 else "letters"
    return (
        f"That is {len(cleaned)} {letters}; codes have {CODE_LENGTH}. Check the code on your device's screen."
    )
