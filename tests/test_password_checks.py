"""Parallel wrong sign-ins cannot run the hub out of memory (issue 19, item 6):
at most `password_checks_at_once` password checks (argon2id, 64 MiB each) run
at a time; the rest wait briefly or get 503 with Retry-After at once, the same
for a name that exists and one that does not.

The check is the real one wrapped to count how many run at once and to hold
each until the test lets it go: the bound is observed, not timed.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from conftest import CSRF_FIELD, HubFactory, hub_pages, wait_until
from flask import Flask
from werkzeug.test import TestResponse

from hub.daemon import Hub
from web import WebConfig
from web.password_checks import BUSY_RETRY_AFTER_S, PasswordChecks

OWNER = "alice"
PASSWORD = "correct horse battery"
BUSY = "The hub is busy checking other sign-ins. Try again in a few seconds."


class HeldChecks:
    """Wraps a hub's password check: counts the checks inside, holds them until released."""

    def __init__(self, hub: Hub) -> None:
        self._check = hub.accounts.authenticate
        self._lock = threading.Lock()
        self.inside = 0
        self.most_inside = 0
        self.started = 0
        self.release = threading.Event()
        hub.accounts.authenticate = self  # type: ignore[method-assign]

    def __call__(self, name: str, password: str) -> Any:
        with self._lock:
            self.inside += 1
            self.started += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            assert self.release.wait(timeout=30), "the test never released the checks"
            return self._check(name, password)
        finally:
            with self._lock:
                self.inside -= 1


@pytest.fixture
def hub(make_hub: HubFactory) -> Hub:
    made = make_hub()
    made.accounts.create(OWNER, PASSWORD)
    return made


def pages(hub: Hub, **config: Any) -> Flask:
    return hub_pages(hub, WebConfig(secret_key="test", testing=True, **config))


def sign_in_from(app: Flask, address: str, name: str, password: str) -> Callable[[], TestResponse]:
    """A sign-in from `address`, its form fetched now and posted when called."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    found = CSRF_FIELD.search(client.get("/login").get_data(as_text=True))
    assert found
    data = {"csrf_token": found.group(1), "name": name, "password": password}
    return lambda: client.post("/login", data=data)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=16) as executor:
        yield executor


def test_two_checks_at_once_and_the_rest_refused_quickly_alike_for_any_name(
    hub: Hub, pool: ThreadPoolExecutor
) -> None:
    app = pages(hub, password_checks_at_once=2, password_check_wait_s=0)
    held = HeldChecks(hub)
    names = [OWNER if n % 2 else f"nobody{n}" for n in range(12)]
    posts = [
        sign_in_from(app, f"192.168.1.{10 + n % 8}", name, "wrong password") for n, name in enumerate(names)
    ]
    answers: list[Future[TestResponse]] = [pool.submit(post) for post in posts]

    # Two checks run; the other ten are answered while those two are still held.
    wait_until(lambda: sum(a.done() for a in answers) == 10, what="ten refusals")
    assert (held.inside, held.started) == (2, 2)
    refused = [a.result() for a in answers if a.done()]
    for reply in refused:
        assert reply.status_code == 503 and reply.headers["Retry-After"] == str(BUSY_RETRY_AFTER_S)
        assert BUSY in reply.get_data(as_text=True)
    # The same page for a name that exists and one that does not, but for the name typed back.
    bodies = {re.sub(r'value="[^"]*" required maxlength', "", r.get_data(as_text=True)) for r in refused}
    bodies = {CSRF_FIELD.sub("", body) for body in bodies}
    assert len(bodies) == 1

    held.release.set()
    checked = [a.result(timeout=30) for a in answers if a.result(timeout=30).status_code != 503]
    assert [reply.status_code for reply in checked] == [400, 400]
    assert held.most_inside == 2


def test_a_sign_in_waits_for_a_slot_and_then_is_checked(hub: Hub, pool: ThreadPoolExecutor) -> None:
    """With a wait (the default), a sign-in that finds the slot taken is checked once it frees."""
    app = pages(hub, password_checks_at_once=1, password_check_wait_s=30)
    held = HeldChecks(hub)
    first = pool.submit(sign_in_from(app, "192.168.1.10", OWNER, "wrong password"))
    wait_until(lambda: held.inside == 1, what="the first check")
    second = pool.submit(sign_in_from(app, "192.168.1.11", OWNER, PASSWORD))
    third = pool.submit(sign_in_from(app, "192.168.1.12", "nobody", "wrong password"))
    assert not second.done() and not third.done() and held.started == 1
    held.release.set()
    assert first.result(timeout=30).status_code == 400
    assert second.result(timeout=30).status_code == 302  # the right password signs in
    assert third.result(timeout=30).status_code == 400
    assert held.most_inside == 1 and held.started == 3


def test_over_a_limit_is_refused_without_waiting_for_a_slot(hub: Hub) -> None:
    app = pages(hub, password_checks_at_once=1, password_check_wait_s=0)
    for _ in range(10):
        assert sign_in_from(app, "192.168.1.10", OWNER, "wrong password")().status_code == 400
    held = HeldChecks(hub)
    blocked = threading.Thread(target=sign_in_from(app, "192.168.1.11", "bob", "wrong password"))
    blocked.start()
    try:
        wait_until(lambda: held.inside == 1, what="a check holding the only slot")
        throttled = sign_in_from(app, "192.168.1.12", OWNER, PASSWORD)()
        assert throttled.status_code == 429  # the limit's answer, not "busy"
    finally:
        held.release.set()
        blocked.join(timeout=30)


def test_the_gate_refuses_a_bound_below_one() -> None:
    with pytest.raises(ValueError):
        PasswordChecks(0, 1.0)
