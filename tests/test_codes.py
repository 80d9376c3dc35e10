import random

import pytest

from hub.core import codes


def test_generated_codes_use_the_rfc8628_alphabet_and_length() -> None:
    rng = random.Random(7)
    for _ in range(500):
        code = codes.generate(rng)
        assert len(code) == 8
        assert set(code) <= set("BCDFGHJKLMNPQRSTVWXZ")


def test_codes_differ_between_draws() -> None:
    rng = random.Random(1)
    assert len({codes.generate(rng) for _ in range(200)}) == 200


def test_display_inserts_one_dash() -> None:
    assert codes.display("BCDFGHJK") == "BCDF-GHJK"


@pytest.mark.parametrize(
    "typed", ["BCDF-GHJK", "bcdf-ghjk", "bcdfghjk", " bcdf ghjk ", "Bcdf - Ghjk", "bcdf_ghjk"]
)
def test_typing_is_forgiven(typed: str) -> None:
    assert codes.normalise(typed) == "BCDFGHJK"


@pytest.mark.parametrize("typed", ["", "BCDF-GHJ", "BCDF-GHJKL", "ABCD-EFGH", "BCDF-GHJ1", "\u0392CDF-GHJK"])
def test_what_cannot_be_a_code_is_refused(typed: str) -> None:
    assert codes.normalise(typed) is None


def test_every_letter_is_drawn_at_every_position() -> None:
    """One draw from the whole code space reaches every letter in every place."""
    rng = random.Random(3)
    drawn = [codes.generate(rng) for _ in range(2000)]
    for position in range(codes.CODE_LENGTH):
        assert {code[position] for code in drawn} == set(codes.ALPHABET)
