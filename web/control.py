"""The control API the `linkhub` CLI talks to.

It is served only on a unix socket in the hub's data directory, so it has no
sign-in and no CSRF: whoever may open that socket (its file permissions) may
run the hub anyway. Answers are JSON; errors are `{"error", "message"}` with a
stable `error` the CLI can switch on (a refused settings change: its protocol
error code, e.g. `payload_too_large`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request

from hub.core.accounts import AccountDirectory, AccountView
from hub.core.origin import Origin
from hub.errors import (
    AppRefused,
    HouseholdRefused,
    LinkDecisionError,
    LinkHubError,
    SettingsRefused,
    UnlinkRefused,
)
from hub.services.activity import ActivityLog
from hub.services.apps import AppService, AppView
from hub.services.home_assistant import HomeAssistantLogin
from hub.services.household import Household
from hub.services.links import CodeStatus, LinkService
from hub.services.settings import SettingsService
from web.activity import what
from web.household import status_for_refusal
from web.json_api import BadRequest, JsonReply, json_body, json_error, register_json_errors
from web.link import app_label, status_for
from web.values import non_finite_path, view_json

DEFAULT_ACTIVITY_LIMIT = 100
MAX_ACTIVITY_LIMIT = 10_000


class _NotFound(LinkHubError):
    """An account or device the request names does not exist; `reason` says which."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key!r} must be a non-empty string")
    return value


def _changes(body: dict[str, Any]) -> dict[str, Any]:
    changes = body.get("changes")
    if not isinstance(changes, dict):
        raise BadRequest("'changes' must be a JSON object (a merge patch; null deletes a key)")
    # Flask's JSON parser accepts NaN and Infinity; no device could read them back.
    where = non_finite_path(changes)
    if where:
        raise SettingsRefused("invalid_request", f"{where}: not a JSON number")
    return changes


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_ACTIVITY_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise BadRequest("'limit' must be a whole number") from None
    if not 1 <= limit <= MAX_ACTIVITY_LIMIT:
        raise BadRequest(f"'limit' must be 1-{MAX_ACTIVITY_LIMIT}")
    return limit


@dataclass(frozen=True, slots=True)
class ControlServices:
    """What the control API acts through: the hub's own services."""

    links: LinkService
    accounts: AccountDirectory
    settings: SettingsService
    activity: ActivityLog
    household: Household
    # Makes Home Assistant's broker login (a new password each call); None: discovery is off.
    home_assistant_login: Callable[[], HomeAssistantLogin] | None = None
    apps: AppService | None = None


control = Blueprint("control", __name__)


def services() -> ControlServices:
    found: ControlServices = current_app.extensions["linkhub_control"]
    return found


def account_named(name: str) -> AccountView:
    account = services().accounts.find(name)
    if account is None:
        raise _NotFound("unknown_account", f"There is no account named {name!r}.")
    return account


def _app_code(code: str) -> bool:
    """Whether `code` is an app's (OAuth) rather than a device's."""
    apps = services().apps
    if apps is None or services().links.lookup_code(code).status is not CodeStatus.UNKNOWN:
        return False
    return apps.lookup_code(code).status is not CodeStatus.UNKNOWN


@control.post("/v1/link/approve")
def approve() -> JsonReply:
    body = json_body()
    code, account_name = _text(body, "code"), _text(body, "account")
    account = account_named(account_name)
    if _app_code(code):
        app = _apps().approve(code, account.id)
        return jsonify(client_id=app.client_id, name=app_label(app), account=account.name), 200
    device = services().links.approve(code, account.id, origin=Origin.CLI)
    return jsonify(
        device_id=device.device_id, name=device.name, model=device.model, account=account.name
    ), 200


@control.post("/v1/link/deny")
def deny() -> JsonReply:
    code = _text(json_body(), "code")
    if _app_code(code):
        app = _apps().deny(code, None)
        return jsonify(code=app.user_code, client_id=app.client_id, name=app_label(app), state="denied"), 200
    denied = services().links.deny(code, None, origin=Origin.CLI)
    return jsonify(
        code=denied.user_code,
        name=denied.device_name,
        model=denied.device_model,
        state=str(denied.state),
    ), 200


