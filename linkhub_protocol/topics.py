"""Where each message goes: the topic tree under `linkhub/v1` (docs/protocol.md
section 4), built and taken apart here and nowhere else."""

from __future__ import annotations

import re

from linkhub_protocol.errors import ErrorCode, ProtocolError

TOPIC_ROOT = "linkhub/v1"
# Devices publish link requests to LINK_REQUEST_ROOT/<their MQTT client id>:
# MQTT does not tell a subscriber who published, so the topic does, and the
# broker lets each bootstrap client publish only under its own client id where
# it can (dynamic-security `%c`, mosquitto 2.1+; see hub/broker/dynsec.py).
LINK_REQUEST_ROOT = f"{TOPIC_ROOT}/link/request"
LINK_REPLY_ROOT = f"{TOPIC_ROOT}/link/reply"
DEVICES_ROOT = f"{TOPIC_ROOT}/devices"
# Hubs take link requests and devices' settings messages through shared
# subscriptions so several hub processes can serve one broker, each message
# handled by one of them (MQTT 5 §4.8.2; mosquitto supports it for 3.1.1
# clients too).
LINK_REQUEST_SHARE_GROUP = "linkhub-hubs"

# 22 base64url characters carry 132 bits: the reply topic must be unguessable.
_REPLY_TOKEN = re.compile(r"[A-Za-z0-9_-]{22,64}")
_DEVICE_ID = re.compile(r"[a-z0-9][a-z0-9-]{2,39}")
# The bootstrap client id, one topic level of the request topic.
_CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def link_request_subscription() -> str:
    """The filter a hub subscribes with: `$share/<group>/<request root>/+`."""
    return shared_subscription(f"{LINK_REQUEST_ROOT}/+")


def is_valid_client_id(client_id: str) -> bool:
    """A bootstrap client id the hub takes link requests from (one topic level)."""
    return isinstance(client_id, str) and bool(_CLIENT_ID.fullmatch(client_id))


def link_request_topic(client_id: str) -> str:
    """Where the device connected with `client_id` publishes its link request."""
    if not is_valid_client_id(client_id):
        raise ProtocolError(
            ErrorCode.INVALID_REQUEST, "the bootstrap client id must be 1-64 chars of A-Z a-z 0-9 - _"
        )
    return f"{LINK_REQUEST_ROOT}/{client_id}"


def link_request_client_id(topic: str) -> str | None:
    """The client id level of a request topic (not yet checked), or None if
    `topic` is not `LINK_REQUEST_ROOT/<one level>`."""
    prefix = LINK_REQUEST_ROOT + "/"
    if not topic.startswith(prefix):
        return None
    level = topic[len(prefix) :]
    return level if level and "/" not in level else None


def reply_topic(reply_token: str) -> str:
    if not _REPLY_TOKEN.fullmatch(reply_token):
        raise ProtocolError(ErrorCode.INVALID_REQUEST, "reply token must be 22-64 base64url chars")
    return f"{LINK_REPLY_ROOT}/{reply_token}"


def is_valid_reply_topic(topic: str) -> bool:
    prefix = LINK_REPLY_ROOT + "/"
    return topic.startswith(prefix) and bool(_REPLY_TOKEN.fullmatch(topic[len(prefix) :]))


def device_root(device_id: str) -> str:
    """Everything a linked device may publish or subscribe to lies below this."""
    if not _DEVICE_ID.fullmatch(device_id):
        raise ProtocolError(ErrorCode.INVALID_REQUEST, f"bad device id {device_id!r}")
    return f"{DEVICES_ROOT}/{device_id}"


def device_status_topic(device_id: str) -> str:
    return f"{device_root(device_id)}/{STATUS}"


def device_status_subscription() -> str:
    """Every hub subscribes to every device's status itself, not through the
    shared group, for two reasons. Order: shared out, a device's `online` could
    go to one hub and its later `offline` (its will) to another, and the slower
    hub would write the older one last; when every hub handles every status in
    order, the last write is always of the newest. Retained status: MQTT 5 sends
    retained messages to new non-shared subscriptions only (§3.3.1.3, §4.8.2), so
    a hub starting beside another would not learn who is online (mosquitto
    2.0.11 does send them to a shared one, as tried, but that is not the spec).
    Handling a status twice is harmless: each hub writes the same `online` and
    confirms an already confirmed link again, which changes nothing
    (hub/core/linking.py)."""
    return f"{DEVICES_ROOT}/+/{STATUS}"


def shared_subscription(topic_filter: str) -> str:
    """`topic_filter` as a shared subscription of the hubs' group: with several
    hubs on one broker, each message goes to one of them (MQTT 5 §4.8.2)."""
    return f"$share/{LINK_REQUEST_SHARE_GROUP}/{topic_filter}"


# Settings topics below a device's root (docs/protocol.md, "Settings").
SETTINGS_GET = "settings/get"  # device -> hub: send me the full desired document
SETTINGS_DESIRED = "settings/desired"  # hub -> device: full document or a change
SETTINGS_REPORTED = "settings/reported"  # device -> hub: what I run with, and which version
SETTINGS_SET = "settings/set"  # device -> hub: a change made on the device itself
DEVICE_REPLY = "reply"  # hub -> device: the answer to a get/set/report, or its refusal
DEVICE_INBOUND = (SETTINGS_GET, SETTINGS_REPORTED, SETTINGS_SET)
# What a device does (docs/protocol.md, "Components, state and commands").
STATUS = "status"  # device -> hub, retained: online or not (also its last will)
DESCRIPTION = "description"  # device -> hub: its components, after every connect
STATE = "state"  # device -> hub and Home Assistant, retained: every component's value
COMMAND = "command"  # hub -> device, never retained: set a component
# Every topic a linked device may publish to (its broker role allows these only).
DEVICE_SENDS = (STATUS, *DEVICE_INBOUND, DESCRIPTION, STATE)


def device_topic(device_id: str, leaf: str) -> str:
    return f"{device_root(device_id)}/{leaf}"


def device_inbound_subscriptions() -> list[str]:
    """What the hub subscribes to for every device (never its own outbound topics).

    Shared: a settings message must be handled once, by one hub, or two hubs on
    one database would each apply the same change (issue 18, section 5).
    """
    return [shared_subscription(f"{DEVICES_ROOT}/+/{leaf}") for leaf in (*DEVICE_INBOUND, DESCRIPTION)]


def device_state_subscription() -> str:
    """Every hub reads every device's state itself, as it does statuses (see
    device_status_subscription): each keeps the last value in memory, and the
    retained copies reach a hub that starts (MQTT 5 §3.3.1.3)."""
    return f"{DEVICES_ROOT}/+/{STATE}"


def parse_device_topic(topic: str) -> tuple[str, str] | None:
    """Split `linkhub/v1/devices/<id>/<rest>` into (id, rest); None if not one."""
    parts = topic.split("/", 4)
    if len(parts) != 5 or "/".join(parts[:3]) != DEVICES_ROOT:
        return None
    device_id, rest = parts[3], parts[4]
    if not _DEVICE_ID.fullmatch(device_id):
        return None
    return device_id, rest
