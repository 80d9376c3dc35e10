"""The device's settings state, pure: what it was told, which version, and its
own changes the hub has not answered yet. No I/O; run.py does the talking.

Rules (mirroring hub/core/settings_merge.py and docs/protocol.md "Settings",
after AWS IoT Device Shadow):
- A change is an RFC 7386 merge patch: objects merge key by key, `null`
  deletes, anything else (arrays included) replaces.
- A full document replaces everything and sets the applied version.
- A change is applied only if it is the very next version. One that is not
  newer is dropped (already applied); one that skips a version means a change
  was lost, so the device asks for the full document again.
- The reported document is the desired document with the device's own
  not-yet-acknowledged changes merged over it: the simulated device runs with
  exactly what it was told, plus what was pressed on it.

The device is a separate program from the hub, so it carries its own merge
function instead of importing the hub's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from linkhub_protocol import SettingsDesired

JsonObject = dict[str, Any]


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 §2, MergePatch(Target, Patch), on copies."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def merge_patch(doc: JsonObject, patch: JsonObject) -> JsonObject:
    """`doc` with the merge patch `patch` applied; neither argument is modified."""
    merged: JsonObject = _merge(doc, patch)
    return merged


class Outcome(StrEnum):
    """What the device should do after a desired message."""

    APPLIED = "applied"  # the document moved (or a full one confirmed it): save and report
    STALE = "stale"  # nothing new in it: ignore
    REFETCH = "refetch"  # a version was skipped: send SettingsGet for the full document


@dataclass(frozen=True, slots=True)
class Action:
    outcome: Outcome
    version: int  # the applied version after handling the message
    detail: str = ""


@dataclass(slots=True)
class DeviceSettings:
    """The settings a device runs with, and the bookkeeping to keep them in step."""

    desired: JsonObject = field(default_factory=dict)
    applied_version: int = 0
    # request_id -> changes made on the device itself, not yet answered by the hub.
    local: dict[str, JsonObject] = field(default_factory=dict)
    # Whether a change was applied since the last SettingsGet went out; see on_desired.
    changed_since_get: bool = False

    def reported(self) -> JsonObject:
        """What the device runs with: desired, with its own pending changes over it."""
        document = copy.deepcopy(self.desired)
        for changes in self.local.values():
            document = merge_patch(document, changes)
        return document

    def get_sent(self) -> None:
        """Call when a SettingsGet goes out: its answer is the authority from here on."""
        self.changed_since_get = False

    def on_desired(self, msg: SettingsDesired) -> Action:
        """Apply one desired message and say what to do next."""
        if msg.full:
            # The hub builds the answer to a get and publishes it outside its
            # lock, so a change made in between can arrive first. A full
            # document older than a change applied since the get is that race:
            # drop it. Otherwise the full document wins, even if its version
            # is lower than ours (say, a hub restored from a backup).
            if msg.version < self.applied_version and self.changed_since_get:
                return Action(Outcome.STALE, self.applied_version, "older than a change already applied")
            self.desired = copy.deepcopy(msg.desired)
            self.applied_version = msg.version
            return Action(Outcome.APPLIED, self.applied_version)
        if msg.version <= self.applied_version:
            return Action(Outcome.STALE, self.applied_version, f"version {msg.version} is already applied")
        if msg.version != self.applied_version + 1:
            return Action(
                Outcome.REFETCH,
                self.applied_version,
                f"version {msg.version} skips ahead of {self.applied_version}",
            )
        self.desired = merge_patch(self.desired, msg.desired)
        self.applied_version = msg.version
        self.changed_since_get = True
        return Action(Outcome.APPLIED, self.applied_version)

    def begin_local(self, request_id: str, changes: JsonObject) -> None:
        """A change made on the device, sent to the hub and awaiting its answer."""
        self.local[request_id] = copy.deepcopy(changes)

    def end_local(self, request_id: str) -> bool:
        """The hub answered: accepted, it comes back as desired; refused, it is undone."""
        return self.local.pop(request_id, None) is not None
