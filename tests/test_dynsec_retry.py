"""When dynamic-security commands are asked again: a lost or late answer is, a
refusal is not (the same question gets the same answer). Decided by the error's
type, not by the words of its message."""

from __future__ import annotations

from typing import Any

import pytest

from hub.broker.connection import BrokerAddress
from hub.broker.dynsec import DynSecAdmin
from hub.errors import (
    BrokerAdminError,
    BrokerAdminRefused,
    BrokerRefused,
    BrokerTimeout,
    BrokerUnavailable,
    LinkHubError,
)

COMMANDS = [{"command": "getClient", "username": "lamp-1"}]
ANSWER = [{"command": "getClient"}]


class ScriptedAdmin(DynSecAdmin):
    """A DynSecAdmin whose calls fail as scripted (never connected: no broker)."""

    def __init__(self, failures: list[LinkHubError]) -> None:
        super().__init__(BrokerAddress("127.0.0.1", 1), "admin", "unused")
        self.failures = failures
        self.calls = 0

    def call(self, commands: list[dict[str, Any]], *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return ANSWER


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "lost",
    [
        BrokerAdminError("dynamic-security did not answer ['getClient'] in 5 s"),
        BrokerTimeout("the broker did not acknowledge a publish"),
        BrokerUnavailable("the MQTT broker at 127.0.0.1:1 did not take the admin connection"),
        # The words do not decide: a lost answer that happens to say "refused".
        BrokerUnavailable("connection refused"),
    ],
)
def test_a_lost_answer_is_asked_again(lost: LinkHubError) -> None:
    admin = ScriptedAdmin([lost, lost])
    pauses: list[float] = []
    assert admin.call_with_retry(COMMANDS, attempts=3, pause=pauses.append) == ANSWER
    assert admin.calls == 3
    assert pauses == [0.2, 0.4]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "refusal",
    [
        BrokerAdminRefused("dynamic-security refused createClient: Client already exists"),
        BrokerRefused("the broker refused a publish to '$CONTROL/dynamic-security/v1': Not authorized"),
    ],
)
def test_a_refusal_is_not_asked_again(refusal: LinkHubError) -> None:
    admin = ScriptedAdmin([refusal])
    pauses: list[float] = []
    with pytest.raises(type(refusal)) as raised:
        admin.call_with_retry(COMMANDS, attempts=3, pause=pauses.append)
    assert raised.value is refusal
    assert admin.calls == 1
    assert pauses == []


@pytest.mark.timeout(10)
def test_the_last_lost_answer_is_raised() -> None:
    late = BrokerAdminError("dynamic-security did not answer ['getClient'] in 5 s")
    admin = ScriptedAdmin([late, late, late])
    with pytest.raises(BrokerAdminError):
        admin.call_with_retry(COMMANDS, attempts=3, pause=lambda _s: None)
    assert admin.calls == 3
