"""The rules of apps' links (hub/core/oauth.py), without a hub: scopes as the
confirm page lists them, which client ids are acceptable, and when a poll is
too soon (RFC 8628 §3.5)."""

from __future__ import annotations

import pytest

from hub.core.oauth import (
    ALL_SCOPES,
    POLL_TOLERANCE,
    SCOPE_WORDS,
    SLOW_DOWN_STEP_S,
    client_id_problem,
    grants,
    parse_scopes,
    poll_pace,
)
from hub.errors import AppRefused


def test_scopes_are_read_in_the_hubs_order_without_repeats() -> None:
    assert parse_scopes("devices:read openid  openid profile") == ("openid", "profile", "devices:read")
    assert parse_scopes("") == () and parse_scopes(None) == ()
    assert set(SCOPE_WORDS) == set(ALL_SCOPES) and all(SCOPE_WORDS.values())


@pytest.mark.parametrize("asked", ["admin", "openid email", "DEVICES:READ"])
def test_a_scope_the_hub_does_not_offer_is_refused(asked: str) -> None:
    with pytest.raises(AppRefused) as refused:
        parse_scopes(asked)
    assert refused.value.reason == "invalid_scope"


def test_an_app_asks_only_within_what_it_was_allowed() -> None:
    assert parse_scopes("openid", allowed=("openid", "devices:read")) == ("openid",)
    with pytest.raises(AppRefused):
        parse_scopes("settings:write", allowed=("openid", "devices:read"))


def test_writing_implies_reading_and_commands_imply_devices() -> None:
    assert grants(("settings:write",), "settings:read") and grants(("devices:command",), "devices:read")
    assert not grants(("settings:read",), "settings:write") and not grants(("openid",), "devices:read")


@pytest.mark.parametrize(
    ("client_id", "good"),
    [("media-centre", True), ("urn:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427", True), ("x" * 128, True),
     ("", False), ("has space", False), ("x" * 129, False), ("tab\there", False), ("ünïcode", False)],
)  # fmt: skip
def test_client_ids_are_printable_ascii_without_spaces(client_id: str, good: bool) -> None:
    assert (client_id_problem(client_id) is None) is good


def test_the_first_poll_is_never_too_soon() -> None:
    assert poll_pace(None, 5, 1000.0).too_soon is False


def test_a_poll_before_the_interval_slows_down_for_good() -> None:
    first = poll_pace(1000.0, 5, 1001.0)
    assert first.too_soon and first.interval_s == 5 + SLOW_DOWN_STEP_S
    # On time for the old interval, too soon for the new one.
    second = poll_pace(1001.0, first.interval_s, 1006.0)
    assert second.too_soon and second.interval_s == 5 + 2 * SLOW_DOWN_STEP_S
    on_time = poll_pace(1006.0, second.interval_s, 1006.0 + second.interval_s)
    assert not on_time.too_soon and on_time.interval_s == second.interval_s


def test_a_poll_that_arrives_a_little_early_is_on_time() -> None:
    assert not poll_pace(1000.0, 5, 1000.0 + 5 * POLL_TOLERANCE).too_soon
    assert poll_pace(1000.0, 5, 1000.0 + 5 * POLL_TOLERANCE - 0.01).too_soon
