"""Database tables (SQLModel). Times are UTC epoch seconds (`*_s`), so SQLite and
PostgreSQL store the same thing and tests can move a clock without time zones."""

from __future__ import annotations

from sqlalchemy import Index, text
from sqlmodel import Field, SQLModel

# An account removed from the household keeps its row (revision 0004).
_IN_USE = text("removed_at_s IS NULL")


class Account(SQLModel, table=True):
    # A name is unique among the accounts in use only: a removed account's name
    # may be given to a new account, whose id is a new one. (revision 0004)
    __table_args__ = (
        Index("ix_account_name", "name", unique=True, sqlite_where=_IN_USE, postgresql_where=_IN_USE),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64)
    password_hash: str = Field(max_length=255)
    is_owner: bool = False
    created_at_s: float
    # TOTP two-factor (RFC 6238): the base32 secret, set once enrolment is confirmed
    # with a first code. None = no second factor. (revision 0003)
    totp_secret: str | None = Field(default=None, max_length=64)
    totp_enabled_at_s: float | None = None
    # The time step of the last TOTP code accepted: a code is good once (RFC 6238 §5.2).
    totp_last_step: int | None = None
    # Set when the owner removes the account. The row stays so that its id is
    # never handed out again (SQLite reuses the highest rowid of a deleted row):
    # the activity, preferences and settings history kept under that id must
    # never become a new account's. (revision 0004)
    removed_at_s: float | None = None
    # "Sign out everywhere": the pages' sessions signed in before this end, on
    # every hub that uses this account service. (revision 0005)
    sessions_ended_at_s: float | None = None
    # The owner set this password: the person must choose their own at the next
    # sign-in. (revision 0008)
    password_must_change: bool = False


class RecoveryCode(SQLModel, table=True):
    """One-time codes for signing in when the authenticator is lost; stored hashed."""

    __tablename__ = "recovery_code"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(index=True)
    code_hash: str = Field(max_length=255)
    used_at_s: float | None = None


class LinkRequestRecord(SQLModel, table=True):
    """One device's link request, from its first message to its final outcome.

    Kept after the outcome, so a late poll gets a clear answer and the page can
    tell "expired" from "already used" from "unknown".
    """

    __tablename__ = "link_request"

    request_id: str = Field(primary_key=True, max_length=64)
    user_code: str = Field(index=True, max_length=8)
    reply_to: str = Field(max_length=128)
    # MQTT 5 correlation data (hex), echoed on every reply; None for MQTT 3.1.1.
    correlation_hex: str | None = Field(default=None, max_length=256)
    device_name: str = Field(max_length=64)
    device_model: str = Field(max_length=64)
    device_address: str | None = Field(default=None, max_length=64)
    device_firmware: str | None = Field(default=None, max_length=32)
    state: str = Field(index=True, max_length=16)
    created_at_s: float
    expires_at_s: float
    decided_at_s: float | None = None
    # No foreign key: accounts may live in a separate account service.
    account_id: int | None = Field(default=None)
    device_id: str | None = Field(default=None, index=True, max_length=40)
    # Held only between approval and the device's first connection (see linking.py).
    issued_password: str | None = Field(default=None, max_length=128)
    # The device's X25519 public key (base64): credentials are sealed to it. (revision 0003)
    device_public_key: str | None = Field(default=None, max_length=64)
    # Who asked, for per-client limits and the activity log. (revision 0003)
    client_id: str | None = Field(default=None, max_length=128)


class Device(SQLModel, table=True):
    device_id: str = Field(primary_key=True, max_length=40)
    account_id: int = Field(index=True)
    name: str = Field(max_length=64)
    model: str = Field(max_length=64)
    address: str | None = Field(default=None, max_length=64)
    request_id: str = Field(max_length=64)
    linked_at_s: float = Field(index=True)  # devices are listed in link order (revision 0002)
    confirmed: bool = False
    online: bool = False
    last_seen_at_s: float | None = None
    # Set when unlinked: the broker client is gone, the row (and its settings
    # history) stays, the device is no longer listed. (revision 0003)
    unlinked_at_s: float | None = Field(default=None, index=True)


