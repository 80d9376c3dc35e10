"""The id_token (OpenID Connect Core §2) and the key set apps check it with,
through joserfc: RS256, the one algorithm every OpenID client must accept
(OpenID Connect Discovery §3, `id_token_signing_alg_values_supported`).

The signing key is made once and kept in the data directory (mode 0600), so
tokens issued before a restart still verify; its public half is served at
`jwks_uri` with its `kid`, which every id_token's header names.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey

from hub.core.accounts import AccountDirectory
from hub.core.oauth import ID_TOKEN_LIFETIME_S
from hub.services.apps import TokenOwner
from hub.store.secret_file import read_or_create_secret

SIGNING_ALGORITHM = "RS256"
KEY_FILE = "oauth-signing-key.json"


def load_signing_key(data_dir: Path) -> RSAKey:
    """The hub's id_token key, made on first use."""

    def make() -> str:
        key = RSAKey.generate_key(2048, parameters={"use": "sig", "alg": SIGNING_ALGORITHM}, auto_kid=True)
        return json.dumps(key.as_dict(private=True))

    return RSAKey.import_key(json.loads(read_or_create_secret(data_dir / KEY_FILE, make)))


class IdTokens:
    def __init__(
        self, key: RSAKey, issuer: str, clock: Callable[[], float], accounts: AccountDirectory
    ) -> None:
        self._key = key
        self._issuer = issuer
        self._clock = clock
        self._accounts = accounts

    def issue(self, owner: TokenOwner) -> str:
        now = int(self._clock())
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "sub": subject(owner.account_id),
            "aud": owner.client_id,
            "iat": now,
            "exp": now + ID_TOKEN_LIFETIME_S,
        }
        if "profile" in owner.scopes:
            account = self._accounts.get(owner.account_id)
            claims.update(profile_claims(account.name if account else None))
        return jwt.encode({"alg": SIGNING_ALGORITHM, "kid": self._key.kid, "typ": "JWT"}, claims, self._key)

    def key_set(self) -> dict[str, Any]:
        """The JWK set for `jwks_uri`: the public key only."""
        return {"keys": [self._key.as_dict(private=False)]}


def subject(account_id: int) -> str:
    """The `sub` claim: the account's id on this hub, never reused (revision 0004 keeps removed rows)."""
    return str(account_id)


def profile_claims(name: str | None) -> dict[str, str]:
    return {"name": name, "preferred_username": name} if name else {}
