"""Real OAuth client libraries link apps to the hub (issue 16), unmodified and
as their own documentation uses them, each trusting the hub's CA the way its
ecosystem does: MSAL Python (`REQUESTS_CA_BUNDLE`), Node's openid-client v6
(`NODE_EXTRA_CA_CERTS`) and plain curl (`--cacert`), in tests/oauth_clients/
(installed by scripts/bootstrap). A person approves, denies, or lets the code
expire through the real /link page in Chromium on a 360 px phone.

The hub is a real one on the session's mosquitto; its pages are served as
`linkhub run` serves them, and its issuer over HTTPS (cheroot, web/https.py)
on a certificate from the hub's own CA, as `linkhub run --oauth-port` does
(the command itself: tests/test_oauth_cli.py). The hub's clock is real time
plus jumps the test makes: the clients poll at the real interval, and a code
expires when the test moves the hub's clock past it, not after a wait.
"""

# ruff: noqa: F811  (pytest fixtures imported from test_browser are parameters here)

from __future__ import annotations

import json
import os
import secrets
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import HubFactory, free_port
from hub_process import LineReader
from joserfc import jwt
from joserfc.jwk import KeySet
from playwright.sync_api import expect
from test_browser import (  # noqa: F401  (fixtures, used by name)
    OWNER,
    PASSWORD,
    Phone,
    PhoneFactory,
    browser,
    check_phone_page,
    chromium_present,
    enter_code,
    message,
    phone_for,
    sign_in,
)
from test_oauth import oauth_app

from hub.broker.tls import ensure_tls_files, server_names
from hub.daemon import Hub
from hub.services.apps import IssuedTokens
from web.https import HttpsServer

pytestmark = [pytest.mark.usefixtures("chromium_present"), pytest.mark.timeout(180)]

CLIENTS_DIR = Path(__file__).resolve().parent / "oauth_clients"
NODE = "node"
# How long a client may take to print its code, or its outcome after the person's step.
CLIENT_DEADLINE_S = 60.0
SCOPE = "openid profile offline_access devices:read"


class SteppedClock:
    """Real time, plus the jumps a test makes (a code's lifetime passing at once)."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s

    def advance(self, seconds: float) -> None:
        self.offset_s += seconds


@dataclass
class Issuer:
    hub: Hub
    clock: SteppedClock
    phone: Phone
    url: str
    ca_file: Path

    def https(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def get(self, url: str, token: str | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(request, context=self.https(), timeout=30) as answer:
                return answer.status, json.load(answer)
        except urllib.error.HTTPError as refused:
            return refused.code, json.load(refused)


@pytest.fixture
def issuer(make_hub: HubFactory, phone_for: PhoneFactory, tmp_path: Path) -> Iterator[Issuer]:
    clock = SteppedClock()
    hub = make_hub(clock=clock, poll_interval_s=1)
    hub.accounts.create(OWNER, PASSWORD)
    phone = phone_for(hub, clock)
    files = ensure_tls_files(
        tmp_path / "tls", server_names(["127.0.0.1"], mdns_name="linkhub"), now=datetime.now(UTC)
    )
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(files.ca_pem)
    port = free_port()
    url = f"https://127.0.0.1:{port}/oauth"

    app = oauth_app(hub, url, phone.url("/link"), tmp_path, clock)
    server = HttpsServer(app, "127.0.0.1", port, files.cert, files.key)
    server.start()
    try:
        yield Issuer(hub, clock, phone, url, ca_file)
    finally:
        server.stop()


# --- the three clients, as their own documentation runs them -------------------------------------
@dataclass
class RunningClient:
    name: str
    process: subprocess.Popen[str]
    lines: LineReader
    client_id: str

    def first_json(self) -> dict[str, Any]:
        line = self.lines.next_matching(lambda text: text.startswith("{"), CLIENT_DEADLINE_S)
        assert line is not None, f"{self.name} printed no code: {self.lines.seen}"
        return json.loads(line)  # type: ignore[no-any-return]

    def user_code(self) -> str:
        return str(self.first_json()["user_code"])

    def outcome(self) -> dict[str, Any]:
        """The client's last line once it has ended: its tokens, or its error."""
        line = self.lines.next_matching(lambda text: text.startswith("{"), CLIENT_DEADLINE_S)
        assert line is not None, f"{self.name} did not finish: {self.lines.seen}"
        self.process.wait(timeout=CLIENT_DEADLINE_S)
        return json.loads(line)  # type: ignore[no-any-return]


Launcher = Callable[[Issuer, str], RunningClient]


