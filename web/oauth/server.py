"""Authlib's authorization server, given the hub's apps service as its storage.

Authlib parses and checks the requests (RFC 6749's form encoding, client
authentication, grant dispatch, scope checks), makes the tokens and writes the
error answers (400 JSON with the RFC's error codes, `Cache-Control: no-store`).
What is the hub's own is in hub/services/apps.py: one poll is one locked read
and write there (its outcome and its pace, RFC 8628 §3.5), one exchange per
device_code, refresh tokens good once and their reuse revoking the family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, InvalidGrantError, InvalidScopeError, OAuth2Error, TokenMixin
from authlib.oauth2.rfc6749.errors import AccessDeniedError
from authlib.oauth2.rfc6749.grants import RefreshTokenGrant
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc8628 import (
    DEVICE_CODE_GRANT_TYPE,
    AuthorizationPendingError,
    DeviceAuthorizationEndpoint,
    DeviceCodeGrant,
    DeviceCredentialDict,
    ExpiredTokenError,
    SlowDownError,
)
from flask import Flask, request

from hub.core import codes
from hub.core.oauth import ACCESS_TOKEN_LIFETIME_S, DEVICES_READ, parse_scopes
from hub.errors import AppRefused, LinkHubError
from hub.services.apps import AppClient, AppService, IssuedTokens, PollOutcome, RevokedWhy, TokenOwner
from web.oauth.id_tokens import IdTokens

GRANT_TYPES = (DEVICE_CODE_GRANT_TYPE, "refresh_token")
# What an app gets when it names no scope (RFC 6749 §3.3 lets the server choose).
DEFAULT_SCOPES = (DEVICES_READ,)


class Client(ClientMixin):  # type: ignore[misc]
    """A public client (no secret): Authlib's view of an AppClient."""

    def __init__(self, app: AppClient) -> None:
        self.app = app

    def get_client_id(self) -> str:
        return self.app.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        asked = (scope or "").split()
        return " ".join(s for s in self.app.allowed_scopes if s in asked)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False  # no browser redirect flow here

    def check_client_secret(self, client_secret: str) -> bool:
        return False  # public clients only

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "none"

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in GRANT_TYPES


@dataclass(frozen=True, slots=True)
class Token(TokenMixin):  # type: ignore[misc]
    """A token the service knows (refresh, for the refresh grant and revocation;
    access, for the resource API), as Authlib asks about it."""

    owner: TokenOwner
    expired: bool = False

    def check_client(self, client: Client) -> bool:
        return bool(client.get_client_id() == self.owner.client_id)

    def get_scope(self) -> str:
        return " ".join(self.owner.scopes)

    def get_expires_in(self) -> int:
        return ACCESS_TOKEN_LIFETIME_S

    def is_expired(self) -> bool:
        return self.expired

    def is_revoked(self) -> bool:
        return False  # the service answers None for a revoked token

    def get_user(self) -> int:
        return self.owner.account_id

    def get_client(self) -> None:
        return None


def _apps(grant: Any) -> AppService:
    return grant.server.apps  # type: ignore[no-any-return]


class DeviceAuthorization(DeviceAuthorizationEndpoint):  # type: ignore[misc]
    """RFC 8628 §3.1-3.2: the codes, from the service, in the response Authlib sends."""

    CLIENT_AUTH_METHODS = ["none"]

    def create_endpoint_response(
        self, oauth_request: Any
    ) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        client: Client = self.authenticate_client(oauth_request)
        try:
            scopes = parse_scopes(oauth_request.payload.scope, allowed=client.app.allowed_scopes)
        except AppRefused as exc:
            raise InvalidScopeError(description=error_description(str(exc))) from None
        server: OAuthServer = self.server
        try:
            started = server.apps.start(client.app, scopes or DEFAULT_SCOPES, request.remote_addr)
        except AppRefused as exc:
            raise TemporarilyUnavailable(error_description(str(exc))) from None
        shown = codes.display(started.user_code)
        data = {
            "device_code": started.device_code,
            "user_code": shown,
            "verification_uri": server.verification_uri,
            "verification_uri_complete": f"{server.verification_uri}?code={shown}",
            "expires_in": started.expires_in_s,
            "interval": started.interval_s,
            "message": f"To link this app, open {server.verification_uri} on a phone or computer "
            f"signed in to your hub and enter the code {shown}.",
        }
        return 200, data, [("Content-Type", "application/json"), ("Cache-Control", "no-store")]


class TemporarilyUnavailable(OAuth2Error, LinkHubError):  # type: ignore[misc]
    """Too many apps wait for a person: 503, to ask again later (RFC 6749 §4.1.2.1's code).
    An OAuth2Error for Authlib to answer with, and one of the hub's errors like every other."""

    error = "temporarily_unavailable"
    status_code = 503

    def get_headers(self) -> list[tuple[str, str]]:
        return [*super().get_headers(), ("Retry-After", "30")]


