"""One base class for everything LinkHub raises on purpose.

The error a device receives is not one of these: it is a value from
`linkhub_protocol.ErrorCode`. These are for the hub's own callers (CLI, web, tests).
"""

from __future__ import annotations


class LinkHubError(Exception):
    """Base class: catch this at the edges (CLI exit codes, web flash messages)."""


class ConfigError(LinkHubError):
    """A setting is wrong; the message says which and how to fix it."""


class BrokerUnavailable(LinkHubError):
    """The MQTT broker did not accept our connection in time."""


class BrokerTimeout(LinkHubError):
    """The broker did not acknowledge something in time, so it did not happen."""


class BrokerRefused(BrokerTimeout):
    """The broker answered, and refused (an MQTT 5 reason code of 0x80 or more)."""


class BrokerAdminError(LinkHubError):
    """The dynamic-security plugin refused or did not answer an admin command."""


class BrokerAdminRefused(BrokerAdminError):
    """The dynamic-security plugin answered an admin command with an error: asking
    again would get the same answer, so it is not retried."""


class PortInUse(LinkHubError):
    """A port the hub wants to listen on is taken."""


class AccountError(LinkHubError):
    """Account creation or sign-in failed; the message is safe to show."""


class LinkDecisionError(LinkHubError):
    """A person's approve/deny could not be applied; `reason` is stable for pages and CLI."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class UnlinkRefused(LinkHubError):
    """A device could not be unlinked; `reason` is stable for pages, the API and the CLI.

    `unknown_device` also stands for another account's device: a device id
    alone must not tell a person that the device exists.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class DeviceRefused(LinkHubError):
    """A change to a linked device (its name, who has it) was refused; `reason` is
    stable for pages and the CLI, the message is safe to show. `unknown_device`
    also stands for a device the person may not manage."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class CommandRefused(DeviceRefused):
    """A command was not sent to the device: `reason` is one of `device_offline`,
    `not_described`, `unknown_component`, `invalid_value`, `unknown_device`,
    `not_delivered`; the message says why and is safe to show."""


class HouseholdRefused(AccountError):
    """A change to the household's accounts was refused; `reason` is stable for pages
    and the CLI (hub.services.household.Refusal), the message is safe to show."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class HubNotRunning(LinkHubError):
    """A CLI command needs the running hub, and none answers in this data directory."""


class AccountServiceUnavailable(LinkHubError):
    """The account service did not answer; what was asked of it is not done."""


class SettingsRefused(LinkHubError):
    """A settings change broke a rule; `code` is the protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class StorageFull(LinkHubError):
    """The data directory is below its free-space threshold: nothing new is
    written until space is freed (hub.store.engine.SpaceGuard); the message says so."""


class AppRefused(LinkHubError):
    """Something asked of the app side (hub/services/apps.py) was refused. `reason`
    is an OAuth error code where the protocol has one (RFC 6749 §5.2, RFC 8628
    §3.5: `invalid_client`, `invalid_scope`, `invalid_grant`, `expired_token`,
    `access_denied`, ...), or the hub's own for the pages and the CLI
    (`unknown_app`, `invalid_app`); the message is safe to show."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
