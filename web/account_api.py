"""The account service's HTTP JSON API, for running it apart from the hub.

`linkhub account-service` serves this over its own database; a hub started
with `--account-service URL` reaches it through
`hub.services.remote_accounts.RemoteAccountService`. Both ends speak the
`hub.core.accounts.AccountDirectory` interface, so the hub cannot tell
which one it has. The wire format is described in docs/account-service.md.

Only the hub is meant to call this, so every route but the health check needs
the bearer token the service wrote to its data directory. Errors are
`{"error", "message"}` with a stable `error` the client switches on.
"""

from __future__ import annotations

import hmac
import logging
import math
from http import HTTPStatus
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request

from hub.core.accounts import (
    AccountDirectory,
    AccountSummary,
    AccountView,
    SecondFactor,
    SettingsChange,
    TwoFactorStatus,
    VersionedDocument,
)
from web.json_api import (
    BadRequest,
    JsonReply,
    SqlIntConverter,
    in_sql_range,
    json_body,
    json_error,
    register_json_errors,
)
from web.values import non_finite_path

MAX_BODY_BYTES = 64 * 1024
# One answer to GET /v1/changes holds at most this many; a reader asks again
# with after=<last seq>, so one request never has to hold the whole log.
MAX_CHANGES_PER_PAGE = 1000
# Column sizes in hub.store.models.ChangeLogEntry: PostgreSQL refuses longer values,
# so they are a bad request here rather than a server error there.
_MAX_CHANGE_ID = 64
_MAX_DEVICE_ID = 40
_MAX_ORIGIN = 16

log = logging.getLogger(__name__)


def _string(body: dict[str, Any], key: str) -> str:
    # Empty strings pass: whether "" is an acceptable name or password is the
    # directory's decision, so the local and remote services answer alike.
    value = body.get(key)
    if not isinstance(value, str):
        raise BadRequest(f"{key!r} must be a string")
    return value


def _int_arg(name: str, default: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name!r} must be an integer") from None
    if not in_sql_range(value):
        raise BadRequest(f"{name!r} is out of range")
    return value


def _change(body: dict[str, Any]) -> SettingsChange:
    try:
        change = SettingsChange.from_json(body)
    except KeyError as exc:
        raise BadRequest(f"not a settings change: {exc.args[0]!r} is missing") from None
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"not a settings change: {exc}") from None
    if type(body["account_id"]) is not int or not in_sql_range(body["account_id"]):
        raise BadRequest("account_id must be an integer (a SQL BIGINT)")
    if not isinstance(body["change_id"], str) or not 0 < len(change.change_id) <= _MAX_CHANGE_ID:
        raise BadRequest(f"change_id must be a string of 1-{_MAX_CHANGE_ID} characters")
    if change.device_id is not None and (
        not isinstance(change.device_id, str) or len(change.device_id) > _MAX_DEVICE_ID
    ):
        raise BadRequest(f"device_id must be a string of at most {_MAX_DEVICE_ID} characters")
    if len(change.origin) > _MAX_ORIGIN:
        raise BadRequest(f"origin must be at most {_MAX_ORIGIN} characters")
    if not in_sql_range(change.version):
        raise BadRequest("version must be an integer (a SQL BIGINT)")
    # Strict JSON only: NaN and Infinity would be stored as text that no
    # device's parser reads back (Flask's JSON parser lets them in).
    where = non_finite_path(change.patch, "patch")
    if where or not math.isfinite(change.made_at_s):
        raise BadRequest(f"{where or 'made_at_s'}: not a finite JSON number")
    return change


def _account(account: AccountView) -> dict[str, Any]:
    return {
        "id": account.id,
        "name": account.name,
        "is_owner": account.is_owner,
        "two_factor": account.two_factor,
        "two_factor_since_s": account.two_factor_since_s,
        "sessions_ended_at_s": account.sessions_ended_at_s,
        "must_change_password": account.must_change_password,
    }


def _summary(account: AccountSummary) -> dict[str, Any]:
    return {
        "id": account.id,
        "name": account.name,
        "is_owner": account.is_owner,
        "created_at_s": account.created_at_s,
    }


