"""The link request limits as plain logic: no database, no broker; small
LimitsPolicy numbers so that a few calls reach each limit."""

from __future__ import annotations

from conftest import FakeClock

from hub.core.link_limits import LinkRequestLimits, LogEvery, Refusal
from hub.core.rate_limits import LimitsPolicy
from linkhub_protocol import ErrorCode


def limits(
    per_client: str = "3 per minute", total: str = "100 per minute", pending: int = 100
) -> LinkRequestLimits:
    return LinkRequestLimits(
        LimitsPolicy(
            link_requests_per_client=per_client, link_requests_total=total, max_pending_requests=pending
        )
    )


def admit(limiter: LinkRequestLimits, client_id: str, pending: int = 0) -> object:
    return limiter.admit(client_id, pending=pending, next_expiry_in_s=None)


def test_one_client_is_limited_and_others_are_not() -> None:
    limiter = limits(per_client="3 per minute")
    assert [admit(limiter, "flood") for _ in range(3)] == [None, None, None]
    refusal = limiter.admit("flood", pending=0, next_expiry_in_s=None)
    assert refusal is not None and refusal.error is ErrorCode.SLOW_DOWN
    assert 1 <= refusal.retry_after_s <= 60
    assert "at most 3 per minute" in refusal.description and "resend the same request" in refusal.description
    assert admit(limiter, "kitchen-lamp") is None  # someone else is served meanwhile


def test_refused_requests_are_not_counted() -> None:
    """A refusal is as if the request never came: it uses up nothing."""
    limiter = limits(per_client="2 per minute", total="4 per minute")
    assert admit(limiter, "a") is None
    assert admit(limiter, "b") is None and admit(limiter, "b") is None
    refusals = [admit(limiter, "b") for _ in range(10)]
    assert all(r is not None and r.error is ErrorCode.SLOW_DOWN for r in refusals)
    # b's ten refusals did not touch the total (3 of 4 used): one slot is left, for c.
    assert admit(limiter, "c") is None
    refusal = admit(limiter, "d")
    assert (
        refusal is not None
        and refusal.error is ErrorCode.SLOW_DOWN
        and "from all clients" in refusal.description
    )


def test_the_total_holds_across_client_ids() -> None:
    """A flood that changes its client id for every request meets the total."""
    limiter = limits(per_client="1 per minute", total="5 per minute")
    results = [admit(limiter, f"client-{n}") for n in range(8)]
    assert results[:5] == [None] * 5
    assert all(r is not None and r.error is ErrorCode.SLOW_DOWN for r in results[5:])
    assert "at most 5 per minute from all clients" in results[5].description  # type: ignore[union-attr]


def test_the_pending_cap_refuses_new_requests_with_a_hint() -> None:
    limiter = limits(pending=4)
    refusal = limiter.admit("lamp", pending=4, next_expiry_in_s=120)
    assert refusal is not None and refusal.error is ErrorCode.TOO_MANY_PENDING
    assert refusal.retry_after_s == 120 and "4 codes are already waiting" in refusal.description
    assert limiter.admit("lamp", pending=3, next_expiry_in_s=120) is None
    # The refusal above was not counted against lamp: 3 per minute still leaves 2.
    assert admit(limiter, "lamp") is None and admit(limiter, "lamp") is None
    assert admit(limiter, "lamp") is not None


def test_the_per_client_limit_is_checked_before_the_pending_cap() -> None:
    """A flooding client hears slow_down (back off) rather than 'the hub is busy'."""
    limiter = limits(per_client="1 per minute", pending=1)
    assert admit(limiter, "flood") is None
    refusal = limiter.admit("flood", pending=1, next_expiry_in_s=30)
    assert refusal is not None and refusal.error is ErrorCode.SLOW_DOWN


def test_a_flood_of_refusals_makes_one_log_line_a_minute() -> None:
    every = LogEvery(interval_s=60)
    assert every.due(1000.0) == 1  # the first is reported at once
    assert [every.due(1000.0 + n) for n in range(1, 50)] == [0] * 49
    assert every.due(1060.0) == 50  # then a line a minute, with how many came since
    assert every.due(1061.0) == 0
    assert every.due(1200.0) == 2


def test_one_client_id_holds_no_more_codes_in_a_lifetime_than_it_may_ask_for_in_a_minute() -> None:
    """Issue 19: at 5 a minute one client took 75 codes in a 15-minute lifetime.
    Where the broker makes the id the connection's own, this is per connection."""
    clock = FakeClock(0.0)
    limiter = LinkRequestLimits(
        LimitsPolicy(link_requests_per_client="3 per minute"), code_lifetime_s=900, clock=clock
    )
    assert [admit(limiter, "flood") for _ in range(3)] == [None, None, None]
    clock.advance(61)  # the per-minute rate has room again...
    refusal = admit(limiter, "flood")
    assert isinstance(refusal, Refusal) and refusal.error is ErrorCode.TOO_MANY_PENDING  # ...the lifetime not
    assert 800 <= refusal.retry_after_s <= 900 - 61 + 1
    assert admit(limiter, "kitchen-lamp") is None  # an honest device still gets its code
    clock.advance(900)
    assert admit(limiter, "flood") is None
