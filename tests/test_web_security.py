"""The web's protections, checked over every page and form there is, so a page
added later is covered without anyone remembering to: CSRF tokens in every
form and refusals without them, the session cookie's flags, a
Content-Security-Policy that allows no inline script, and no open redirect
after signing in."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from conftest import HubFactory, hub_pages
from conftest import csrf_token as token
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.routing import Rule

from hub.daemon import Hub
from web import WebConfig
from web.auth import safe_next

TEMPLATES = Path(__file__).resolve().parent.parent / "web" / "templates"
OWNER = "alice"
PASSWORD = "correct horse battery"
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
_FORM = re.compile(r"<form\b([^>]*)>(.*?)</form>", re.S | re.I)


@pytest.fixture
def hub(make_hub: HubFactory) -> Hub:
    made = make_hub()
    made.accounts.create(OWNER, PASSWORD)
    return made


def web_app(hub: Hub) -> Flask:
    return hub_pages(hub, WebConfig(secret_key="test", testing=True, clock=time.time))



def signed_in(app: Flask) -> FlaskClient:
    client = app.test_client()
    form = client.get("/login")
    response = client.post("/login", data={"csrf_token": token(form), "name": OWNER, "password": PASSWORD})
    assert response.status_code == 302
    return client


def unsafe_routes(app: Flask) -> list[tuple[str, str]]:
    """(method, path) of every route that changes something, with made-up ids."""
    found = []
    for rule in app.url_map.iter_rules():
        for method in sorted(set(rule.methods or ()) & set(UNSAFE_METHODS)):
            found.append((method, _path(rule)))
    return found


def get_pages(app: Flask) -> list[str]:
    return [
        _path(rule)
        for rule in app.url_map.iter_rules()
        if "GET" in (rule.methods or ()) and rule.endpoint != "static"
    ]


def _path(rule: Rule) -> str:
    built = rule.build({name: "1" for name in rule.arguments})  # "1" suits int and string ids alike
    assert built is not None
    return built[1]


# --- CSRF ----------------------------------------------------------------------------------
def test_every_post_form_in_the_templates_carries_the_token() -> None:
    posting = 0
    for template in sorted(TEMPLATES.glob("*.html")):
        for attributes, body in _FORM.findall(template.read_text()):
            method = re.search(r'method="([^"]+)"', attributes)
            assert method, f"{template.name}: a form without a method ({attributes.strip()})"
            if method.group(1).lower() == "get":
                continue
            posting += 1
            assert '<input type="hidden" name="csrf_token" value="{{ csrf_token() }}">' in body, (
                f"{template.name}: a {method.group(1)} form without the CSRF token ({attributes.strip()})"
            )
    assert posting >= 10  # the scan found the forms, not nothing


def test_every_route_that_changes_something_refuses_a_request_without_the_token(hub: Hub) -> None:
    app = web_app(hub)
    client = signed_in(app)
    routes = unsafe_routes(app)
    assert ("POST", "/account/two-factor/start") in routes and ("POST", "/logout") in routes
    for method, path in routes:
        for data in ({}, {"csrf_token": "forged"}):
            response = client.open(path, method=method, data=data)
            assert response.status_code == 400, (method, path, data, response.status_code)
            if not path.startswith("/api/"):
                assert "did not come from this hub" in response.get_data(as_text=True), (method, path)
    # Nothing happened: still signed in, two-factor still off, no second account.
    assert client.get("/devices").status_code == 200
    alice = hub.accounts.find(OWNER)
    assert alice is not None and not hub.accounts.two_factor_status(alice.id).enabled
    assert hub.activity.recent(alice.id)[0].kind == "sign_in"  # nothing after it, no sign-out either


def test_a_sign_in_without_the_token_is_refused_before_the_password_is_checked(hub: Hub) -> None:
    client = web_app(hub).test_client()
    response = client.post("/login", data={"name": OWNER, "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/devices").status_code == 302
    alice = hub.accounts.find(OWNER)
    assert alice is not None and hub.activity.recent(alice.id) == []


# --- the cookie and the headers ----------------------------------------------------------------
def test_the_session_cookie_is_httponly_and_samesite(hub: Hub) -> None:
    client = web_app(hub).test_client()
    form = client.get("/login")
    response = client.post("/login", data={"csrf_token": token(form), "name": OWNER, "password": PASSWORD})
    cookies = [
        value for value in response.headers.getlist("Set-Cookie") if value.startswith("linkhub_session=")
    ]
    assert len(cookies) == 1
    flags = [part.strip().lower() for part in cookies[0].split(";")[1:]]
    assert "httponly" in flags and "samesite=lax" in flags and "path=/" in flags
    assert any(flag.startswith("expires=") for flag in flags)  # stays signed in on a household phone


def test_every_page_has_a_policy_that_allows_no_inline_script(hub: Hub) -> None:
    app = web_app(hub)
    client = signed_in(app)
    pages = get_pages(app)
    assert "/account/two-factor" in pages and "/login/two-factor" in pages
    for path in pages:
        response = client.get(path)
        policy = response.headers.get("Content-Security-Policy", "")
        directives = {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}
        assert directives.get("default-src") == ["'self'"], (path, policy)
        assert "script-src" not in directives and "style-src" not in directives, (path, policy)
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, (path, policy)
        assert directives.get("frame-ancestors") == ["'none'"] and directives.get("form-action") == ["'self'"]
        assert directives.get("base-uri") == ["'none'"]
        if response.mimetype == "text/html":
            body = response.get_data(as_text=True)
            assert not _inline_code(body), (path, _inline_code(body))


def test_no_template_has_inline_script_or_style() -> None:
    for template in sorted(TEMPLATES.glob("*.html")):
        found = _inline_code(template.read_text())
        assert not found, f"{template.name}: {found}"


def _inline_code(html: str) -> list[str]:
    """What a strict CSP would block: inline script elements (a script loaded
    from the hub, `src=`, is allowed), event handler attributes, javascript:
    URLs, style elements and attributes."""
    patterns = (r"<script\b(?![^>]*\ssrc=)", r"\son[a-z]+\s*=", r"javascript:", r"<style\b", r"\sstyle\s*=")
    return [match.group(0) for pattern in patterns for match in re.finditer(pattern, html, re.I)]


# --- no open redirect ---------------------------------------------------------------------
EVIL_NEXTS = [
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "https://evil.example/",
    "https:evil.example",
    "javascript:alert(1)",
    "/\t/evil.example",
    "/\r\n//evil.example",
    " //evil.example",
    "evil.example",
    "/%0a/evil.example",
]


@pytest.mark.parametrize("evil", EVIL_NEXTS)
def test_safe_next_refuses_every_way_out(evil: str) -> None:
    target = safe_next(evil)
    # Either refused, or a path a browser keeps on this host.
    assert target is None or (target.startswith("/") and not target.startswith(("//", "/\\"))), target


def test_safe_next_keeps_local_paths() -> None:
    for local in ("/devices", "/link?code=BCDF-GHJK", "/devices/dev-1/unlink", "/%2F%2Fevil.example"):
        assert safe_next(local) == local


@pytest.mark.parametrize("evil", EVIL_NEXTS)
def test_signing_in_never_leaves_the_hub(hub: Hub, evil: str) -> None:
    app = web_app(hub)
    client = app.test_client()
    form = client.get("/login", query_string={"next": evil})
    response = client.post(
        "/login",
        query_string={"next": evil},
        data={"csrf_token": token(form), "name": OWNER, "password": PASSWORD},
    )
    assert response.status_code == 302
    assert _stays_here(response.headers["Location"]), response.headers["Location"]
    # Already signed in, /login sends on at once: the same rule.
    again = client.get("/login", query_string={"next": evil})
    assert _stays_here(again.headers["Location"]), again.headers["Location"]


def _stays_here(location: str) -> bool:
    """A path on this host, as a browser reads a Location header (tabs and newlines dropped)."""
    cleaned = re.sub(r"[\t\r\n]", "", location)
    return cleaned.startswith("/") and not cleaned.startswith(("//", "/\\"))
