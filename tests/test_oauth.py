"""Apps that speak HTTP link through OAuth 2.0's device authorization grant
(issue 16): the issuer's discovery document, the device authorization and
token endpoints exactly as RFC 8628 words them, tokens and their families
(rotation, reuse, unlink, revocation), the id_token checked against jwks_uri as
an application is told to, and the resource API by scope.

A real hub on the session's mosquitto, its clock a FakeClock (the polls' pace
and every expiry are decided on it); the issuer's app through Flask's test
client over https. The person's approval here is the service's own call; the
real /link page and real client libraries are tests/test_oauth_clients.py's.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import FakeClock, HubFactory, RunningBroker, wait_until
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import KeySet
from test_device_control import RunThread, link_profile
from werkzeug.test import TestResponse

from hub.core.oauth import SLOW_DOWN_STEP_S
from hub.core.origin import Origin
from hub.daemon import Hub
from hub.services.activity import ActivityKind
from hub.services.apps import MAX_PENDING_GRANTS
from hub.services.household import Household
from web.oauth import create_oauth_app
from web.oauth.id_tokens import IdTokens, load_signing_key

pytestmark = pytest.mark.timeout(120)

ISSUER = "https://hub.example.test:8444/oauth"
LINK_PAGE = "http://hub.example.test:8080/link"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
FORM = "application/x-www-form-urlencoded"
# The hub's poll interval here: RFC 8628 §3.2's default, as a hub has it unless told otherwise.
POLL_INTERVAL_S = 5
ALL_ASKED = "openid profile offline_access devices:read devices:command settings:read settings:write"


@dataclass
class Issuer:
    hub: Hub
    clock: FakeClock
    http: FlaskClient
    owner: int

    def post(self, endpoint: str, data: dict[str, str], content_type: str = FORM) -> TestResponse:
        return self.http.post(f"/oauth/{endpoint}", data=data, content_type=content_type)

    def start(self, client_id: str = "media-centre", scope: str = ALL_ASKED) -> dict[str, Any]:
        answer = self.post("device_authorization", {"client_id": client_id, "scope": scope})
        assert answer.status_code == 200, answer.get_data(as_text=True)
        return answer.get_json()  # type: ignore[no-any-return]

    def poll(self, device_code: str, client_id: str = "media-centre") -> TestResponse:
        return self.post(
            "token", {"grant_type": DEVICE_GRANT, "device_code": device_code, "client_id": client_id}
        )

    def linked(self, client_id: str = "media-centre", scope: str = ALL_ASKED) -> dict[str, Any]:
        """An app through the whole grant: asked, approved, exchanged."""
        started = self.start(client_id, scope)
        self.hub.apps.approve(started["user_code"], self.owner)
        tokens = self.poll(started["device_code"], client_id)
        assert tokens.status_code == 200, tokens.get_data(as_text=True)
        return tokens.get_json()  # type: ignore[no-any-return]

    def refresh(self, refresh_token: str, client_id: str = "media-centre") -> TestResponse:
        return self.post(
            "token", {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id}
        )

    def api(self, path: str, token: str, method: str = "GET", body: Any = None) -> TestResponse:
        return self.http.open(
            f"/oauth{path}", method=method, json=body, headers={"Authorization": f"Bearer {token}"}
        )


def oauth_app(
    hub: Hub, issuer: str, verification_uri: str, data_dir: Path, clock: Callable[[], float]
) -> Flask:
    """The issuer's app on `hub`'s services, wired as `linkhub run --oauth-port` wires it."""
    return create_oauth_app(
        issuer=issuer,
        verification_uri=verification_uri,
        apps=hub.apps,
        id_tokens=IdTokens(load_signing_key(data_dir), issuer, clock, hub.accounts),
        links=hub.links,
        accounts=hub.accounts,
        settings=hub.settings,
        control=hub.control,
    )


def make_issuer(make_hub: HubFactory, data_dir: Path, **hub_options: Any) -> Issuer:
    clock = FakeClock()
    hub = make_hub(clock=clock, poll_interval_s=POLL_INTERVAL_S, **hub_options)
    owner = hub.accounts.create("alice", "correct horse battery staple").id
    http = oauth_app(hub, ISSUER, LINK_PAGE, data_dir, clock).test_client()
    http.environ_base["wsgi.url_scheme"] = "https"  # as cheroot serves it
    return Issuer(hub, clock, http, owner)


@pytest.fixture
def issuer(make_hub: HubFactory, tmp_path: Path) -> Issuer:
    return make_issuer(make_hub, tmp_path)


def error_of(answer: TestResponse) -> str:
    assert answer.status_code == 400, (answer.status_code, answer.get_data(as_text=True))
    assert answer.mimetype == "application/json"
    # RFC 8628 §3.5's answers are plain errors: nothing tells the client to back off or authenticate.
    assert "Retry-After" not in answer.headers and "WWW-Authenticate" not in answer.headers
    return answer.get_json()["error"]  # type: ignore[no-any-return]


# --- discovery ---------------------------------------------------------------------------
def test_discovery_names_every_endpoint_under_the_issuer(issuer: Issuer) -> None:
    answer = issuer.http.get("/oauth/.well-known/openid-configuration")
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    document = answer.get_json()
    assert document["issuer"] == ISSUER  # byte for byte
    for name in (
        "device_authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "authorization_endpoint",
        "revocation_endpoint",
        "userinfo_endpoint",
    ):
        assert document[name].startswith(ISSUER + "/"), name
        path = urlsplit(document[name]).path
        assert issuer.http.open(path, method="OPTIONS").status_code != 404, name
    assert set(document["grant_types_supported"]) >= {DEVICE_GRANT, "refresh_token"}
    assert "RS256" in document["id_token_signing_alg_values_supported"]
    assert document["subject_types_supported"] == ["public"]
    assert document["response_types_supported"]
    assert set(document["scopes_supported"]) >= set(ALL_ASKED.split())
    # RFC 8414's name for the same document.
    assert issuer.http.get("/oauth/.well-known/oauth-authorization-server").get_json() == document


def test_the_authorization_endpoint_answers_unsupported_response_type(issuer: Issuer) -> None:
    answer = issuer.http.get("/oauth/authorize?response_type=code&client_id=x&redirect_uri=https://x.test/")
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "unsupported_response_type"
    assert "Location" not in answer.headers  # nowhere is redirected to


# --- the device authorization endpoint ---------------------------------------------------------
@pytest.mark.parametrize("content_type", [FORM, FORM + ";charset=UTF-8", FORM + "; charset=utf-8"])
def test_device_authorization_answers_the_codes(issuer: Issuer, content_type: str) -> None:
    answer = issuer.post(
        "device_authorization",
        {"client_id": "media-centre", "scope": "openid devices:read", "nonce": "ignored", "x-unknown": "1"},
        content_type=content_type,
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.headers["Cache-Control"] == "no-store"
    body = answer.get_json()
    assert set(body) >= {
        "device_code", "user_code", "verification_uri", "verification_uri_complete", "expires_in", "interval",
        "message",
    }  # fmt: skip
    assert body["verification_uri"] == LINK_PAGE
    assert body["verification_uri_complete"] == f"{LINK_PAGE}?code={body['user_code']}"
    assert type(body["expires_in"]) is int and body["expires_in"] == 900
    assert type(body["interval"]) is int and body["interval"] == POLL_INTERVAL_S
    assert LINK_PAGE in body["message"] and body["user_code"] in body["message"]
    # The same codes as devices show, read as forgivingly on /link.
    shown = body["user_code"]
    assert len(shown) == 9 and shown[4] == "-" and not set(shown) & set("AEIOU0123456789")
    assert issuer.hub.apps.lookup_code(shown.lower().replace("-", " "), issuer.owner).status == "pending"


def test_device_authorization_refuses_what_it_cannot_serve(issuer: Issuer) -> None:
    assert (
        error_of(issuer.post("device_authorization", {"client_id": "x", "scope": "admin"})) == "invalid_scope"
    )
    missing = issuer.post("device_authorization", {"scope": "openid"})
    assert missing.status_code in (400, 401) and missing.get_json()["error"] == "invalid_client"
    # A public client only: a secret it does not have is not accepted either.
    secret = issuer.post("device_authorization", {"client_id": "x", "client_secret": "s"})
    assert secret.status_code in (400, 401) and secret.get_json()["error"] == "invalid_client"


def test_a_crowd_of_waiting_apps_is_capped(issuer: Issuer) -> None:
    for index in range(MAX_PENDING_GRANTS):
        issuer.start(f"app-{index}", "openid")
    answer = issuer.post("device_authorization", {"client_id": "one-more", "scope": "openid"})
    assert answer.status_code == 503 and answer.get_json()["error"] == "temporarily_unavailable"
    assert int(answer.headers["Retry-After"]) > 0
    issuer.clock.advance(issuer.hub.config.code_lifetime_s)  # they expire: room again
    assert issuer.start("one-more", "openid")["user_code"]


def test_a_registered_app_asks_by_name_and_within_its_scopes(issuer: Issuer) -> None:
    issuer.hub.apps.register("wall-tablet", "Hall tablet", "openid devices:read")
    refused = issuer.post(
        "device_authorization", {"client_id": "wall-tablet", "scope": "openid settings:write"}
    )
    assert error_of(refused) == "invalid_scope"
    started = issuer.start("wall-tablet", "openid devices:read")
    found = issuer.hub.apps.lookup_code(started["user_code"], issuer.owner)
    assert found.request is not None and found.request.app_name == "Hall tablet"
    unregistered = issuer.start("someone-else", "openid")
    other = issuer.hub.apps.lookup_code(unregistered["user_code"], issuer.owner)
    assert other.request is not None and other.request.app_name is None  # shown as unverified


def test_unregistered_apps_may_be_refused_altogether(make_hub: HubFactory, tmp_path: Path) -> None:
    closed = make_issuer(make_hub, tmp_path)
    closed.hub.apps.allow_unregistered = False
    answer = closed.post("device_authorization", {"client_id": "stranger", "scope": "openid"})
    assert answer.get_json()["error"] == "invalid_client"
    closed.hub.apps.register("known", "Known app", "openid")
    assert closed.start("known", "openid")["user_code"]


# --- the token endpoint ---------------------------------------------------------------------
def test_polls_are_pending_until_approved_and_slow_down_is_measured_between_polls(issuer: Issuer) -> None:
    started = issuer.start()
    code = started["device_code"]
    assert error_of(issuer.poll(code)) == "authorization_pending"  # the first poll is never too soon
    assert error_of(issuer.poll(code)) == "slow_down"  # at once again: the interval is now 10 s
    issuer.clock.advance(POLL_INTERVAL_S)  # the old interval is no longer enough
    assert error_of(issuer.poll(code)) == "slow_down"  # and it grows again: 15 s
    issuer.clock.advance(POLL_INTERVAL_S + 3 * SLOW_DOWN_STEP_S)
    assert error_of(issuer.poll(code)) == "authorization_pending"
    other = issuer.start()  # another device_code has its own pace
    assert error_of(issuer.poll(other["device_code"])) == "authorization_pending"

    issuer.clock.advance(60)
    issuer.hub.apps.approve(started["user_code"], issuer.owner)
    tokens = issuer.poll(code)
    assert tokens.status_code == 200, tokens.get_data(as_text=True)
    assert tokens.headers["Cache-Control"] == "no-store"
    body = tokens.get_json()
    assert body["token_type"] == "Bearer" and body["access_token"] and body["refresh_token"]
    assert type(body["expires_in"]) is int and body["expires_in"] > 0
    assert body["scope"].split() == ALL_ASKED.split()
    # One exchange per device_code.
    assert error_of(issuer.poll(code)) == "invalid_grant"


def test_a_denied_code_gets_access_denied(issuer: Issuer) -> None:
    started = issuer.start()
    issuer.hub.apps.deny(started["user_code"], issuer.owner)
    assert error_of(issuer.poll(started["device_code"])) == "access_denied"
    kinds = [entry.kind for entry in issuer.hub.activity.recent(issuer.owner)]
    assert ActivityKind.APP_DENIED in kinds


def test_an_expired_code_gets_expired_token_also_on_late_polls(issuer: Issuer) -> None:
    started = issuer.start()
    issuer.clock.advance(started["expires_in"])
    assert error_of(issuer.poll(started["device_code"])) == "expired_token"
    issuer.clock.advance(3600)
    assert error_of(issuer.poll(started["device_code"])) == "expired_token"
    assert issuer.hub.apps.lookup_code(started["user_code"], issuer.owner).status == "expired"
    # Approved, then left until it expired: no tokens either.
    late = issuer.start()
    issuer.hub.apps.approve(late["user_code"], issuer.owner)
    issuer.clock.advance(late["expires_in"])
    assert error_of(issuer.poll(late["device_code"])) == "expired_token"


def test_a_device_code_is_only_its_own_apps(issuer: Issuer) -> None:
    started = issuer.start("media-centre")
    issuer.hub.apps.approve(started["user_code"], issuer.owner)
    assert error_of(issuer.poll(started["device_code"], client_id="thief")) == "invalid_grant"
    assert error_of(issuer.poll("not-a-code")) == "invalid_grant"
    assert issuer.poll(started["device_code"]).status_code == 200


def test_the_id_token_verifies_against_jwks_uri(issuer: Issuer) -> None:
    tokens = issuer.linked("media-centre")
    document = issuer.http.get("/oauth/.well-known/openid-configuration").get_json()
    jwks = issuer.http.get(urlsplit(document["jwks_uri"]).path).get_json()
    assert all("d" not in key for key in jwks["keys"])  # the public half only
    header = json.loads(_b64(tokens["id_token"].split(".")[0]))
    assert header["alg"] == "RS256" and header["kid"] in {key["kid"] for key in jwks["keys"]}
    verified = jwt.decode(tokens["id_token"], KeySet.import_key_set(jwks), algorithms=["RS256"])
    claims = verified.claims
    assert claims["iss"] == ISSUER and claims["aud"] == "media-centre" and claims["sub"] == str(issuer.owner)
    assert claims["iat"] == int(issuer.clock()) and claims["exp"] > claims["iat"]
    assert claims["preferred_username"] == "alice"  # profile was asked
    # Signed by this hub's key: a token changed on the way does not verify.
    forged = tokens["id_token"][:-4] + ("AAAA" if not tokens["id_token"].endswith("AAAA") else "BBBB")
    with pytest.raises(Exception):  # noqa: B017  (joserfc's BadSignatureError, whatever its module)
        jwt.decode(forged, KeySet.import_key_set(jwks), algorithms=["RS256"])
    # No openid: no id_token.
    assert "id_token" not in issuer.linked("script", "devices:read")


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


# --- tokens after linking -------------------------------------------------------------------
def test_refresh_tokens_rotate_and_a_reused_one_revokes_the_family(issuer: Issuer) -> None:
    first = issuer.linked()
    refreshed = issuer.refresh(first["refresh_token"])
    assert refreshed.status_code == 200, refreshed.get_data(as_text=True)
    second = refreshed.get_json()
    assert (
        second["refresh_token"] != first["refresh_token"] and second["access_token"] != first["access_token"]
    )
    assert issuer.api("/api/devices", second["access_token"]).status_code == 200

    # The old refresh token again: someone else holds a copy. Every token of the link ends.
    reused = issuer.refresh(first["refresh_token"])
    assert error_of(reused) == "invalid_grant"
    assert issuer.api("/api/devices", second["access_token"]).status_code == 401
    again = issuer.refresh(second["refresh_token"])
    assert error_of(again) == "invalid_grant"
    assert issuer.hub.apps.linked_apps(issuer.owner) == []
    details = [
        e.detail for e in issuer.hub.activity.recent(issuer.owner) if e.kind == ActivityKind.APP_UNLINKED
    ]
    assert any("used twice" in detail for detail in details)


def test_a_token_of_an_unlinked_app_gets_401_at_once(issuer: Issuer) -> None:
    tokens = issuer.linked()
    assert issuer.api("/api/devices", tokens["access_token"]).status_code == 200
    (app,) = issuer.hub.apps.linked_apps(issuer.owner)
    assert app.client_id == "media-centre" and app.app_name is None
    issuer.hub.apps.unlink(app.family_id, issuer.owner)
    answer = issuer.api("/api/devices", tokens["access_token"])
    assert answer.status_code == 401 and "Bearer" in answer.headers["WWW-Authenticate"]
    refresh = issuer.refresh(tokens["refresh_token"])
    assert error_of(refresh) == "invalid_grant"


def test_the_app_revokes_its_own_access(issuer: Issuer) -> None:
    tokens = issuer.linked()
    answer = issuer.post("revoke", {"token": tokens["refresh_token"], "client_id": "media-centre"})
    assert answer.status_code == 200
    assert issuer.api("/api/devices", tokens["access_token"]).status_code == 401
    # RFC 7009 §2.2: an unknown token is no error either.
    assert issuer.post("revoke", {"token": "nothing-like-it", "client_id": "media-centre"}).status_code == 200


def test_an_access_token_expires(issuer: Issuer) -> None:
    tokens = issuer.linked()
    issuer.clock.advance(tokens["expires_in"])
    assert issuer.api("/api/devices", tokens["access_token"]).status_code == 401


def test_userinfo_and_scopes_decide_what_a_token_opens(issuer: Issuer) -> None:
    reader = issuer.linked("reader", "openid profile devices:read")
    info = issuer.api("/userinfo", reader["access_token"]).get_json()
    assert info == {"sub": str(issuer.owner), "name": "alice", "preferred_username": "alice"}
    denied = issuer.api("/api/devices/anything/settings", reader["access_token"])
    assert denied.status_code == 403 and denied.get_json()["error"] == "insufficient_scope"
    no_openid = issuer.linked("script", "devices:read")
    assert issuer.api("/userinfo", no_openid["access_token"]).status_code == 403
    assert issuer.api("/api/devices", "made-up-token").status_code == 401


@pytest.fixture
def thermostat(issuer: Issuer, broker: RunningBroker, tmp_path: Path) -> Iterator[tuple[str, RunThread]]:
    path = tmp_path / "thermostat.json"
    device_id = link_profile(issuer.hub, broker, path, issuer.owner, "thermostat", "Hall Thermostat")
    running = RunThread(path)
    running.wait_for("online")
    wait_until(lambda: issuer.hub.control.state_of(device_id), what="the thermostat's first state")
    yield device_id, running
    running.close()


def test_an_app_reads_devices_changes_settings_and_sends_commands(
    issuer: Issuer, thermostat: tuple[str, RunThread]
) -> None:
    device_id, running = thermostat
    tokens = issuer.linked()
    listed = issuer.api("/api/devices", tokens["access_token"]).get_json()["devices"]
    assert [d["device_id"] for d in listed] == [device_id]
    keys = {c["key"]: c for c in listed[0]["components"]}
    assert "target" in keys and keys["target"]["commandable"]

    sent = issuer.api(
        f"/api/devices/{device_id}/command", tokens["access_token"], "POST", {"key": "target", "value": 22.5}
    )
    assert sent.status_code == 202, sent.get_data(as_text=True)
    assert running.wait_for("command")["state"] == 22.5
    refused = issuer.api(
        f"/api/devices/{device_id}/command", tokens["access_token"], "POST", {"key": "target", "value": 99}
    )
    assert refused.status_code == 409 and refused.get_json()["error"] == "invalid_value"

    changed = issuer.api(f"/api/devices/{device_id}/settings", tokens["access_token"], "PATCH", {"eco": True})
    assert changed.status_code == 200, changed.get_data(as_text=True)
    assert changed.get_json()["desired"]["eco"] is True
    read = issuer.api(f"/api/devices/{device_id}/settings", tokens["access_token"]).get_json()
    assert read["desired"]["eco"] is True

    # Another account's app sees none of it.
    bob = issuer.hub.accounts.create("bob", "bob's long password").id
    started = issuer.start("bobs-app")
    issuer.hub.apps.approve(started["user_code"], bob)
    bobs = issuer.poll(started["device_code"], "bobs-app").get_json()
    assert issuer.api("/api/devices", bobs["access_token"]).get_json()["devices"] == []
    assert issuer.api(f"/api/devices/{device_id}/settings", bobs["access_token"]).status_code == 404
    other = issuer.api(
        f"/api/devices/{device_id}/command", bobs["access_token"], "POST", {"key": "target", "value": 21}
    )
    assert other.status_code == 404


def test_linking_and_unlinking_an_app_is_in_the_activity(issuer: Issuer) -> None:
    issuer.linked()
    (app,) = issuer.hub.apps.linked_apps(issuer.owner)
    issuer.hub.apps.unlink(app.family_id, issuer.owner, address="192.0.2.7")
    entries = issuer.hub.activity.recent(issuer.owner)
    kinds = [entry.kind for entry in entries]
    assert ActivityKind.APP_LINKED in kinds and ActivityKind.APP_UNLINKED in kinds
    unlinked = next(e for e in entries if e.kind == ActivityKind.APP_UNLINKED)
    assert "media-centre (unverified)" in unlinked.detail and unlinked.address == "192.0.2.7"


def test_removing_a_member_ends_their_apps(issuer: Issuer) -> None:
    bob = issuer.hub.accounts.create("bob", "bob's long password").id
    started = issuer.start("bobs-app")
    issuer.hub.apps.approve(started["user_code"], bob)
    tokens = issuer.poll(started["device_code"], "bobs-app").get_json()
    assert issuer.api("/api/devices", tokens["access_token"]).status_code == 200
    household = Household(issuer.hub.accounts, issuer.hub.activity, issuer.hub.links, issuer.hub.apps)
    household.remove_member(bob, origin=Origin.CLI)
    assert issuer.api("/api/devices", tokens["access_token"]).status_code == 401