class BrokerIdentity(SQLModel, table=True):
    """A device's broker identity, recorded before the broker is asked to create it.

    The broker and the database cannot commit together: a hub that dies between
    creating a device's broker login and committing its device row would leave a
    login that no row names. Recording the intent first means every login this hub
    made is known here, and the reconciler (LinkService.reconcile_identities)
    removes the ones whose approval never committed. (revision 0006)
    """

    __tablename__ = "broker_identity"

    device_id: str = Field(primary_key=True, max_length=40)
    request_id: str = Field(max_length=64)
    issued_at_s: float
    # Set in the approval's own transaction, with the device row: the approval committed.
    linked_at_s: float | None = None
    # Set before the broker is asked to delete the login, so that an approval still
    # under way cannot commit a device whose login is being removed.
    revoked_at_s: float | None = Field(default=None, index=True)
    revoked_reason: str | None = Field(default=None, max_length=32)
    # When the hub finished emptying an unlinked device's retained topics; NULL
    # after an unlink until then, so an unfinished clearing outlives a restart.
    # (revision 0007)
    retained_cleared_at_s: float | None = None


# --- the settings bridge, hub side ---------------------------------------------
class PreferencesCache(SQLModel, table=True):
    """The hub's copy of an account's preferences: devices get them even while
    the account service is away; the outbox brings the service up to date."""

    __tablename__ = "preferences_cache"

    account_id: int = Field(primary_key=True)
    document_json: str = "{}"
    version: int = 0


class DeviceShadow(SQLModel, table=True):
    """One device's settings document (a shadow, in AWS's words)."""

    __tablename__ = "device_shadow"

    device_id: str = Field(primary_key=True, max_length=40)
    account_id: int = Field(index=True)
    settings_json: str = "{}"  # the device's own settings (desired = preferences + these)
    desired_json: str = "{}"  # what it was last sent, to compute the next change
    desired_version: int = 0
    key_versions_json: str = "{}"  # top-level key -> desired version that last changed it
    reported_json: str | None = None
    applied_version: int | None = None
    reported_at_s: float | None = None
    changed_at_s: float | None = None


class OutboxEntry(SQLModel, table=True):
    """A change on its way to the account service, delivered in `seq` order."""

    __tablename__ = "settings_outbox"

    seq: int | None = Field(default=None, primary_key=True)
    change_id: str = Field(unique=True, max_length=64)
    kind: str = Field(max_length=32)
    account_id: int
    device_id: str | None = Field(default=None, max_length=40)
    patch_json: str
    version: int
    origin: str = Field(max_length=16)
    made_at_s: float
    attempts: int = 0
    next_attempt_at_s: float = 0.0
    delivered_at_s: float | None = Field(default=None, index=True)
    last_error: str | None = None


# --- the account service's own tables ------------------------------------------
class AccountPreferences(SQLModel, table=True):
    __tablename__ = "account_preferences"

    account_id: int = Field(primary_key=True)
    document_json: str = "{}"
    version: int = 0


class DeviceSettingsRecord(SQLModel, table=True):
    __tablename__ = "account_device_settings"

    device_id: str = Field(primary_key=True, max_length=40)
    account_id: int = Field(index=True)
    document_json: str = "{}"
    version: int = 0


class ChangeLogEntry(SQLModel, table=True):
    """Every change the account service accepted, once each, in arrival order."""

    __tablename__ = "account_change_log"

    seq: int | None = Field(default=None, primary_key=True)
    change_id: str = Field(unique=True, max_length=64)
    kind: str = Field(max_length=32)
    account_id: int
    device_id: str | None = Field(default=None, max_length=40)
    patch_json: str
    version: int
    origin: str = Field(max_length=16)
    made_at_s: float
    received_at_s: float


# --- recent activity -------------------------------------------------------------
class ActivityEvent(SQLModel, table=True):
    """What happened to an account, for the person to review (/activity).

    Written by the hub on its own database, whichever account service it uses.
    """

    __tablename__ = "activity"

    id: int | None = Field(default=None, primary_key=True)
    # None for events no account can be named for (a sign-in to a name that does not exist).
    account_id: int | None = Field(default=None, index=True)
    at_s: float = Field(index=True)
    kind: str = Field(max_length=32)
    address: str | None = Field(default=None, max_length=64)
    device_id: str | None = Field(default=None, max_length=40)
    detail: str = Field(default="", max_length=512)


