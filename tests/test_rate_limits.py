"""hub/core/rate_limits.py: the moving window every limit counts with."""

from __future__ import annotations

import pytest

from hub.core.rate_limits import LimitsPolicy, Throttle, parse_rate, wait_words


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_at_its_limit_waits_until_its_oldest_event_leaves_the_window() -> None:
    clock = Clock()
    throttle = Throttle("3 per minute", clock=clock)
    for at in (1000.0, 1010.0, 1030.0):
        clock.now = at
        assert throttle.hit("a")
    clock.now = 1059.5
    assert not throttle.hit("a")  # not counted
    assert throttle.retry_after_s("a") == 1  # 1000 + 60 - 1059.5 rounds up to 1
    assert throttle.retry_after_s("b") == 0  # other keys are not affected
    clock.now = 1060.0
    assert throttle.hit("a")  # the event at 1000 has left
    assert throttle.retry_after_s("a") == 10  # the next to leave is 1010, at 1070


def test_refused_hits_do_not_extend_the_wait() -> None:
    clock = Clock()
    throttle = Throttle("1 per 10 seconds", clock=clock)
    assert throttle.hit("k")
    for _ in range(5):
        clock.now += 1
        assert not throttle.hit("k")
    assert throttle.retry_after_s("k") == 5
    clock.now += 5
    assert throttle.hit("k")


def test_clear_forgets_a_key() -> None:
    throttle = Throttle("1 per hour", clock=Clock())
    assert throttle.hit("k")
    assert throttle.retry_after_s("k") == 3600
    throttle.clear("k")
    assert throttle.retry_after_s("k") == 0


def test_a_flood_of_keys_is_forgotten_once_their_window_passed() -> None:
    """The table is swept whenever it doubles, so it holds at most about twice
    the keys still inside their window, however many came and went."""
    clock = Clock()
    throttle = Throttle("1 per minute", clock=clock)
    for number in range(5000):
        throttle.hit(f"old-{number}")
    clock.now += 61  # every "old-" key has left its window
    for number in range(3500):
        throttle.hit(f"new-{number}")
    assert "old-0" not in throttle._events
    assert len(throttle._events) <= 3500
    assert throttle.retry_after_s("old-0") == 0
    assert throttle.retry_after_s("new-3499") == 60


@pytest.mark.parametrize(
    "text", ["0 per minute", "1 per minute; 2 per hour", "often", "", "5 per 0 minutes", "5 per fortnight"]
)
def test_a_limit_that_is_not_one_positive_rate_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)


def test_every_default_limit_parses() -> None:
    policy = LimitsPolicy()
    for name in policy.__dataclass_fields__:
        value = getattr(policy, name)
        if isinstance(value, str):
            assert parse_rate(value).amount >= 1, name


def test_wait_words_read_as_people_say_them() -> None:
    assert wait_words(1) == "1 second"
    assert wait_words(45) == "45 seconds"
    assert wait_words(600) == "about 10 minutes"
    assert wait_words(3 * 3600) == "about 3 hours"