def _run(name: str, command: list[str], env: dict[str, str], client_id: str) -> RunningClient:
    process = subprocess.Popen(
        command,
        cwd=CLIENTS_DIR,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    return RunningClient(name, process, LineReader(process.stdout), client_id)


def msal(issuer: Issuer, client_id: str) -> RunningClient:
    # MSAL adds openid, profile and offline_access itself (and refuses them as input).
    command = [sys.executable, "msal_device_flow.py", issuer.url, client_id, "devices:read"]
    return _run("MSAL Python", command, {"REQUESTS_CA_BUNDLE": str(issuer.ca_file)}, client_id)


def openid_client(issuer: Issuer, client_id: str) -> RunningClient:
    command = [NODE, "device_flow.mjs", issuer.url, client_id, SCOPE]
    return _run("openid-client", command, {"NODE_EXTRA_CA_CERTS": str(issuer.ca_file)}, client_id)


def curl(issuer: Issuer, client_id: str) -> RunningClient:
    command = ["sh", "curl_device_flow.sh", str(issuer.ca_file), issuer.url, client_id, SCOPE]
    return _run("curl", command, {}, client_id)


CLIENTS: dict[str, Launcher] = {"msal": msal, "openid-client": openid_client, "curl": curl}


@pytest.fixture
def clients() -> Iterator[list[RunningClient]]:
    started: list[RunningClient] = []
    yield started
    for client in started:
        if client.process.poll() is None:
            client.process.kill()
            client.process.wait(timeout=20)


def start(clients: list[RunningClient], launcher: Launcher, issuer: Issuer, client_id: str) -> RunningClient:
    client = launcher(issuer, client_id)
    clients.append(client)
    return client


def tokens_of(outcome: dict[str, Any]) -> dict[str, Any]:
    """The tokens in a client's outcome, alike for the three."""
    if "event" in outcome:  # MSAL's and openid-client's scripts
        assert outcome["event"] == "tokens", outcome
        return outcome
    assert "access_token" in outcome, outcome  # curl prints the token response itself
    return outcome


def error_of(outcome: dict[str, Any]) -> str:
    assert "access_token" not in outcome, outcome
    return str(outcome["error"])


def verified_claims(issuer: Issuer, id_token: str) -> dict[str, Any]:
    """As an application is told to: the key set from the discovery document's jwks_uri."""
    status, document = issuer.get(f"{issuer.url}/.well-known/openid-configuration")
    assert status == 200 and document["issuer"] == issuer.url
    status, jwks = issuer.get(document["jwks_uri"])
    assert status == 200
    return jwt.decode(id_token, KeySet.import_key_set(jwks), algorithms=["RS256"]).claims


# --- approve, deny, expire, with each client ---------------------------------------------------
@pytest.mark.parametrize("client_name", CLIENTS)
def test_a_client_links_when_the_person_approves_on_the_link_page(
    issuer: Issuer, clients: list[RunningClient], client_name: str
) -> None:
    client = start(clients, CLIENTS[client_name], issuer, f"{client_name}-app")
    code = client.user_code()
    phone = issuer.phone
    sign_in(phone)
    enter_code(phone, code.lower().replace("-", " "))  # typed as a person might
    page = phone.page
    expect(page.locator(".app-name")).to_have_text(f"{client.client_id} (unverified)")
    expect(page.locator(".app-scopes li")).to_have_text(
        [
            "Know which account on this hub approved it",
            "See your account's name",
            "Stay linked while you are away (until you unlink it)",
            "See your linked devices and what they report",
        ]
    )
    expect(page.locator(".code-display")).to_have_text(code)
    page.get_by_role("button", name=f"Approve for {OWNER}").click()
    assert message(page)[0] == "app_linked"

    tokens = tokens_of(client.outcome())
    assert client.process.returncode == 0
    assert tokens["token_type"].lower() == "bearer"
    assert set(tokens["scope"].split()) == set(SCOPE.split())
    owner = issuer.hub.accounts.find(OWNER)
    assert owner is not None
    # What the library read from the id_token itself; curl's is checked here against jwks_uri.
    claims = tokens["claims"] if "claims" in tokens else verified_claims(issuer, tokens["id_token"])
    assert (claims["iss"], claims["aud"], claims["sub"]) == (issuer.url, client.client_id, str(owner.id))
    assert claims["preferred_username"] == OWNER

    # The token opens the account's devices, until the app is unlinked on the devices page.
    status, body = issuer.get(f"{issuer.url}/api/devices", tokens["access_token"])
    assert (status, body) == (200, {"devices": []})
    phone.go("/devices")
    app_row = page.locator(".linked-app")
    expect(app_row.locator(".app-name")).to_contain_text(client.client_id)
    app_row.get_by_role("button", name=f"Unlink {client.client_id}").click()
    expect(page.locator(".linked-app")).to_have_count(0)
    status, body = issuer.get(f"{issuer.url}/api/devices", tokens["access_token"])
    assert status == 401 and body["error"] == "invalid_token"


@pytest.mark.parametrize("client_name", CLIENTS)
def test_a_client_is_refused_when_the_person_denies(
    issuer: Issuer, clients: list[RunningClient], client_name: str
) -> None:
    client = start(clients, CLIENTS[client_name], issuer, f"{client_name}-app")
    code = client.user_code()
    sign_in(issuer.phone)
    # Picked from the list of what is asking now, as a device can be.
    issuer.phone.go("/link")
    issuer.phone.page.locator(".waiting-name", has_text=f"{client.client_id} (unverified)").click()
    expect(issuer.phone.page.locator(".code-display")).to_have_text(code)
    issuer.phone.page.get_by_role("button", name="Deny").click()
    assert message(issuer.phone.page) == ("denied_done", "Denied. The app is told at its next poll.")
    assert error_of(client.outcome()) == "access_denied"
    assert client.process.returncode != 0


@pytest.mark.parametrize("client_name", CLIENTS)
def test_a_client_sees_its_code_expire(
    issuer: Issuer, clients: list[RunningClient], client_name: str
) -> None:
    client = start(clients, CLIENTS[client_name], issuer, f"{client_name}-app")
    code = client.user_code()
    issuer.clock.advance(issuer.hub.config.code_lifetime_s)
    assert error_of(client.outcome()) == "expired_token"
    assert client.process.returncode != 0
    # The person who types it now is told so.
    sign_in(issuer.phone)
    enter_code(issuer.phone, code)
    assert message(issuer.phone.page) == (
        "expired",
        "That code has expired. Start linking in the app again for a new code.",
    )


# --- how the pages look with apps ------------------------------------------------------------
LONG_APP_NAME = "Living-room media centre add-on for the big screen downstairs"  # 61 of 64


def test_the_app_pages_fit_a_phone(issuer: Issuer, clients: list[RunningClient]) -> None:
    """The confirm page, Done, the devices page with many apps and Settings'
    registered apps, with long names and ids, at 360 px and at desktop width."""
    hub = issuer.hub
    owner = hub.accounts.find(OWNER)
    assert owner is not None
    hub.apps.register("org.example.media-centre.kodi-addon", LONG_APP_NAME, SCOPE)
    long_id = "urn:uuid:" + secrets.token_hex(40)
    for index in range(6):  # many linked apps, with long client ids
        client_id = f"{long_id}-{index}"
        started = hub.apps.start(hub.apps.client(client_id) or _never(), ("devices:read",), "192.0.2.9")
        hub.apps.approve(started.user_code, owner.id)
        tokens = IssuedTokens(secrets.token_urlsafe(32), secrets.token_urlsafe(32))
        hub.apps.exchange(started.device_code, client_id, tokens)
    client = start(clients, curl, issuer, "org.example.media-centre.kodi-addon")
    phone = issuer.phone
    sign_in(phone)
    enter_code(phone, client.user_code())
    expect(phone.page.locator(".app-name")).to_have_text(LONG_APP_NAME)
    check_phone_page(phone, "app-confirm", primaries=1)
    phone.page.get_by_role("button", name=f"Approve for {OWNER}").click()
    check_phone_page(phone, "app-linked", primaries=1)
    tokens_of(client.outcome())
    # Reload and Back after Approve show the outcome again and decide nothing.
    phone.page.reload()
    assert message(phone.page)[0] == "app_linked"
    phone.page.go_back()
    assert message(phone.page)[0] == "app_linked"

    unregistered = start(clients, curl, issuer, long_id)
    enter_code(phone, unregistered.user_code())
    expect(phone.page.locator(".app-unverified")).to_contain_text("has not registered this app")
    check_phone_page(phone, "app-confirm-unverified", primaries=1)
    phone.page.get_by_role("button", name="Deny").click()
    check_phone_page(phone, "app-denied", primaries=1)
    error_of(unregistered.outcome())

    phone.go("/devices")
    expect(phone.page.locator(".linked-app")).to_have_count(7)
    check_phone_page(phone, "devices-with-apps", primaries=1)
    phone.go("/settings")
    expect(phone.page.locator(".registered-app")).to_have_count(1)
    check_phone_page(phone, "settings-apps", primaries=1)
    # The owner registers another: a bad client id is refused with what was typed kept.
    page = phone.page
    page.locator("#app-name").fill("Wall tablet")
    page.locator("#app-client-id").fill("wall tablet")
    page.get_by_role("button", name="Register the app").click()
    expect(page.locator(".message")).to_contain_text("without spaces")
    expect(page.locator("#app-name")).to_have_value("Wall tablet")
    page.locator("#app-client-id").fill("wall-tablet")
    page.get_by_role("button", name="Register the app").click()
    expect(page.locator(".registered-app")).to_have_count(2)
    page.reload()  # nothing is registered twice
    expect(page.locator(".registered-app")).to_have_count(2)
    assert [app.client_id for app in hub.apps.apps() if app.name == "Wall tablet"] == ["wall-tablet"]


def _never() -> Any:
    raise AssertionError("unregistered apps are allowed on this hub")
