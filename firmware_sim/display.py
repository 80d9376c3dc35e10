"""How events reach the person running the simulator: JSON lines or friendly text."""

from __future__ import annotations

import json
import sys
from typing import TextIO

import qrcode

from firmware_sim.events import Event


class JsonPrinter:
    """Exactly one JSON object per line per event, flushed at once."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out if out is not None else sys.stdout

    def __call__(self, event: Event) -> None:
        self.out.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")
        self.out.flush()


def _time_left(seconds: int) -> str:
    if seconds >= 120:
        return f"{(seconds + 59) // 60} minutes"
    return f"{max(seconds, 0)} seconds"


def _big_code(code: str) -> list[str]:
    spaced = " ".join(code)
    bar = "+" + "-" * (len(spaced) + 6) + "+"
    return [bar, f"|   {spaced}   |", bar]


def _settings_text(document: object) -> str:
    """`key=value, ...` with JSON values, so a string and a number look different."""
    if not isinstance(document, dict) or not document:
        return "(none)"
    return ", ".join(
        f"{key}={json.dumps(value, ensure_ascii=False, separators=(',', ':'))}"
        for key, value in sorted(document.items())
    )


def _json_text(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class HumanPrinter:
    """Friendly text; errors go to `err`."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, *, qr: bool = True) -> None:
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.qr = qr

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def __call__(self, event: Event) -> None:
        match event.get("event"):
            case "code":
                self._code(event)
            case "waiting":
                self.say(f"The hub is busy ({event['error']}): {event['error_description']}")
                self.say(f"Asking again in {round(float(event['retry_after']))} seconds...")
            case "linked":
                over = " It connects over TLS from now on." if event.get("tls") else ""
                self.say(f"Linked: this device is now {event['device_id']}.{over}")
            case "online":
                over = " (over TLS)" if event.get("tls") else ""
                self.say(f"Device {event['device_id']} is online{over}. Press Ctrl-C to stop.")
            case "message":
                self.say(f"{event['topic']}: {event['payload']}")
            case "settings":
                self.say(f"Settings, version {event['version']}: {_settings_text(event['desired'])}")
            case "unlinked":
                then = (
                    "Linking it again now."
                    if event.get("relinking")
                    else "To use it again, link it with `linkhub-device link`."
                )
                self.say(
                    f"The hub unlinked this device ({event['device_id']}): the broker refused its "
                    f"credentials, so they are forgotten. {then}"
                )
            case "command":
                value, now = _json_text(event["value"]), _json_text(event["state"])
                self.say(f"Command: {event['component']} -> {value}; now {now}")
            case "state":
                self.say(f"Readings: {_settings_text(event['state'])}")
            case "set_ok":
                self.say(f"The hub accepted the change; settings are now at version {event['version']}.")
            case "error":
                self.err.write(f"Error ({event['error']}): {event['error_description']}\n")
                self.err.flush()
            case _:
                self.say(str(event))

    def _code(self, event: Event) -> None:
        lines = [
            "",
            f"To link this device, open {event['verification_uri']}",
            "and enter this code:",
            "",
            *("    " + line for line in _big_code(str(event["user_code"]))),
            "",
            f"The code expires in {_time_left(int(event['expires_in']))}.",
            f"Or open {event['verification_uri_complete']}",
        ]
        if self.qr:
            lines.append("or scan:")
        self.say("\n".join(lines))
        if self.qr:
            qr = qrcode.QRCode(border=2)
            qr.add_data(str(event["verification_uri_complete"]))
            qr.make(fit=True)
            qr.print_ascii(out=self.out)
            self.out.flush()
        self.say("Waiting for approval...")