def _two_factor_status(status: TwoFactorStatus) -> dict[str, Any]:
    return {
        "enabled": status.enabled,
        "enabled_at_s": status.enabled_at_s,
        "recovery_codes_left": status.recovery_codes_left,
    }


def _wrong_second_factor() -> JsonReply:
    return json_error("bad_second_factor", "Wrong or used code.", HTTPStatus.UNAUTHORIZED)


def _document(document: VersionedDocument) -> dict[str, Any]:
    return {"document": document.document, "version": document.version}


def _no_account() -> JsonReply:
    # A distinct code, so the client can tell "no such account" from a URL
    # that does not lead to an account service at all (plain not_found).
    return json_error("unknown_account", "There is no such account.", HTTPStatus.NOT_FOUND)


account_api = Blueprint("account_api", __name__)


def directory() -> AccountDirectory:
    found: AccountDirectory = current_app.extensions["linkhub_accounts"]
    return found


@account_api.get("/v1/health")
def health() -> JsonReply:
    return jsonify(ok=True), 200


@account_api.get("/v1/accounts/any")
def has_accounts() -> JsonReply:
    return jsonify(has_accounts=directory().has_accounts()), 200


@account_api.post("/v1/accounts")
def create_account() -> JsonReply:
    body = json_body()
    account = directory().create(_string(body, "name"), _string(body, "password"))
    return jsonify(_account(account)), 201


@account_api.post("/v1/auth")
def authenticate() -> JsonReply:
    body = json_body()
    account = directory().authenticate(_string(body, "name"), _string(body, "password"))
    if account is None:
        # One answer for a wrong password and an unknown name alike.
        return json_error("bad_credentials", "Wrong name or password.", HTTPStatus.UNAUTHORIZED)
    return jsonify(_account(account)), 200


@account_api.get("/v1/accounts/<int(signed=True):account_id>")
def get_account(account_id: int) -> JsonReply:
    account = directory().get(account_id)
    return (jsonify(_account(account)), 200) if account else _no_account()


@account_api.get("/v1/accounts/by-name/<name>")
def find_account(name: str) -> JsonReply:
    account = directory().find(name)
    return (jsonify(_account(account)), 200) if account else _no_account()


# --- the household: the owner's list and removal --------------------------------
@account_api.get("/v1/accounts")
def list_accounts() -> JsonReply:
    return jsonify(accounts=[_summary(account) for account in directory().list_accounts()]), 200


@account_api.delete("/v1/accounts/<int(signed=True):account_id>")
def remove_account(account_id: int) -> JsonReply:
    # The owner's account: AccountError, a 400 account_error like any refusal.
    removed = directory().remove(account_id)
    return (jsonify(_account(removed)), 200) if removed else _no_account()


# --- two-factor sign-in: secrets and recovery code hashes never leave ----------
@account_api.get("/v1/accounts/<int(signed=True):account_id>/two-factor")
def two_factor_status(account_id: int) -> JsonReply:
    return jsonify(_two_factor_status(directory().two_factor_status(account_id))), 200


@account_api.post("/v1/accounts/<int(signed=True):account_id>/two-factor/begin")
def begin_two_factor(account_id: int) -> JsonReply:
    enrolment = directory().begin_two_factor(account_id)
    return jsonify(secret=enrolment.secret, uri=enrolment.uri), 200


@account_api.post("/v1/accounts/<int(signed=True):account_id>/two-factor/confirm")
def confirm_two_factor(account_id: int) -> JsonReply:
    body = json_body()
    codes = directory().confirm_two_factor(account_id, _string(body, "secret"), _string(body, "code"))
    return jsonify(recovery_codes=codes), 200


@account_api.post("/v1/accounts/<int(signed=True):account_id>/two-factor/check")
def check_second_factor(account_id: int) -> JsonReply:
    method: SecondFactor | None = directory().check_second_factor(account_id, _string(json_body(), "code"))
    return (jsonify(method=str(method)), 200) if method else _wrong_second_factor()


@account_api.post("/v1/accounts/<int(signed=True):account_id>/two-factor/used")
def code_already_used(account_id: int) -> JsonReply:
    return jsonify(used=directory().code_already_used(account_id, _string(json_body(), "code"))), 200


