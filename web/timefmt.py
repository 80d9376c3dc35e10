"""Human times for the pages. Services give UTC epoch seconds; people read
"2 minutes ago" and the hub's local clock time. "Now" always comes from the
injected clock, so pages agree with the hub about what has expired."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Flask

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


def local_time(epoch_s: float) -> str:
    """The hub's local time zone: the household lives in it."""
    return datetime.fromtimestamp(epoch_s).astimezone().strftime("%Y-%m-%d %H:%M")


def iso_utc(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds")


def register(app: Flask) -> None:
    """Jinja filters that read the app's clock at render time."""

    def ago_filter(then_s: float) -> str:
        return ago(then_s, services().clock())

    def remaining_filter(until_s: float) -> str:
        return remaining(until_s, services().clock())

    app.add_template_filter(ago_filter, "ago")
    app.add_template_filter(remaining_filter, "remaining")
    app.add_template_filter(local_time, "local_time")
    app.add_template_filter(iso_utc, "iso_utc")
