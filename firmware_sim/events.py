"""Events the device reports: plain dicts, one JSON object each in `--json` mode.

- code: user_code, verification_uri, verification_uri_complete, expires_in
- linked: device_id
- online: device_id
- message: topic, payload (text)
- error: error (a stable code), error_description
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
)

Event = dict[str, Any]
EventSink = Callable[[Event], None]


def error(code: str, description: str) -> Event:
    return {"event": "error", "error": code, "error_description": description}


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
        case _:
            code = "mqtt_error"
    return error(code, str(exc))