@account_api.post("/v1/accounts/<int(signed=True):account_id>/two-factor/disable")
def disable_two_factor(account_id: int) -> JsonReply:
    body = json_body()
    if directory().disable_two_factor(account_id, _string(body, "password"), _string(body, "code")):
        return jsonify(enabled=False), 200
    return json_error("bad_credentials", "Wrong password or code.", HTTPStatus.UNAUTHORIZED)


@account_api.post("/v1/accounts/<int(signed=True):account_id>/two-factor/recovery-codes")
def renew_recovery_codes(account_id: int) -> JsonReply:
    codes = directory().renew_recovery_codes(account_id, _string(json_body(), "code"))
    return (jsonify(recovery_codes=codes), 200) if codes is not None else _wrong_second_factor()


@account_api.post("/v1/accounts/<int(signed=True):account_id>/two-factor/reset")
def reset_two_factor(account_id: int) -> JsonReply:
    # No password or code: the hub asks only for its owner or operator (hub.services.household).
    return jsonify(was_on=directory().reset_two_factor(account_id)), 200


@account_api.post("/v1/accounts/<int(signed=True):account_id>/password")
def change_password(account_id: int) -> JsonReply:
    body = json_body()
    if not directory().change_password(account_id, _string(body, "current"), _string(body, "new")):
        return json_error("bad_credentials", "Wrong password.", HTTPStatus.UNAUTHORIZED)
    return jsonify(changed=True), 200


@account_api.post("/v1/accounts/<int(signed=True):account_id>/password-reset")
def reset_password(account_id: int) -> JsonReply:
    return jsonify(_account(directory().reset_password(account_id, _string(json_body(), "new")))), 200


@account_api.post("/v1/accounts/<int(signed=True):account_id>/end-sessions")
def end_sessions(account_id: int) -> JsonReply:
    return jsonify(sessions_ended_at_s=directory().end_sessions(account_id)), 200


@account_api.post("/v1/changes")
def apply_change() -> JsonReply:
    return jsonify(applied=directory().apply_change(_change(json_body()))), 200


@account_api.get("/v1/changes")
def list_changes() -> JsonReply:
    after = _int_arg("after", 0)
    limit = _int_arg("limit", MAX_CHANGES_PER_PAGE)
    if limit < 0:
        raise BadRequest("'limit' must not be negative")
    logged = directory().changes(after, min(limit, MAX_CHANGES_PER_PAGE))
    return jsonify(
        changes=[
            {"seq": entry.seq, "received_at_s": entry.received_at_s, "change": entry.change.to_json()}
            for entry in logged
        ]
    ), 200


@account_api.get("/v1/accounts/<int(signed=True):account_id>/preferences")
def preferences(account_id: int) -> JsonReply:
    return jsonify(_document(directory().preferences(account_id))), 200


@account_api.get("/v1/devices/<device_id>/settings")
def device_settings(device_id: str) -> JsonReply:
    return jsonify(_document(directory().device_settings(device_id))), 200


def create_account_api(accounts: AccountDirectory, *, token: str) -> Flask:
    if not token:
        # An empty token would make "Authorization: Bearer " a valid sign-in.
        raise ValueError("the account API needs a non-empty bearer token")
    expected = f"Bearer {token}".encode()

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.url_map.converters["int"] = SqlIntConverter  # before the routes: ids the database can hold
    app.extensions["linkhub_accounts"] = accounts

    @app.before_request
    def require_token() -> JsonReply | None:
        # Runs before routing errors are raised, so unknown paths answer 401
        # too and an unauthenticated caller learns nothing about the routes.
        if request.endpoint == "account_api.health":
            return None
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if hmac.compare_digest(given, expected):
            return None
        reply, status = json_error(
            "unauthorized", "A valid bearer token is required.", HTTPStatus.UNAUTHORIZED
        )
        reply.headers["WWW-Authenticate"] = 'Bearer realm="linkhub-account-service"'
        return reply, status

    app.register_blueprint(account_api)
    register_json_errors(app, unavailable="unavailable")

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> JsonReply:
        # The database is down or a bug: the caller must not take this as an
        # answer, and the details belong in our log, not in the reply.
        log.error("account API request failed", exc_info=exc)
        return json_error("internal_error", "The account service failed.", HTTPStatus.INTERNAL_SERVER_ERROR)

    return app