@control.post("/v1/home-assistant/login")
def home_assistant_login() -> JsonReply:
    if json_body():  # nothing is asked: a body that says something is a mistake
        raise BadRequest("this takes no members: send {}")
    make = services().home_assistant_login
    if make is None:
        raise _NotFound(
            "home_assistant_off", "Home Assistant discovery is off on this hub (home_assistant = false)."
        )
    login = make()
    return jsonify(
        host=login.host,
        port=login.port,
        username=login.username,
        password=login.password,
        tls_port=login.tls_port,
        fields=login.fields(),
    ), 200


@control.get("/v1/devices")
def devices() -> JsonReply:
    found = services().links.list_devices()
    names: dict[int, str | None] = {}
    for account_id in {d.account_id for d in found}:
        account = services().accounts.get(account_id)
        names[account_id] = account.name if account else None
    return jsonify(devices=[dataclasses.asdict(d) | {"account": names[d.account_id]} for d in found]), 200


@control.delete("/v1/devices/<device_id>")
def unlink_device(device_id: str) -> JsonReply:
    # The operator of the hub acts for whichever account holds the device: a
    # device id names one device, so no --account is asked for (as `link deny`).
    device = services().links.unlink(device_id, None, origin=Origin.CLI)
    account = services().accounts.get(device.account_id)
    return jsonify(dataclasses.asdict(device) | {"account": account.name if account else None}), 200


@control.post("/v1/accounts")
def create_account() -> JsonReply:
    body = json_body()
    account = services().household.create_account(
        _text(body, "name"), _text(body, "password"), origin=Origin.CLI
    )
    return jsonify(id=account.id, name=account.name, is_owner=account.is_owner), 201


@control.get("/v1/accounts")
def list_accounts() -> JsonReply:
    members = services().household.members()
    return jsonify(
        accounts=[dataclasses.asdict(member.account) | {"devices": member.devices} for member in members]
    ), 200


@control.delete("/v1/accounts/<path:name>")
def remove_account(name: str) -> JsonReply:
    removed = services().household.remove_member(account_named(name).id, origin=Origin.CLI)
    return jsonify(id=removed.id, name=removed.name), 200


@control.post("/v1/two-factor/off")
def turn_off_two_factor() -> JsonReply:
    # The name in the body: `/v1/accounts/<path:name>` already means the account itself.
    account = services().household.reset_two_factor(
        account_named(_text(json_body(), "account")).id, origin=Origin.CLI
    )
    return jsonify(id=account.id, name=account.name, two_factor=False), 200


@control.post("/v1/accounts/password")
def reset_password() -> JsonReply:
    """`linkhub account password NAME`: the name in the body, like two-factor-off."""
    body = json_body()
    account = services().household.reset_password(
        account_named(_text(body, "account")).id, _text(body, "password"), origin=Origin.CLI
    )
    return jsonify(id=account.id, name=account.name, must_change_password=True), 200


@control.get("/v1/activity")
def recent_activity() -> JsonReply:
    limit = _limit(request.args.get("limit"))
    name = request.args.get("account")
    if name is None:
        events = services().activity.recent_in_household(limit)
    else:
        events = services().activity.recent(account_named(name).id, limit)
    names: dict[int, str | None] = {}
    for account_id in {event.account_id for event in events if event.account_id is not None}:
        account = services().accounts.get(account_id)
        names[account_id] = account.name if account else None  # None: removed since
    return jsonify(
        events=[
            dataclasses.asdict(event)
            | {
                "what": what(event.kind),
                "account": names.get(event.account_id) if event.account_id is not None else None,
            }
            for event in events
        ]
    ), 200


@control.get("/v1/settings/account/<path:name>")  # account names may hold a slash
def account_settings(name: str) -> JsonReply:
    account = account_named(name)
    current = services().settings.preferences(account.id)
    return jsonify(account=account.name, document=current.document, version=current.version), 200


