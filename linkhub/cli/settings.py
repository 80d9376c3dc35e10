"""`linkhub settings set|show` for an account's or a device's settings."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from linkhub import control_client
from linkhub.cli.common import hub_socket, print_table, quote
from linkhub_protocol import escape_hidden


def settings_command(args: argparse.Namespace) -> int:
    socket_path = hub_socket(args)
    if args.settings_command == "set":
        changes = dict(args.changes)
        if args.account:
            _set_account_settings(socket_path, args.account, changes)
        else:
            _set_device_settings(socket_path, args.device, changes)
    elif args.account:
        _show_account_settings(socket_path, args.account, as_json=args.json)
    else:
        _show_device_settings(socket_path, args.device, as_json=args.json)
    return 0


_ABSENT = object()


def _changed_lines(changes: dict[str, Any], old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """One line per key asked for: what it was and what it is now.

    Read back from the hub's answer rather than echoed from the command line: a
    merge patch merges objects, so the new value may be more than what was typed.
    """
    from web import values  # imported late: the web package pulls in Flask and SQLAlchemy

    lines = []
    for key in changes:
        before, after = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if before is _ABSENT and after is _ABSENT:
            lines.append(f"  {key}: not set, nothing to remove")
        elif after is _ABSENT:
            lines.append(f"  {key}: removed (was {values.show_value(before)})")
        elif before is _ABSENT:
            lines.append(f"  {key}: {values.show_value(after)} (new)")
        elif values.show_value(before) == values.show_value(after):
            lines.append(f"  {key}: unchanged, {values.show_value(after)}")
        else:
            lines.append(f"  {key}: {values.show_value(before)} -> {values.show_value(after)}")
    return lines


def _set_account_settings(socket_path: Path, account: str, changes: dict[str, Any]) -> None:
    before = control_client.call(socket_path, "GET", f"/v1/settings/account/{quote(account)}")
    after = control_client.call(
        socket_path, "POST", "/v1/settings/account", {"account": account, "changes": changes}
    )
    if after["version"] == before["version"]:
        print(f"{after['account']}'s preferences: nothing changed (version {after['version']})")
    else:
        print(
            f"{after['account']}'s preferences are now version {after['version']}; "
            "every device of the account gets the change:"
        )
    print(
        "\n".join(
            escape_hidden(line) for line in _changed_lines(changes, before["document"], after["document"])
        )
    )


def _set_device_settings(socket_path: Path, device_id: str, changes: dict[str, Any]) -> None:
    from web import values  # imported late: the web package pulls in Flask and SQLAlchemy

    before = control_client.call(socket_path, "GET", f"/v1/settings/device/{quote(device_id)}")
    after = control_client.call(
        socket_path, "POST", "/v1/settings/device", {"device_id": device_id, "changes": changes}
    )
    version = after["desired_version"]
    if version == before["desired_version"]:
        print(f"{device_id}'s own settings: nothing changed (version {version})")
    else:
        print(f"{device_id}'s own settings changed; it now has version {version}:")
    print(
        "\n".join(
            escape_hidden(line) for line in _changed_lines(changes, before["settings"], after["settings"])
        )
    )
    print(f"device: {values.version_status(values.view_from_json(after))}")


def _show_account_settings(socket_path: Path, account: str, *, as_json: bool) -> None:
    from web import values  # imported late: the web package pulls in Flask and SQLAlchemy

    current = control_client.call(socket_path, "GET", f"/v1/settings/account/{quote(account)}")
    if as_json:
        print(json.dumps(current, indent=2, ensure_ascii=False))
        return
    print(f"{current['account']}'s preferences, version {current['version']}:")
    if not current["document"]:
        print("  (none)")
    for key in sorted(current["document"]):
        print(f"  {escape_hidden(key)} = {escape_hidden(values.show_value(current['document'][key]))}")


def _show_device_settings(socket_path: Path, device_id: str, *, as_json: bool) -> None:
    from web import values  # imported late: the web package pulls in Flask and SQLAlchemy

    body = control_client.call(socket_path, "GET", f"/v1/settings/device/{quote(device_id)}")
    if as_json:
        print(json.dumps(body, indent=2, ensure_ascii=False))
        return
    view = values.view_from_json(body)
    print(f"{view.device_id}: {values.version_status(view)}")
    if view.reported_at_s is None:
        print("last report: never")
    else:
        reported = datetime.fromtimestamp(view.reported_at_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        print(f"last report: {reported}")
    rows = values.setting_rows(view)
    if not rows:
        print("no settings")
        return
    table = [("KEY", "DESIRED", "REPORTED", "SOURCE", "STATUS")] + [
        (
            row.key,
            row.desired if row.desired is not None else "-",
            row.reported if row.reported is not None else "-",
            row.source,
            "synced" if row.synced else "pending",
        )
        for row in rows
    ]
    print_table(table)
