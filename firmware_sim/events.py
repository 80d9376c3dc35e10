"""Events the device reports: plain dicts, one JSON object each in `--json` mode.

- code: user_code, verification_uri, verification_uri_complete, expires_in
- waiting: error (slow_down or too_many_pending), error_description,
  retry_after (seconds); the hub did not take the link request now, and the
  device resends the same request after that wait. With a request_id: a
  change made on the device that the hub refused for now (slow_down,
  insufficient_storage, server_error), sent again after retry_after seconds
- warning: error, error_description; an error reply without a request id on
  the device's reply topic, which may answer someone else's request: not
  final, the device goes on polling
- linked: device_id, tls (whether its own connection is over TLS)
- online: device_id, tls
- message: topic, payload (text)
- settings: desired (the whole document the device now runs with), version
  (the desired version it applied); after every accepted desired message
- set_ok: request_id, version; the hub accepted a change made on the device
- unlinked: device_id; the broker refused the device's own credentials (the hub
  unlinked it), so they were forgotten: `link` links it anew (docs/protocol.md)
- error: error (a stable code), error_description, and request_id when it is
  the answer to a change made on the device (e.g. not_owned, version_conflict)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from firmware_sim.mqtt_client import (
    BrokerUnreachable,
    ConnectRefused,
    MqttError,
    MqttTimeout,
    PublishRefused,
    SubscribeRefused,
    TlsFailed,
    TlsUnavailable,
)

Event = dict[str, Any]
EventSink = Callable[[Event], None]


def error(code: str, description: str) -> Event:
    return {"event": "error", "error": code, "error_description": description}


def outcome_event(outcome: dict[str, Any]) -> Event:
    """The event for the outcome of a change made on the device (see buttons.py)."""
    if outcome.get("ok") is True:
        return {"event": "set_ok", "request_id": outcome.get("request_id"), "version": outcome.get("version")}
    return {
        **error(str(outcome.get("error", "server_error")), str(outcome.get("error_description", ""))),
        "request_id": outcome.get("request_id"),
    }


def from_mqtt_error(exc: MqttError) -> Event:
    """The error event for a failed broker operation."""
    match exc:
        case ConnectRefused() if exc.not_authorised:
            code = "not_authorised"
        case ConnectRefused():
            code = "connection_refused"
        case BrokerUnreachable():
            code = "broker_unreachable"
        case SubscribeRefused():
            code = "subscribe_refused"
        case PublishRefused():
            code = "publish_refused"
        case MqttTimeout():
            code = "timeout"
        case TlsFailed():
            code = "tls_failed"
        case TlsUnavailable():
            code = "tls_unavailable"
        case _:
            code = "mqtt_error"
    return error(code, str(exc))
