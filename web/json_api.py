"""What the two JSON apps (the CLI's control socket and the account service's
API) share: one error shape, `{"error": code, "message": text}`, and reading a
JSON object body."""

from __future__ import annotations

from typing import Any

from flask import jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

JsonReply = tuple[BaseResponse, int]


class BadRequest(Exception):
    """A body the project's own clients never send; answered with 400, not raised further."""


def json_error(reason: str, message: str, status: int) -> JsonReply:
    return jsonify(error=reason, message=message), status


def json_body() -> dict[str, Any]:
    parsed = request.get_json(silent=True)
    if not isinstance(parsed, dict):
        raise BadRequest("the body must be a JSON object")
    return parsed


def http_error(exc: HTTPException) -> JsonReply:
    """Flask's own refusals (404, 405, 413, ...) in the same JSON shape."""
    return json_error((exc.name or "error").lower().replace(" ", "_"), exc.description or "", exc.code or 500)