# --- the web pages' sessions -------------------------------------------------------
class WebSession(SQLModel, table=True):
    """A signed-in web session, so that signing out ends it on the hub too: the
    signed cookie alone would open the pages until it expired (revision 0005).

    Kept in the hub's own database whichever account service it uses; only a
    hash of the session's token is stored (a copied database opens nothing).
    """

    __tablename__ = "web_session"

    token_hash: str = Field(primary_key=True, max_length=64)
    account_id: int = Field(index=True)
    created_at_s: float
    expires_at_s: float = Field(index=True)


class DeviceDescriptionRecord(SQLModel, table=True):
    """What a linked device said it has (linkhub_protocol.DeviceDescription),
    as it sent it: the components its state and commands are checked against,
    and what Home Assistant is told about. Replaced whole by a new description;
    kept after an unlink, like the device's row. (revision 0009)"""

    __tablename__ = "device_description"

    device_id: str = Field(primary_key=True, max_length=40)
    description_json: str
    described_at_s: float


# --- apps linked over HTTP (OAuth 2.0 device authorization grant) -------------------
class OAuthApp(SQLModel, table=True):
    """An app the owner registered: its client_id, the name the confirm page shows,
    and the scopes it may ask for (space-separated). (revision 0010)"""

    __tablename__ = "oauth_app"

    client_id: str = Field(primary_key=True, max_length=128)
    name: str = Field(max_length=64)
    scopes: str = Field(max_length=255)
    registered_at_s: float


class OAuthGrant(SQLModel, table=True):
    """One device authorization request (RFC 8628 §3.1), from the app's first
    POST to the single exchange of its device_code. Only the device_code's hash
    is stored. Kept after its outcome, like a link request, so late polls and the
    /link page get a clear answer. (revision 0010)"""

    __tablename__ = "oauth_grant"

    device_code_hash: str = Field(primary_key=True, max_length=64)
    user_code: str = Field(index=True, max_length=8)
    client_id: str = Field(max_length=128)
    # The registered name then, or None: an unregistered client, shown as unverified.
    app_name: str | None = Field(default=None, max_length=64)
    scopes: str = Field(max_length=255)
    address: str | None = Field(default=None, max_length=64)
    state: str = Field(index=True, max_length=16)  # pending, approved, denied, exchanged
    created_at_s: float
    expires_at_s: float
    interval_s: int
    last_poll_s: float | None = None
    account_id: int | None = None
    decided_at_s: float | None = None
    family_id: str | None = Field(default=None, max_length=40)


class OAuthFamily(SQLModel, table=True):
    """A linked app: one approval, and every token issued from it (each refresh
    token's successor belongs to the same family). Unlinking revokes the family,
    which ends every token in it at once. (revision 0010)"""

    __tablename__ = "oauth_family"

    family_id: str = Field(primary_key=True, max_length=40)
    account_id: int = Field(index=True)
    client_id: str = Field(max_length=128)
    app_name: str | None = Field(default=None, max_length=64)
    scopes: str = Field(max_length=255)
    linked_at_s: float
    last_used_s: float | None = None
    revoked_at_s: float | None = None
    revoked_why: str | None = Field(default=None, max_length=32)


class OAuthToken(SQLModel, table=True):
    """An access or refresh token, by the SHA-256 of its value (a copied database
    opens nothing). A refresh token is good once: `used_at_s` is set when it is
    exchanged, and a second use revokes its family (RFC 9700 §4.14.2). (revision 0010)"""

    __tablename__ = "oauth_token"

    token_hash: str = Field(primary_key=True, max_length=64)
    kind: str = Field(max_length=8)  # access, refresh
    family_id: str = Field(index=True, max_length=40)
    issued_at_s: float
    expires_at_s: float = Field(index=True)
    used_at_s: float | None = None
