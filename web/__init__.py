"""LinkHub's web pages: where a person signs in, approves a device's code and
changes the settings the hub sends to the account's devices.

The pages reach the hub only through the service objects handed to
`create_app`, so they run the same against the daemon and in tests.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from flask import Flask, Response, jsonify, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from hub.core.accounts import AccountDirectory
from hub.errors import AccountServiceUnavailable, StorageFull
from hub.services.activity import ActivityLog
from hub.services.apps import AppService
from hub.services.device_control import DeviceControl
from hub.services.handover import Handover
from hub.services.home_assistant import HomeAssistantLogin
from hub.services.household import Household
from hub.services.links import LinkService
from hub.services.settings import SettingsService
from web import account, auth, devices, household, link, preferences, timefmt, two_factor
from web import activity as activity_page
from web.ca_certificate import install_ca_certificate
from web.config import WebConfig
from web.health import HealthCheck, MetricsExposition, install_probes
from web.hosts import HostCheck
from web.json_api import JsonReply, SqlIntConverter, http_error, json_error
from web.services import WebServices, install, services
from web.sessions import SessionRecords

__all__ = ["SessionRecords", "WebConfig", "WebServices", "create_app", "services"]

# The codes are in URLs (?code=...) and forms: keep them out of Referer headers,
# caches and other origins; scripts only from the hub (static/link.js), nothing
# from a CDN (the LAN may have no internet), no inline script.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def session_cookie_name(*, https: bool) -> str:
    """`__Host-` over HTTPS: the browser then takes the cookie only if it is Secure,
    on Path=/ and without Domain, so a page on another port or a plain-HTTP page
    of this host cannot set one that shadows it (RFC 6265bis §4.1.3.2)."""
    return "__Host-linkhub_session" if https else "linkhub_session"


def install_host_check(app: Flask, check: HostCheck) -> None:
    """Refuse any `Host` that is not the hub's (web/hosts.py), before anything else runs."""

    @app.before_request
    def refuse_other_hosts() -> tuple[str, int] | None:
        if check.allows(request.host):
            return None
        body = render_template(
            "error.html",
            title="Not this hub's name",
            message="This hub answers only to its own names and addresses. Open it with the address "
            "it printed when it started, or add this name to web_hosts (docs/configuration.md).",
        )
        return body, 400


