"""The account service run on its own, reached over its HTTP JSON API.

A hub started with `--account-service URL` uses this instead of
`hub.services.local_accounts.AccountService`; both implement
`hub.core.accounts.AccountDirectory`, and the web's sign-in and the
settings outbox cannot tell them apart. The API is web/account_api.py,
described in docs/account-service.md.

Standard library only (`http.client`, not `urllib.request`): no new
dependency, no redirect following and no `http_proxy` from the environment,
which would send a loopback call, token included, to some proxy.

Anything that is not one of the API's own answers (no connection, a timeout,
a 5xx, a refused token, a reply that is not the API's JSON) raises
`AccountServiceUnavailable`: what was asked is not done, and the caller (the
outbox, the sign-in page) already knows to retry later or say so. Messages
name the URL, never the token.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from hub.core.accounts import (
    AccountSummary,
    AccountView,
    LoggedChange,
    SecondFactor,
    SettingsChange,
    TotpEnrolment,
    TwoFactorStatus,
    VersionedDocument,
)
from hub.errors import AccountError, AccountServiceUnavailable, ConfigError

# The server's page size (web.account_api.MAX_CHANGES_PER_PAGE); changes()
# asks page by page so a caller's larger limit still means what it does locally.
CHANGES_PAGE = 1000


class AccountServiceRefusedToken(AccountServiceUnavailable):
    """The service answered 401 to our bearer token: a configuration mistake.

    A subclass of AccountServiceUnavailable, so every caller that copes with an
    absent service copes with this too (nothing is done, retry later), while a
    startup check can catch it and tell the person to fix the token file.
    """


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: Any

    @property
    def error(self) -> str | None:
        return self.body.get("error") if isinstance(self.body, dict) else None

    @property
    def message(self) -> str:
        message = self.body.get("message") if isinstance(self.body, dict) else None
        return message if isinstance(message, str) else ""


class RemoteAccountService:
    def __init__(self, base_url: str, token: str, *, timeout_s: float = 5.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"The account service URL must look like http://HOST:PORT, not {base_url!r}.")
        if parts.username or parts.password:
            raise ConfigError("Give the account service's token in a token file, not in its URL.")
        if parts.query or parts.fragment:
            raise ConfigError(f"The account service URL {base_url!r} may not have a query or fragment.")
        token = token.strip()  # a token file usually ends with a newline
        if not token or any(c in token for c in "\r\n\0 "):
            raise ConfigError("The account service token is empty or not a single word.")
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"The account service URL {base_url!r} has a bad port.") from None
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = port
        self._prefix = parts.path.rstrip("/")
        self._token = token
        self._timeout_s = timeout_s
        self.url = f"{parts.scheme}://{parts.netloc}{self._prefix}"

    def __repr__(self) -> str:
        return f"RemoteAccountService({self.url!r})"  # never the token

    # --- AccountDirectory ---------------------------------------------------------
    def has_accounts(self) -> bool:
        reply = self._expect(self._call("GET", "/v1/accounts/any"), HTTPStatus.OK)
        value = reply.get("has_accounts") if isinstance(reply, dict) else None
        if not isinstance(value, bool):
            raise self._garbled("/v1/accounts/any")
        return value

    def create(self, name: str, password: str) -> AccountView:
        reply = self._call("POST", "/v1/accounts", {"name": name, "password": password})
        if reply.status == HTTPStatus.BAD_REQUEST:
            raise AccountError(reply.message or "The account service refused to create this account.")
        return self._view(self._expect(reply, HTTPStatus.CREATED), "/v1/accounts")

    def authenticate(self, name: str, password: str) -> AccountView | None:
        reply = self._call("POST", "/v1/auth", {"name": name, "password": password})
        # Only bad_credentials means "wrong name or password": a 401 for our
        # token must not turn every sign-in into a wrong password.
        if reply.status == HTTPStatus.UNAUTHORIZED and reply.error == "bad_credentials":
            return None
        return self._view(self._expect(reply, HTTPStatus.OK), "/v1/auth")

    def get(self, account_id: int) -> AccountView | None:
        return self._lookup(f"/v1/accounts/{int(account_id)}")

    def find(self, name: str) -> AccountView | None:
        name = name.strip()
        if not name or "/" in name:
            # No account name is empty or holds a slash (hub.services.local_accounts), and a
            # slash cannot travel inside one path segment: WSGI decodes %2F.
            return None
        return self._lookup(f"/v1/accounts/by-name/{quote(name, safe='')}")

    def apply_change(self, change: SettingsChange) -> bool:
        reply = self._expect(self._call("POST", "/v1/changes", change.to_json()), HTTPStatus.OK)
        applied = reply.get("applied") if isinstance(reply, dict) else None
        if not isinstance(applied, bool):
            raise self._garbled("/v1/changes")
        return applied

    def preferences(self, account_id: int) -> VersionedDocument:
        return self._document(f"/v1/accounts/{int(account_id)}/preferences")

    def device_settings(self, device_id: str) -> VersionedDocument:
        return self._document(f"/v1/devices/{quote(device_id, safe='')}/settings")

    def changes(self, after_seq: int = 0, limit: int = 1000) -> list[LoggedChange]:
        found: list[LoggedChange] = []
        cursor = after_seq
        while len(found) < limit:
            page = min(limit - len(found), CHANGES_PAGE)
            got = self._changes_page(cursor, page)
            found.extend(got)
            if len(got) < page:
                break
            cursor = got[-1].seq
        return found

    # --- the household ---------------------------------------------------------------
    def list_accounts(self) -> list[AccountSummary]:
        reply = self._expect(self._call("GET", "/v1/accounts"), HTTPStatus.OK)
        try:
            return [
                AccountSummary(
                    _exact(entry["id"], int),
                    _exact(entry["name"], str),
                    _exact(entry["is_owner"], bool),
                    float(_exact(entry["created_at_s"], (int, float))),
                )
                for entry in reply["accounts"]
            ]
        except (KeyError, TypeError):
            raise self._garbled("/v1/accounts") from None

    def remove(self, account_id: int) -> AccountView | None:
        path = f"/v1/accounts/{int(account_id)}"
        reply = self._call("DELETE", path)
        if reply.status == HTTPStatus.NOT_FOUND and reply.error == "unknown_account":
            return None
        if reply.status == HTTPStatus.BAD_REQUEST and reply.error == "account_error":
            raise AccountError(reply.message or "The account service refused to remove this account.")
        return self._view(self._expect(reply, HTTPStatus.OK), path)

    # --- two-factor sign-in ----------------------------------------------------------
    def begin_two_factor(self, account_id: int) -> TotpEnrolment:
        path = f"/v1/accounts/{int(account_id)}/two-factor/begin"
        reply = self._expect(self._refusable(self._call("POST", path, {})), HTTPStatus.OK)
        try:
            return TotpEnrolment(_exact(reply["secret"], str), _exact(reply["uri"], str))
        except (KeyError, TypeError):
            raise self._garbled(path) from None

    def confirm_two_factor(self, account_id: int, secret: str, code: str) -> list[str]:
        path = f"/v1/accounts/{int(account_id)}/two-factor/confirm"
        reply = self._call("POST", path, {"secret": secret, "code": code})
        return self._codes(self._expect(self._refusable(reply), HTTPStatus.OK), path)

    def check_second_factor(self, account_id: int, code: str) -> SecondFactor | None:
        path = f"/v1/accounts/{int(account_id)}/two-factor/check"
        reply = self._call("POST", path, {"code": code})
        if reply.status == HTTPStatus.UNAUTHORIZED and reply.error == "bad_second_factor":
            return None
        body = self._expect(reply, HTTPStatus.OK)
        try:
            return SecondFactor(body["method"])
        except (KeyError, TypeError, ValueError):
            raise self._garbled(path) from None

    def code_already_used(self, account_id: int, code: str) -> bool:
        path = f"/v1/accounts/{int(account_id)}/two-factor/used"
        body = self._expect(self._call("POST", path, {"code": code}), HTTPStatus.OK)
        used = body.get("used") if isinstance(body, dict) else None
        if not isinstance(used, bool):
            raise self._garbled(path)
        return used

    def two_factor_status(self, account_id: int) -> TwoFactorStatus:
        path = f"/v1/accounts/{int(account_id)}/two-factor"
        body = self._expect(self._refusable(self._call("GET", path)), HTTPStatus.OK)
        try:
            enabled_at_s = body["enabled_at_s"]
            return TwoFactorStatus(
                _exact(body["enabled"], bool),
                None if enabled_at_s is None else float(_exact(enabled_at_s, (int, float))),
                _exact(body["recovery_codes_left"], int),
            )
        except (KeyError, TypeError):
            raise self._garbled(path) from None

    def disable_two_factor(self, account_id: int, password: str, code: str) -> bool:
        path = f"/v1/accounts/{int(account_id)}/two-factor/disable"
        reply = self._call("POST", path, {"password": password, "code": code})
        if reply.status == HTTPStatus.UNAUTHORIZED and reply.error == "bad_credentials":
            return False
        self._expect(self._refusable(reply), HTTPStatus.OK)
        return True

    def renew_recovery_codes(self, account_id: int, code: str) -> list[str] | None:
        path = f"/v1/accounts/{int(account_id)}/two-factor/recovery-codes"
        reply = self._call("POST", path, {"code": code})
        if reply.status == HTTPStatus.UNAUTHORIZED and reply.error == "bad_second_factor":
            return None
        return self._codes(self._expect(reply, HTTPStatus.OK), path)

    def reset_two_factor(self, account_id: int) -> bool:
        path = f"/v1/accounts/{int(account_id)}/two-factor/reset"
        body = self._expect(self._refusable(self._call("POST", path, {})), HTTPStatus.OK)
        try:
            return bool(_exact(body["was_on"], bool))
        except (KeyError, TypeError):
            raise self._garbled(path) from None

    def change_password(self, account_id: int, current: str, new: str) -> bool:
        path = f"/v1/accounts/{int(account_id)}/password"
        reply = self._refusable(self._call("POST", path, {"current": current, "new": new}))
        if reply.status == HTTPStatus.UNAUTHORIZED and reply.error == "bad_credentials":
            return False
        self._expect(reply, HTTPStatus.OK)
        return True

    def reset_password(self, account_id: int, new: str) -> AccountView:
        path = f"/v1/accounts/{int(account_id)}/password-reset"
        reply = self._refusable(self._call("POST", path, {"new": new}))
        return self._view(self._expect(reply, HTTPStatus.OK), path)

    def end_sessions(self, account_id: int) -> float:
        path = f"/v1/accounts/{int(account_id)}/end-sessions"
        body = self._expect(self._refusable(self._call("POST", path, {})), HTTPStatus.OK)
        try:
            ended = _optional_time(body["sessions_ended_at_s"])
        except (KeyError, TypeError):
            raise self._garbled(path) from None
        if ended is None:
            raise self._garbled(path)
        return ended

    # --- helpers ------------------------------------------------------------------
    def _refusable(self, reply: _Reply) -> _Reply:
        """A 400 account_error is the service's answer for the person: raise it as AccountError."""
        if reply.status == HTTPStatus.BAD_REQUEST and reply.error == "account_error":
            raise AccountError(reply.message or "The account service refused.")
        return reply

    def _codes(self, body: Any, path: str) -> list[str]:
        codes = body.get("recovery_codes") if isinstance(body, dict) else None
        if not isinstance(codes, list) or not all(isinstance(code, str) for code in codes):
            raise self._garbled(path)
        return codes

    def _changes_page(self, after_seq: int, limit: int) -> list[LoggedChange]:
        path = "/v1/changes?" + urlencode({"after": int(after_seq), "limit": int(limit)})
        reply = self._expect(self._call("GET", path), HTTPStatus.OK)
        try:
            return [
                LoggedChange(
                    seq=_exact(entry["seq"], int),
                    change=SettingsChange.from_json(entry["change"]),
                    received_at_s=float(_exact(entry["received_at_s"], (int, float))),
                )
                for entry in reply["changes"]
            ]
        except (KeyError, ValueError, TypeError):
            raise self._garbled("/v1/changes") from None

    def _lookup(self, path: str) -> AccountView | None:
        reply = self._call("GET", path)
        if reply.status == HTTPStatus.NOT_FOUND and reply.error == "unknown_account":
            return None
        return self._view(self._expect(reply, HTTPStatus.OK), path)

    def _document(self, path: str) -> VersionedDocument:
        reply = self._expect(self._call("GET", path), HTTPStatus.OK)
        try:
            return VersionedDocument(_exact(reply["document"], dict), _exact(reply["version"], int))
        except (KeyError, TypeError):
            raise self._garbled(path) from None

    def _view(self, body: Any, path: str) -> AccountView:
        try:
            return AccountView(
                _exact(body["id"], int),
                _exact(body["name"], str),
                _exact(body["is_owner"], bool),
                two_factor=_exact(body["two_factor"], bool),
                two_factor_since_s=_optional_time(body.get("two_factor_since_s")),
                sessions_ended_at_s=_optional_time(body.get("sessions_ended_at_s")),
                must_change_password=_exact(body.get("must_change_password", False), bool),
            )
        except (KeyError, TypeError):
            raise self._garbled(path) from None

    def _expect(self, reply: _Reply, status: int) -> Any:
        if reply.status == status:
            return reply.body
        if reply.status == HTTPStatus.UNAUTHORIZED:
            raise AccountServiceRefusedToken(
                f"The account service at {self.url} refused the hub's token; "
                "check --account-service-token-file."
            )
        detail = f" ({reply.error}: {reply.message})" if reply.error else ""
        raise AccountServiceUnavailable(
            f"The account service at {self.url} answered HTTP {reply.status}{detail}."
        )

    def _garbled(self, path: str) -> AccountServiceUnavailable:
        return AccountServiceUnavailable(
            f"The account service at {self.url} gave an unexpected answer to {path}; "
            "is that address an account service?"
        )

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> _Reply:
        """One request on its own connection: no state is shared between threads."""
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/json",
            "Connection": "close",
        }
        payload: bytes | None = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        connection_class = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        connection = connection_class(self._host, self._port, timeout=self._timeout_s)
        try:
            connection.request(method, self._prefix + path, body=payload, headers=headers)
            response = connection.getresponse()
            status, raw = response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            # OSError covers refused connections, timeouts, resets and TLS errors.
            raise AccountServiceUnavailable(
                f"The account service at {self.url} did not answer: {_describe(exc)}."
            ) from None
        finally:
            connection.close()
        if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            raise AccountServiceUnavailable(f"The account service at {self.url} failed (HTTP {status}).")
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            raise self._garbled(path.split("?")[0]) from None
        return _Reply(status, parsed)


def _exact(value: Any, kind: type | tuple[type, ...]) -> Any:
    """isinstance, but a JSON true is not the integer 1 here."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise TypeError(f"unexpected {value!r}")
    if not isinstance(value, kinds):
        raise TypeError(f"unexpected {type(value).__name__}")
    return value


def _optional_time(value: Any) -> float | None:
    """A time in seconds, or None; an older account service does not send it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("expected a number of seconds")
    return float(value)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc) or type(exc).__name__
