"""The control API the `linkhub` CLI talks to.

It is served only on a unix socket in the hub's data directory, so it has no
sign-in and no CSRF: whoever may open that socket (its file permissions) may
run the hub anyway. Answers are JSON; errors are `{"error", "message"}` with a
stable `error` the CLI can switch on.
"""

from __future__ import annotations

import dataclasses
from http import HTTPStatus
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from hub.accounts import AccountService
from hub.errors import AccountError, LinkDecisionError, LinkHubError
from hub.link_service import LinkService
from web.link import status_for

JsonReply = tuple[BaseResponse, int]


class _BadRequest(Exception):
    """A request body the CLI should never send; reported, not raised further."""


def _error(reason: str, message: str, status: int) -> JsonReply:
    return jsonify(error=reason, message=message), status


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise _BadRequest("the body must be a JSON object")
    return body


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise _BadRequest(f"{key!r} must be a non-empty string")
    return value


def create_control_app(*, links: LinkService, accounts: AccountService) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024

    @app.post("/v1/link/approve")
    def approve() -> JsonReply:
        body = _body()
        code, account_name = _text(body, "code"), _text(body, "account")
        account = accounts.find(account_name)
        if account is None:
            return _error("unknown_account", f"There is no account named {account_name!r}.", 404)
        device = links.approve(code, account.id)
        return jsonify(
            device_id=device.device_id, name=device.name, model=device.model, account=account.name
        ), 200

    @app.post("/v1/link/deny")
    def deny() -> JsonReply:
        denied = links.deny(_text(_body(), "code"), None)
        return jsonify(
            code=denied.user_code,
            name=denied.device_name,
            model=denied.device_model,
            state=str(denied.state),
        ), 200

    @app.get("/v1/devices")
    def devices() -> JsonReply:
        found = links.list_devices()
        names: dict[int, str | None] = {}
        for account_id in {d.account_id for d in found}:
            account = accounts.get(account_id)
            names[account_id] = account.name if account else None
        return jsonify(devices=[dataclasses.asdict(d) | {"account": names[d.account_id]} for d in found]), 200

    @app.post("/v1/accounts")
    def create_account() -> JsonReply:
        body = _body()
        account = accounts.create(_text(body, "name"), _text(body, "password"))
        return jsonify(id=account.id, name=account.name, is_owner=account.is_owner), 201

    @app.errorhandler(_BadRequest)
    def bad_request(exc: _BadRequest) -> JsonReply:
        return _error("bad_request", str(exc), HTTPStatus.BAD_REQUEST)

    @app.errorhandler(LinkDecisionError)
    def decision_refused(exc: LinkDecisionError) -> JsonReply:
        return _error(str(exc.reason), str(exc), status_for(exc.reason))

    @app.errorhandler(AccountError)
    def account_refused(exc: AccountError) -> JsonReply:
        return _error("account_error", str(exc), HTTPStatus.BAD_REQUEST)

    @app.errorhandler(LinkHubError)
    def hub_failed(exc: LinkHubError) -> JsonReply:
        # Nothing was decided: e.g. the broker did not confirm a device's credentials.
        return _error("hub_unavailable", str(exc), HTTPStatus.SERVICE_UNAVAILABLE)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> JsonReply:
        return _error((exc.name or "error").lower().replace(" ", "_"), exc.description or "", exc.code or 500)

    return app
