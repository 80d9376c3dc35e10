"""The OAuth 2.0 device authorization server for apps that speak HTTP (RFC 8628),
with OpenID Connect discovery, served over HTTPS on its own port (`linkhub run
--oauth-port N`, docs/oauth.md).

Every route is under the issuer's path (`/oauth` by default): discovery, the
device authorization and token endpoints (web/oauth/server.py, Authlib),
revocation, the JWK set and userinfo, and a small resource API an app's token
opens for the account that approved it. The person's side is the pages' own
/link: a code an app shows is typed there like a device's.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from authlib.integrations.flask_oauth2 import ResourceProtector, current_token
from flask import Blueprint, Flask, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from hub.core.accounts import AccountDirectory
from hub.core.oauth import (
    ALL_SCOPES,
    DEVICES_COMMAND,
    DEVICES_READ,
    SETTINGS_READ,
    SETTINGS_WRITE,
    grants,
)
from hub.core.origin import Origin
from hub.errors import CommandRefused, SettingsRefused
from hub.services.apps import AppService
from hub.services.device_control import DeviceControl
from hub.services.links import DeviceView, LinkService
from hub.services.settings import SettingsService
from web.oauth.id_tokens import SIGNING_ALGORITHM, IdTokens, profile_claims, subject
from web.oauth.server import GRANT_TYPES, AccessTokens, OAuthServer, Token
from web.values import view_json

JsonReply = tuple[BaseResponse, int]

# Bodies are a few form fields or a small JSON patch.
MAX_BODY_BYTES = 16 * 1024


def discovery_document(issuer: str) -> dict[str, Any]:
    """OpenID Connect Discovery 1.0 §3 and RFC 8414 §2, for this issuer."""
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "device_authorization_endpoint": f"{issuer}/device_authorization",
        "token_endpoint": f"{issuer}/token",
        "revocation_endpoint": f"{issuer}/revoke",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "jwks_uri": f"{issuer}/jwks",
        "grant_types_supported": list(GRANT_TYPES),
        # No browser redirect flow: authorization_endpoint answers unsupported_response_type.
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [SIGNING_ALGORITHM],
        "scopes_supported": list(ALL_SCOPES),
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "name", "preferred_username"],
    }


def create_oauth_app(
    *,
    issuer: str,
    verification_uri: str,
    apps: AppService,
    id_tokens: IdTokens,
    links: LinkService,
    accounts: AccountDirectory,
    settings: SettingsService,
    control: DeviceControl | None = None,
) -> Flask:
    """The issuer's Flask app; its routes live under the issuer URL's path."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    server = OAuthServer(app, apps, verification_uri=verification_uri, id_tokens=id_tokens)
    protect = ResourceProtector()
    protect.register_token_validator(AccessTokens(apps))
    bp = Blueprint("oauth", __name__, url_prefix=urlsplit(issuer).path.rstrip("/") or None)
    document = discovery_document(issuer)

    def owner() -> Token:
        return current_token._get_current_object()  # type: ignore[no-any-return]

    def needs(scope: str) -> Callable[[Callable[..., JsonReply]], Callable[..., JsonReply]]:
        """A route the token's scopes must allow (`settings:write` also reads)."""
        accepted = [s for s in ALL_SCOPES if grants((s,), scope)]
        return protect(accepted)  # type: ignore[no-any-return]

    @bp.get("/.well-known/openid-configuration")
    @bp.get("/.well-known/oauth-authorization-server")
    def discovery() -> JsonReply:
        return jsonify(document), HTTPStatus.OK

    @bp.get("/jwks")
    def jwks() -> JsonReply:
        return jsonify(id_tokens.key_set()), HTTPStatus.OK

    @bp.route("/authorize", methods=["GET", "POST"])
    def authorize() -> JsonReply:
        return _error(
            "unsupported_response_type",
            "This hub links apps with the device authorization grant only (RFC 8628): "
            f"POST to {document['device_authorization_endpoint']}.",
        )

    @bp.post("/device_authorization")
    def device_authorization() -> BaseResponse:
        return server.create_endpoint_response("device_authorization")  # type: ignore[no-any-return]

    @bp.post("/token")
    def token() -> BaseResponse:
        return server.create_token_response()  # type: ignore[no-any-return]

    @bp.post("/revoke")
    def revoke() -> BaseResponse:
        return server.create_endpoint_response("revocation")  # type: ignore[no-any-return]

    @bp.route("/userinfo", methods=["GET", "POST"])
    @protect("openid")
    def userinfo() -> JsonReply:
        token = owner().owner
        claims: dict[str, Any] = {"sub": subject(token.account_id)}
        if "profile" in token.scopes:
            account = accounts.get(token.account_id)
            claims.update(profile_claims(account.name if account else None))
        return jsonify(claims), HTTPStatus.OK

    # --- what a token opens ----------------------------------------------------------
    def own_device(device_id: str) -> DeviceView | None:
        return links.linked_device(device_id, owner().owner.account_id)

    def device_json(device: DeviceView) -> dict[str, Any]:
        components = control.components(device.device_id) if control else []
        return {
            "device_id": device.device_id,
            "name": device.name,
            "model": device.model,
            "online": device.online,
            "linked_at": device.linked_at_s,
            "last_seen_at": device.last_seen_at_s,
            "components": [
                {
                    "key": view.component.key,
                    "kind": str(view.component.kind),
                    "name": view.component.name,
                    "commandable": view.component.commandable,
                    "value": view.value,
                    "reported_at": view.at_s,
                }
                for view in components
            ],
        }

    @bp.get("/api/devices")
    @needs(DEVICES_READ)
    def devices() -> JsonReply:
        found = links.list_devices(owner().owner.account_id)
        return jsonify(devices=[device_json(d) for d in found]), HTTPStatus.OK

    @bp.get("/api/devices/<device_id>")
    @needs(DEVICES_READ)
    def device(device_id: str) -> JsonReply:
        found = own_device(device_id)
        if found is None:
            return _no_such_device()
        return jsonify(device_json(found)), HTTPStatus.OK

    @bp.post("/api/devices/<device_id>/command")
    @needs(DEVICES_COMMAND)
    def command(device_id: str) -> JsonReply:
        body = request.get_json(silent=True)
        if control is None or not isinstance(body, dict) or not isinstance(body.get("key"), str):
            return _error("invalid_request", 'Send JSON: {"key": "<component>", "value": ...}.')
        try:
            sent = control.send_command(
                device_id,
                body["key"],
                body.get("value"),
                origin=Origin.APP,
                account_id=owner().owner.account_id,
                address=request.remote_addr,
            )
        except CommandRefused as exc:
            status = HTTPStatus.NOT_FOUND if exc.reason == "unknown_device" else HTTPStatus.CONFLICT
            return _error(exc.reason, str(exc), status)
        return jsonify(command_id=sent.command_id, device_id=device_id), HTTPStatus.ACCEPTED

    @bp.get("/api/devices/<device_id>/settings")
    @needs(SETTINGS_READ)
    def device_settings(device_id: str) -> JsonReply:
        view = settings.device_view(device_id) if own_device(device_id) else None
        if view is None:
            return _no_such_device()
        return jsonify(view_json(view)), HTTPStatus.OK

    @bp.patch("/api/devices/<device_id>/settings")
    @needs(SETTINGS_WRITE)
    def change_device_settings(device_id: str) -> JsonReply:
        if own_device(device_id) is None:
            return _no_such_device()
        patch = request.get_json(silent=True)
        if not isinstance(patch, dict):
            return _error("invalid_request", "Send a JSON merge patch (RFC 7396) of the settings.")
        try:
            view = settings.set_device_settings(device_id, patch, origin=Origin.APP)
        except SettingsRefused as exc:
            status = HTTPStatus.NOT_FOUND if exc.code == "unknown_device" else HTTPStatus.BAD_REQUEST
            return _error(str(exc.code), str(exc), status)
        return jsonify(view_json(view)), HTTPStatus.OK

    app.register_blueprint(bp)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> BaseResponse | JsonReply:
        if getattr(exc, "body", None) is not None:  # Authlib's own answer (RFC 6750 §3.1), as it is
            return exc.get_response()
        # JSON everywhere on this port, also for a wrong path or method or a body too large.
        code = exc.code or HTTPStatus.BAD_REQUEST
        return _error("invalid_request" if code < 500 else "server_error", exc.description or exc.name, code)

    return app


def _no_such_device() -> JsonReply:
    """Another account's device is answered as one that does not exist."""
    return _error("unknown_device", "No device of yours has that id.", HTTPStatus.NOT_FOUND)


def _error(error: str, description: str, status: int = HTTPStatus.BAD_REQUEST) -> JsonReply:
    reply = jsonify(error=error, error_description=description)
    reply.headers["Cache-Control"] = "no-store"
    return reply, status