@control.post("/v1/settings/account")
def change_account_settings() -> JsonReply:
    body = json_body()
    account = account_named(_text(body, "account"))
    changed = services().settings.set_preferences(account.id, _changes(body), origin=Origin.CLI)
    return jsonify(account=account.name, document=changed.document, version=changed.version), 200


@control.get("/v1/settings/device/<device_id>")
def device_settings(device_id: str) -> JsonReply:
    view = services().settings.device_view(device_id)
    if view is None:
        raise _NotFound("unknown_device", f"There is no linked device {device_id!r}.")
    return jsonify(view_json(view)), 200


@control.post("/v1/settings/device")
def change_device_settings() -> JsonReply:
    body = json_body()
    view = services().settings.set_device_settings(
        _text(body, "device_id"), _changes(body), origin=Origin.CLI
    )
    return jsonify(view_json(view)), 200


def _apps() -> AppService:
    apps = services().apps
    if apps is None:
        raise _NotFound("no_apps", "This hub links no apps.")
    return apps


def _app_json(app: AppView) -> dict[str, Any]:
    return {"client_id": app.client_id, "name": app.name, "scopes": list(app.scopes)}


@control.get("/v1/apps")
def registered_apps() -> JsonReply:
    return jsonify(apps=[_app_json(app) for app in _apps().apps()]), 200


@control.post("/v1/apps")
def register_app() -> JsonReply:
    body = json_body()
    scopes = body.get("scopes")
    if not isinstance(scopes, list) or not all(isinstance(scope, str) for scope in scopes):
        raise BadRequest("'scopes' must be a list of strings")
    app = _apps().register(_text(body, "client_id"), _text(body, "name"), tuple(scopes))
    return jsonify(_app_json(app)), 200


@control.delete("/v1/apps/<path:client_id>")  # a client_id may hold a slash
def remove_app(client_id: str) -> JsonReply:
    _apps().remove(client_id)
    return jsonify(client_id=client_id), 200


@control.errorhandler(AppRefused)
def app_refused(exc: AppRefused) -> JsonReply:
    status = HTTPStatus.NOT_FOUND if exc.reason == "unknown_app" else HTTPStatus.BAD_REQUEST
    return json_error(exc.reason, str(exc), status)


@control.errorhandler(_NotFound)
def not_found(exc: _NotFound) -> JsonReply:
    return json_error(exc.reason, str(exc), HTTPStatus.NOT_FOUND)


@control.errorhandler(SettingsRefused)
def settings_refused(exc: SettingsRefused) -> JsonReply:
    # The service says "unknown_device" for a device that is not linked (any more).
    status = HTTPStatus.NOT_FOUND if exc.code == "unknown_device" else HTTPStatus.BAD_REQUEST
    return json_error(str(exc.code), str(exc), status)


@control.errorhandler(LinkDecisionError)
def decision_refused(exc: LinkDecisionError) -> JsonReply:
    return json_error(str(exc.reason), str(exc), status_for(exc.reason))


@control.errorhandler(UnlinkRefused)
def unlink_refused(exc: UnlinkRefused) -> JsonReply:
    status = HTTPStatus.CONFLICT if exc.reason == "already_unlinked" else HTTPStatus.NOT_FOUND
    return json_error(exc.reason, str(exc), status)


@control.errorhandler(HouseholdRefused)
def household_refused(exc: HouseholdRefused) -> JsonReply:
    return json_error(exc.reason, str(exc), status_for_refusal(exc.reason))


def create_control_app(
    *,
    links: LinkService,
    accounts: AccountDirectory,
    settings: SettingsService,
    activity: ActivityLog,
    home_assistant_login: Callable[[], HomeAssistantLogin] | None = None,
    apps: AppService | None = None,
) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    household = Household(accounts, activity, links, apps)
    app.extensions["linkhub_control"] = ControlServices(
        links, accounts, settings, activity, household, home_assistant_login, apps
    )
    app.register_blueprint(control)
    # Nothing was decided on a LinkHubError the routes do not name: e.g. the
    # broker did not confirm a device's credentials.
    register_json_errors(app, unavailable="hub_unavailable")
    return app