class DeviceCode(DeviceCodeGrant):  # type: ignore[misc]
    """RFC 8628 §3.4-3.5, each poll decided by the service in one step."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]

    def query_device_credential(self, device_code: str) -> DeviceCredentialDict:
        # Authlib compares its client with the authenticated one; the service checks
        # the rest (whose code it is, its state, its pace) in validate_device_credential.
        return DeviceCredentialDict(device_code=device_code, client_id=self.request.payload.client_id or "")

    def validate_device_credential(self, credential: DeviceCredentialDict) -> int:
        answer = _apps(self).poll(credential["device_code"], credential["client_id"])
        match answer.outcome:
            case PollOutcome.APPROVED:
                assert answer.account_id is not None
                self.granted_scope = " ".join(answer.scopes)
                return answer.account_id
            case PollOutcome.PENDING:
                raise AuthorizationPendingError()
            case PollOutcome.SLOW_DOWN:
                raise SlowDownError()
            case PollOutcome.DENIED:
                raise AccessDeniedError()
            case PollOutcome.EXPIRED:
                raise ExpiredTokenError()
        raise InvalidGrantError("unknown, another app's, or already exchanged device_code")

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        token = self.generate_token(
            user=self.request.user, scope=self.granted_scope, include_refresh_token=True
        )
        device_code = self.request.credential["device_code"]
        try:
            owner = _apps(self).exchange(device_code, self.request.client.get_client_id(), _issued(token))
        except AppRefused as exc:
            raise InvalidGrantError(str(exc)) from None
        token["scope"] = " ".join(owner.scopes)
        server: OAuthServer = self.server
        if "openid" in owner.scopes:
            token["id_token"] = server.id_tokens.issue(owner)
        return 200, token, self.TOKEN_RESPONSE_HEADER


class RefreshToken(RefreshTokenGrant):  # type: ignore[misc]
    """RFC 6749 §6, with rotation: the old refresh token is spent when it is read."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
        owner = _apps(self).use_refresh_token(refresh_token, self.request.payload.client_id or "")
        return Token(owner) if owner is not None else None

    def authenticate_user(self, refresh_token: Token) -> int:
        return refresh_token.owner.account_id

    def revoke_old_credential(self, refresh_token: Token) -> None:
        """Spent already, in authenticate_refresh_token: two refreshes racing get one answer."""

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        old: Token = self.request.refresh_token
        token = self.issue_token(old.owner.account_id, old)
        _apps(self).add_tokens(old.owner, _issued(token))
        server: OAuthServer = self.server
        if "openid" in old.owner.scopes:
            token["id_token"] = server.id_tokens.issue(old.owner)
        return 200, token, self.TOKEN_RESPONSE_HEADER


class Revocation(RevocationEndpoint):  # type: ignore[misc]
    """RFC 7009: the app gives up its access. Either of its tokens ends the whole link."""

    CLIENT_AUTH_METHODS = ["none"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
        owner = self.server.apps.find_token(token_string)
        return Token(owner) if owner is not None else None

    def revoke_token(self, token: Token, oauth_request: Any) -> None:
        self.server.apps.revoke_family(
            token.owner.family_id, RevokedWhy.APP_REVOKED, address=request.remote_addr
        )


class AccessTokens(BearerTokenValidator):  # type: ignore[misc]
    """The resource API's bearer tokens (RFC 6750), checked against the service on every call."""

    def __init__(self, apps: AppService) -> None:
        super().__init__()
        self._apps = apps

    def authenticate_token(self, token_string: str) -> Token | None:
        owner = self._apps.authenticate(token_string)
        return Token(owner) if owner is not None else None


def error_description(text: str) -> str:
    """RFC 6749 §5.2: an error_description is %x20-21 / %x23-5B / %x5D-7E only; what a
    client sent (a scope it made up) is quoted with anything else as "?"."""
    return "".join(ch if " " <= ch <= "~" and ch not in '"\\' else "?" for ch in text)[:200]


def _issued(token: dict[str, Any]) -> IssuedTokens:
    return IssuedTokens(token["access_token"], token["refresh_token"], int(token["expires_in"]))


class OAuthServer(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, app: Flask, apps: AppService, *, verification_uri: str, id_tokens: IdTokens) -> None:
        self.apps = apps
        self.verification_uri = verification_uri
        self.id_tokens = id_tokens
        app.config.update(
            OAUTH2_REFRESH_TOKEN_GENERATOR=True,
            OAUTH2_TOKEN_EXPIRES_IN={grant: ACCESS_TOKEN_LIFETIME_S for grant in GRANT_TYPES},
        )
        super().__init__(app, query_client=self._client, save_token=lambda _token, _request: None)
        self.register_endpoint(DeviceAuthorization)
        self.register_endpoint(Revocation)
        self.register_grant(DeviceCode)
        self.register_grant(RefreshToken)

    def _client(self, client_id: str) -> Client | None:
        app = self.apps.client(client_id)
        return Client(app) if app is not None else None