def create_app(
    config: WebConfig,
    *,
    links: LinkService,
    accounts: AccountDirectory,
    settings: SettingsService,
    activity: ActivityLog,
    sessions: SessionRecords,
    health: HealthCheck | None = None,
    metrics: MetricsExposition | None = None,
    ca_certificate: str | None = None,
    control: DeviceControl | None = None,
    home_assistant_login: Callable[[], HomeAssistantLogin] | None = None,
    apps: AppService | None = None,
) -> Flask:
    """The pages; with `health` and `metrics` also /healthz and /metrics (web/health.py),
    with `ca_certificate` (PEM) also /ca.pem (web/ca_certificate.py)."""
    app = Flask(__name__)
    app.url_map.converters["int"] = SqlIntConverter  # before the routes: ids the database can hold
    app.config.update(
        SECRET_KEY=config.secret_key,
        TESTING=config.testing,
        # Cookies are per host, not per port: a Pi often runs other web apps whose
        # cookie is called "session" too.
        SESSION_COOKIE_NAME=session_cookie_name(https=config.https),
        SESSION_COOKIE_SECURE=config.https,
        # The token and SameSite stop cross-site posts; the strict Referer check
        # flask-wtf adds on HTTPS cannot work with Referrer-Policy: no-referrer.
        WTF_CSRF_SSL_STRICT=False,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        # The cookie lasts as long as the hub's record of the session (web/sessions.py).
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=config.session_lifetime_s),
        # The cookie is written when the session changes, not on every answer: the
        # hub's record fixes when it ends anyway, and an answer that refuses a
        # planted cookie (web/auth.py) must not write the one it read back on Path=/.
        SESSION_REFRESH_EACH_REQUEST=False,
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    install(
        app,
        WebServices(
            links=links,
            accounts=accounts,
            settings=settings,
            activity=activity,
            household=Household(accounts, activity, links, apps),
            handover=Handover(accounts, activity, links, settings),
            limits=config.limits,
            clock=config.clock,
            sessions=sessions,
            session_lifetime_s=config.session_lifetime_s,
            limits_clock=config.limits_clock,
            waiting_list=config.waiting_list,
            control=control,
            home_assistant_login=home_assistant_login,
            apps=apps,
        ),
    )
    # Before anything else runs (CSRF included): functions run in the order installed,
    # the blueprints' before_app_request after these.
    install_host_check(app, HostCheck(config.host_names))
    app.before_request(auth.refuse_planted_cookies)
    CSRFProtect(app)
    auth.install_sign_in(app, config)
    timefmt.register(app)

    app.register_blueprint(auth.bp)
    app.register_blueprint(two_factor.bp)
    app.register_blueprint(account.bp)
    app.register_blueprint(link.bp)
    app.register_blueprint(devices.bp)
    app.register_blueprint(preferences.bp)
    app.register_blueprint(household.bp)
    app.register_blueprint(activity_page.bp)
    install_probes(app, health=health, metrics=metrics, token=config.probe_token)
    install_ca_certificate(app, ca_certificate)

    @app.after_request
    def security_headers(response: Response) -> Response:
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.endpoint != "static":
            # Pages show codes and device lists: a shared phone's back button or
            # cache must not show them to the next person.
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.errorhandler(CSRFError)
    def csrf_failed(error: CSRFError) -> tuple[str, int] | tuple[Response, int]:
        if request.path.startswith("/api/"):
            # A script gets a reason it can read: the token goes in the X-CSRFToken header.
            return jsonify(
                error="csrf_failed",
                message=f"{error.description} Send the csrf_token of a signed-in page "
                "in the X-CSRFToken header.",
            ), 400
        return (
            render_template(
                "error.html",
                title="Please try again",
                message="This form was open too long or did not come from this hub. "
                "Go back, reload the page and try again.",
            ),
            400,
        )

    @app.errorhandler(AccountServiceUnavailable)
    def accounts_away(error: AccountServiceUnavailable) -> tuple[str, int]:
        # Devices keep working (settings are local first); only sign-in and
        # account pages wait for the account service.
        return (
            render_template(
                "error.html",
                title="Accounts are not reachable",
                message="The account service is not answering, so signing in has to wait. "
                "Linked devices keep working and no change is lost. Try again in a minute.",
            ),
            503,
        )

    @app.errorhandler(StorageFull)
    def storage_full(error: StorageFull) -> tuple[str, int] | JsonReply:
        return _cannot_store(str(error))

    @app.errorhandler(OperationalError)
    def database_failed(error: OperationalError) -> tuple[str, int] | JsonReply:
        # A disk that filled up or went read-only under the guard's threshold (or a
        # PostgreSQL server's own disk): say so, 503, instead of a bare 500.
        text = str(error.orig).lower()
        if any(sign in text for sign in _CANNOT_WRITE):
            return _cannot_store(f"the database cannot write ({str(error.orig).strip()[:200]})")
        raise error

    @app.errorhandler(404)
    def not_found(error: HTTPException) -> tuple[str, int] | JsonReply:
        if request.path.startswith("/api/"):
            return http_error(error)
        return render_template("error.html", title="Not found", message="There is no such page."), 404

    @app.errorhandler(HTTPException)
    def api_refused(error: HTTPException) -> HTTPException | JsonReply:
        # Scripts on /api/ read JSON whatever Flask refuses (405, 413, ...);
        # pages keep Flask's own answer.
        return http_error(error) if request.path.startswith("/api/") else error

    return app


# What SQLite ("database or disk is full", "attempt to write a readonly database")
# and PostgreSQL (SQLSTATE 53100 disk_full: "No space left on device") say.
_CANNOT_WRITE = ("disk is full", "readonly database", "read-only", "no space left on device")


def _cannot_store(cause: str) -> tuple[str, int] | JsonReply:
    if request.path.startswith("/api/"):
        return json_error("insufficient_storage", f"Nothing was changed: {cause}.", 503)
    return (
        render_template(
            "error.html",
            title="The hub cannot store changes now",
            message=f"Nothing was changed: {cause}. What is already stored is kept and shown; "
            "free some space on the hub and try again.",
        ),
        503,
    )
