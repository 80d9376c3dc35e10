"""The device's state file: who it is, its broker credentials, a link in progress,
and the settings it runs with.

JSON, written atomically (temporary file in the same directory, fsync, then
`os.replace`) with mode 0600, since it holds the device's MQTT password:

    {"device_id": ..., "name": ..., "model": ...,
     "mqtt": {"host", "port", "client_id", "username", "password"[, "tls_port", "ca_cert"]},
     "pending": {"request_id": ..., "reply_token": ..., "private_key": ...},
     "settings": {"desired": {...}, "version": N},
     "profile": "lamp"}

`device_id` and `mqtt` exist once linked; `pending` while a link is in
progress, so that a device restarted mid-link resends the same request and can
open the sealed answer to it (`private_key`, the X25519 key of that attempt;
firmware_sim/keys.py);
`settings` once the hub sent a desired document, so that a restarted device
knows what it runs with before the hub answers again. `tls_port` and `ca_cert`
(the hub's CA, PEM) are kept when the hub sent them: the device then connects
with TLS from its first connection on (firmware_sim/transport.py). `profile`
says what the device is (firmware_sim/profiles.py), if it is one of those.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from linkhub_protocol import MqttCredentials

FILE_MODE = 0o600


class StateError(Exception):
    """The state file exists but cannot be read or is not a device state."""


@dataclass(frozen=True, slots=True)
class Pending:
    request_id: str
    reply_token: str
    # None in a state file from before sealed credentials: that attempt starts afresh.
    private_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class SavedSettings:
    desired: dict[str, Any]
    version: int


@dataclass(frozen=True, slots=True)
class DeviceState:
    name: str | None = None
    model: str | None = None
    device_id: str | None = None
    mqtt: MqttCredentials | None = None
    pending: Pending | None = None
    settings: SavedSettings | None = None
    profile: str | None = None

    @property
    def linked(self) -> bool:
        return self.device_id is not None and self.mqtt is not None

    def with_pending(self, pending: Pending | None) -> DeviceState:
        return replace(self, pending=pending)

    def unlinked(self) -> DeviceState:
        """What is left once the hub unlinked the device: its name and model.

        The credentials are dead, and the settings belonged to the old device id
        (the hub keeps them as history); a new link starts from nothing.
        """
        return DeviceState(name=self.name, model=self.model, profile=self.profile)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.device_id is not None:
            out["device_id"] = self.device_id
        if self.name is not None:
            out["name"] = self.name
        if self.model is not None:
            out["model"] = self.model
        if self.mqtt is not None:
            out["mqtt"] = self.mqtt.to_json()
        if self.pending is not None:
            out["pending"] = {
                "request_id": self.pending.request_id,
                "reply_token": self.pending.reply_token,
            }
            if self.pending.private_key is not None:
                out["pending"]["private_key"] = self.pending.private_key
        if self.settings is not None:
            out["settings"] = {"desired": self.settings.desired, "version": self.settings.version}
        if self.profile is not None:
            out["profile"] = self.profile
        return out

    @classmethod
    def from_json(cls, obj: object) -> DeviceState:
        if not isinstance(obj, dict):
            raise StateError("state must be a JSON object")
        try:
            mqtt = obj.get("mqtt")
            pending = obj.get("pending")
            settings = obj.get("settings")
            return cls(
                name=_opt_str(obj.get("name")),
                model=_opt_str(obj.get("model")),
                device_id=_opt_str(obj.get("device_id")),
                mqtt=None if mqtt is None else MqttCredentials.from_json(mqtt),
                pending=None
                if pending is None
                else Pending(
                    request_id=str(pending["request_id"]),
                    reply_token=str(pending["reply_token"]),
                    private_key=_opt_str(pending.get("private_key")),
                ),
                settings=None if settings is None else _settings(settings),
                profile=_opt_str(obj.get("profile")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"malformed state: {exc!r}") from exc


def _settings(obj: Any) -> SavedSettings:
    desired, version = obj["desired"], obj["version"]
    if not isinstance(desired, dict) or type(version) is not int or version < 0:
        raise StateError("settings must hold desired (object) and version (int >= 0)")
    return SavedSettings(desired=desired, version=version)


def _opt_str(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise StateError(f"expected a string, got {value!r}")
    return value


def load(path: str | os.PathLike[str]) -> DeviceState:
    """The state in `path`, or an empty state if the file does not exist."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return DeviceState()
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc}") from exc
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StateError(f"{path} is not JSON: {exc}") from exc
    return DeviceState.from_json(obj)


def save(path: str | os.PathLike[str], state: DeviceState) -> None:
    """Replace `path` with `state` atomically; the file is 0600 from the start."""
    target = Path(path)
    directory = target.parent
    directory.mkdir(parents=True, exist_ok=True)
    data = json.dumps(state.to_json(), indent=2, sort_keys=True).encode() + b"\n"
    # mkstemp creates the file 0600, so the secret is never readable by others.
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
