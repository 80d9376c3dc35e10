"""Human times for the pages. Services give UTC epoch seconds; people read
"2 minutes ago" and the hub's local clock time. "Now" always comes from the
injected clock, so pages agree with the hub about what has expired."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Flask, g
from markupsafe import Markup

from hub.core.preferences import TIME_ZONE
from web.services import services


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def ago(then_s: float, now_s: float) -> str:
    seconds = max(0, int(now_s - then_s))
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{_plural(seconds // 60, 'minute')} ago"
    if seconds < 86400:
        return f"{_plural(seconds // 3600, 'hour')} ago"
    return f"{_plural(seconds // 86400, 'day')} ago"


def remaining(until_s: float, now_s: float) -> str:
    """Rounded down: telling someone they have more time than they have is the worse error."""
    seconds = int(until_s - now_s)
    if seconds <= 0:
        return "expired"
    if seconds < 60:
        return "expires in less than a minute"
    if seconds < 3600:
        return f"expires in {seconds // 60} min"
    return f"expires in {seconds // 3600} h {seconds % 3600 // 60} min"


def _local(epoch_s: float, zone: tzinfo | None) -> datetime:
    """In `zone` (the account's time zone preference), else the hub's own."""
    return datetime.fromtimestamp(epoch_s, zone) if zone else datetime.fromtimestamp(epoch_s).astimezone()


def local_time(epoch_s: float, zone: tzinfo | None = None) -> Markup:
    """With the zone's name, so nobody mistakes UTC for the time on the wall; the
    date in a span that does not wrap, so a phone breaks "2026-12-04 05:47 UTC"
    at its spaces, never inside the date (browsers break after a hyphen)."""
    when = _local(epoch_s, zone)
    return Markup('<span class="date">{}</span> {}').format(
        when.strftime("%Y-%m-%d"), when.strftime("%H:%M %Z")
    )


def clock_time(epoch_s: float, zone: tzinfo | None = None) -> str:
    """The time of day alone, for "since 14:05" today."""
    return _local(epoch_s, zone).strftime("%H:%M %Z")


def iso_utc(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds")


def account_zone() -> tzinfo | None:
    """The signed-in account's time zone preference (hub/core/preferences.py), read
    once per request; None (the hub's zone) when unset, unknown or signed out."""
    if "time_zone" not in g:
        g.time_zone = None
        account = g.get("account")
        if account is not None:
            name = services().settings.preferences(account.id).document.get(TIME_ZONE)
            if isinstance(name, str):
                try:
                    g.time_zone = ZoneInfo(name)
                except (ZoneInfoNotFoundError, ValueError):
                    g.time_zone = None
    zone: tzinfo | None = g.time_zone
    return zone


def register(app: Flask) -> None:
    """Jinja filters that read the app's clock at render time."""

    def ago_filter(then_s: float) -> str:
        return ago(then_s, services().clock())

    def remaining_filter(until_s: float) -> str:
        return remaining(until_s, services().clock())

    app.add_template_filter(ago_filter, "ago")
    app.add_template_filter(remaining_filter, "remaining")
    app.add_template_filter(lambda epoch_s: local_time(epoch_s, account_zone()), "local_time")
    app.add_template_filter(lambda epoch_s: clock_time(epoch_s, account_zone()), "clock_time")
    app.add_template_filter(iso_utc, "iso_utc")
