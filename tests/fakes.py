"""In-memory stand-ins for what the services reach the broker through
(CredentialIssuer, ReplySender, RetainedTopics, DevicePublisher), for the
`services` tier: a service on a SQLite file and these, no mosquitto. Each
records what it was asked and can be told to fail, as the broker can."""

from __future__ import annotations

from collections.abc import Sequence

from hub.errors import BrokerAdminError, LinkHubError
from linkhub_protocol import DeviceReply, LinkReply, SettingsDesired


class FakeIssuer:
    """The broker's device identities (hub/broker/dynsec.py), as a dict."""

    def __init__(self) -> None:
        self.identities: dict[str, str] = {}  # device id -> password
        self.refuse_next = False

    def issue_device(self, device_id: str, password: str) -> None:
        if self.refuse_next:
            self.refuse_next = False
            raise BrokerAdminError("the broker did not answer")
        self.identities[device_id] = password

    def revoke_device(self, device_id: str) -> None:
        self.identities.pop(device_id, None)  # revoking one already gone succeeds, as on the broker

    def device_clients(self) -> set[str]:
        return set(self.identities)


class FakeReplies:
    """Link replies pushed to devices' reply topics, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, LinkReply]] = []

    def send_reply(self, reply_to: str, reply: LinkReply, correlation: bytes | None) -> None:
        self.sent.append((reply_to, reply))


class FakeRetained:
    """Retained topics per device; clearing empties them."""

    def __init__(self) -> None:
        self.cleared: list[str] = []
        self.unreachable = False

    def clear_device_topics(self, device_id: str) -> list[str]:
        if self.unreachable:
            raise LinkHubError("the broker is away")
        self.cleared.append(device_id)
        return [f"linkhub/v1/devices/{device_id}/status"]


class FakeDevicePublisher:
    """Messages to linked devices (desired settings, replies), in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, SettingsDesired | DeviceReply]] = []

    def send_to_devices(
        self, messages: Sequence[tuple[str, str, SettingsDesired | DeviceReply]]
    ) -> list[LinkHubError | float]:
        self.sent.extend(messages)
        return [0.0 for _ in messages]

    def replies(self, device_id: str) -> list[DeviceReply]:
        return [m for d, _leaf, m in self.sent if d == device_id and isinstance(m, DeviceReply)]
