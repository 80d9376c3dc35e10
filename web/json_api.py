"""What the two JSON apps (the CLI's control socket and the account service's
API) share: one error shape, `{"error": code, "message": text}`, and reading a
JSON object body."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter, ValidationError
from werkzeug.wrappers import Response as BaseResponse

from hub.errors import AccountError, LinkHubError

JsonReply = tuple[BaseResponse, int]

# Ids are SQL BIGINTs; a larger number reaching the database raises
# (OverflowError in the driver) instead of finding nothing.
SQL_INT_MIN, SQL_INT_MAX = -(2**63), 2**63 - 1


class BadRequest(LinkHubError):
    """A body the project's own clients never send; answered with 400, not raised further."""


def json_error(reason: str, message: str, status: int) -> JsonReply:
    return jsonify(error=reason, message=message), status


def json_body() -> dict[str, Any]:
    try:
        parsed = request.get_json(silent=True)
    except RecursionError:
        # `silent` covers what json.loads raises as ValueError, not nesting
        # deep enough to exhaust the parser (tests/test_properties.py).
        raise BadRequest("the body nests too deeply") from None
    if not isinstance(parsed, dict):
        raise BadRequest("the body must be a JSON object")
    return parsed


def in_sql_range(value: int) -> bool:
    return SQL_INT_MIN <= value <= SQL_INT_MAX


class SqlIntConverter(IntegerConverter):
    """`<int:...>` in URLs, bounded to what a SQL BIGINT holds: a larger id
    matches no route (404), so it never reaches the database. Installed as the
    apps' `int` converter before their routes are added."""

    def to_python(self, value: str) -> Any:
        number = super().to_python(value)
        if not in_sql_range(number):
            raise ValidationError()
        return number


def http_error(exc: HTTPException) -> JsonReply:
    """Flask's own refusals (404, 405, 413, ...) in the same JSON shape."""
    return json_error((exc.name or "error").lower().replace(" ", "_"), exc.description or "", exc.code or 500)


def register_json_errors(app: Flask, *, unavailable: str) -> None:
    """The error handlers both JSON APIs share (the control API and the account
    service API): a body our clients never send is 400 `bad_request`, a refused
    account change 400 `account_error`, any other LinkHubError 503 named
    `unavailable` (nothing was done), and Flask's own refusals in the same shape.
    A blueprint's handlers for narrower errors are asked first."""

    def bad_request(exc: BadRequest) -> JsonReply:
        return json_error("bad_request", str(exc), HTTPStatus.BAD_REQUEST)

    def account_refused(exc: AccountError) -> JsonReply:
        return json_error("account_error", str(exc), HTTPStatus.BAD_REQUEST)

    def failed(exc: LinkHubError) -> JsonReply:
        return json_error(unavailable, str(exc), HTTPStatus.SERVICE_UNAVAILABLE)

    app.register_error_handler(BadRequest, bad_request)
    app.register_error_handler(AccountError, account_refused)
    app.register_error_handler(LinkHubError, failed)
    app.register_error_handler(HTTPException, http_error)
