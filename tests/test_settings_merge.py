"""The settings rules on their own: merge, precedence, limits, ownership, versions."""

import pytest

from hub.core.settings_merge import (
    MAX_DEPTH,
    SettingsError,
    conflicting_keys,
    delta,
    diff,
    effective,
    merge_patch,
    not_owned_by_device,
    validate_document,
)


def test_merge_patch_follows_rfc7386() -> None:
    doc = {"a": 1, "b": {"c": 2, "d": 3}, "list": [1, 2]}
    patch = {"a": None, "b": {"c": 20, "d": None, "e": 5}, "list": [3], "new": "x"}
    assert merge_patch(doc, patch) == {"b": {"c": 20, "e": 5}, "list": [3], "new": "x"}
    assert doc == {"a": 1, "b": {"c": 2, "d": 3}, "list": [1, 2]}  # the input is untouched


def test_an_object_replaces_a_scalar_and_back() -> None:
    assert merge_patch({"a": 1}, {"a": {"b": 2}}) == {"a": {"b": 2}}
    assert merge_patch({"a": {"b": 2}}, {"a": 3}) == {"a": 3}


def test_device_settings_win_over_account_preferences_leaf_by_leaf() -> None:
    preferences = {"theme": "dark", "units": {"temperature": "C", "distance": "km"}, "tz": "Europe/Oslo"}
    device = {"theme": "light", "units": {"temperature": "F"}, "brightness": 40}
    assert effective(preferences, device) == {
        "theme": "light",
        "units": {"temperature": "F", "distance": "km"},
        "tz": "Europe/Oslo",
        "brightness": 40,
    }


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({}, {"a": 1}),
        ({"a": 1}, {}),
        ({"a": {"b": 1, "c": 2}}, {"a": {"b": 1}}),
        ({"a": [1, 2]}, {"a": [2, 1]}),
        ({"a": 1}, {"a": 1.5}),
        ({"a": 1}, {"a": True}),
        ({"x": {"y": {"z": 1}}}, {"x": {"y": {"z": 2, "w": 3}}}),
    ],
)
def test_diff_is_the_patch_that_turns_old_into_new(old: dict, new: dict) -> None:
    patch = diff(old, new)
    assert merge_patch(old, patch) == new
    assert patch  # they differ, so the patch is not empty


def test_diff_of_equal_documents_is_empty() -> None:
    assert diff({"a": {"b": [1]}}, {"a": {"b": [1]}}) == {}


def test_delta_lists_what_the_device_does_not_run_yet() -> None:
    desired = {"theme": "dark", "units": {"t": "C", "d": "km"}, "volume": 5}
    reported = {"theme": "dark", "units": {"t": "F", "d": "km"}}
    assert delta(desired, reported) == {"units": {"t": "C"}, "volume": 5}
    assert delta(desired, desired) == {}


def nested(depth: int) -> dict:
    doc: dict = {"leaf": 1}
    for _ in range(depth - 1):
        doc = {"n": doc}
    return doc


@pytest.mark.parametrize(
    ("document", "code"),
    [
        ("not an object", "invalid_request"),
        ({"a": None}, "invalid_request"),
        ({"": 1}, "invalid_request"),
        ({"k" * 65: 1}, "invalid_request"),
        ({"$version": 3}, "not_owned"),
        ({"big": "x" * 9000}, "payload_too_large"),
        (nested(MAX_DEPTH + 1), "invalid_request"),
        ({"a": float("nan")}, "invalid_request"),
    ],
)
def test_documents_outside_the_limits_are_refused(document: object, code: str) -> None:
    with pytest.raises(SettingsError) as info:
        validate_document(document)
    assert info.value.code == code


def test_documents_within_the_limits_pass() -> None:
    assert validate_document(nested(MAX_DEPTH)) == nested(MAX_DEPTH)
    assert validate_document({"a": None}, allow_null=True) == {"a": None}


def test_account_preferences_are_not_the_devices_to_change() -> None:
    preferences = {"theme": "dark", "tz": "UTC"}
    assert not_owned_by_device({"theme": "light", "volume": 3}, preferences, {}) == ["theme"]
    # ...unless the device already has its own override of that key.
    assert not_owned_by_device({"theme": "light"}, preferences, {"theme": "dim"}) == []


def test_a_change_based_on_a_stale_version_conflicts_only_on_keys_changed_since() -> None:
    key_versions = {"volume": 7, "theme": 3}
    assert conflicting_keys({"volume": 1, "theme": "x"}, key_versions, base_version=5) == ["volume"]
    assert conflicting_keys({"volume": 1}, key_versions, base_version=7) == []
    assert conflicting_keys({"new": 1}, key_versions, base_version=0) == []


def test_infinity_is_not_a_json_number() -> None:
    with pytest.raises(SettingsError):
        validate_document({"a": float("inf")})
