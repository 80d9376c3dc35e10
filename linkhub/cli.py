"""`linkhub`: run the hub, and act on the hub that runs in a data directory.

linkhub run [--data-dir DIR] [--http-host H] [--http-port N] [--mqtt-port N]
            [--mqtt-tls-port N] [--broker mqtt://ADMIN:PASS@HOST:PORT]
            [--no-mdns] [--mdns-name NAME] [--mdns-interface IFACE_OR_IP]...
                [--account-service URL --account-service-token-file FILE]
            [--config FILE] [--log-format text|json]
    linkhub config check [--config FILE] [--data-dir DIR]
    linkhub account-service [--data-dir DIR] [--host H] [--port N]
linkhub account add NAME --password-stdin
linkhub account list [--json]
linkhub account remove NAME
linkhub account two-factor-off NAME
linkhub activity [--account NAME] [--limit N] [--json]
linkhub link approve CODE --account NAME
linkhub link deny CODE
linkhub devices [--json]
linkhub devices unlink DEVICE_ID
linkhub settings set (--account NAME | --device ID) KEY=VALUE [KEY=VALUE ...]
linkhub settings show (--account NAME | --device ID) [--json]
linkhub backup FILE
linkhub restore FILE [--force]

A VALUE is JSON if it parses as JSON (7, true, "7", {"from": "22:00"}), else
the text itself; KEY=null removes the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hub.config import loader as config_file
from hub.config.model import ExternalBroker, HubConfig, control_socket, default_data_dir, default_database_url
from hub.errors import LinkHubError
from linkhub import control_client
from linkhub_protocol import escape_hidden, values


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"linkhub: {name} must be a whole number, not {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linkhub", description="LinkHub: link home devices to an account.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the hub keeps its database and secrets (env LINKHUB_DATA_DIR)",
    )
    common.add_argument("--database-url", default=None, help="SQLAlchemy URL (env LINKHUB_DATABASE_URL)")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", parents=[common], help="run the hub in the foreground")
    # Each option is a key of the configuration file too: hub/config/loader.py
    # describes them all and merges flag > environment > file > default.
    config_file.add_arguments(run)
    run.add_argument("-v", "--verbose", action="store_true")

    config = commands.add_parser("config", help="the configuration of `linkhub run`")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser(
        "check",
        parents=[common],
        help="show what `linkhub run` would use, where each value comes from, and what is wrong",
    )
    config_file.add_arguments(check)

    account = commands.add_parser("account", help="household accounts")
    account_commands = account.add_subparsers(dest="account_command", required=True)
    add = account_commands.add_parser("add", parents=[common], help="create an account")
    add.add_argument("name")
    add.add_argument(
        "--password-stdin", action="store_true", required=True, help="read the password from stdin"
    )
    listing = account_commands.add_parser(
        "list", parents=[common], help="the household's accounts: owner or member, created, devices"
    )
    listing.add_argument("--json", action="store_true")
    remove = account_commands.add_parser(
        "remove",
        parents=[common],
        help="remove a member's account (not the owner's); its devices must be unlinked first",
        description="Remove a member's account: it cannot sign in any more, and its settings and "
        "activity are kept as history. Refused while devices are linked to it "
        "(`linkhub devices` lists them, `linkhub devices unlink ID` unlinks one).",
    )
    remove.add_argument("name")
    two_factor_off = account_commands.add_parser(
        "two-factor-off",
        parents=[common],
        help="turn an account's two-factor sign-in off, for someone who lost phone and recovery codes",
        description="Turn two-factor sign-in off for an account whose person lost both the phone "
        "and the recovery codes: the password alone signs in again, and they can turn it on anew "
        "under Settings. For the owner's account too. Recorded in the account's activity.",
    )
    two_factor_off.add_argument("name")

    activity = commands.add_parser(
        "activity",
        parents=[common],
        help="recent activity: sign-ins, devices linked and unlinked, settings changes, accounts",
    )
    activity.add_argument(
        "--account", metavar="NAME", help="only this account's events (default: every event on the hub)"
    )
    activity.add_argument(
        "--limit", type=int, default=50, metavar="N", help="the newest N events (default 50)"
    )
    activity.add_argument("--json", action="store_true", help="one JSON object per line, newest first")

    link = commands.add_parser("link", help="approve or deny a device's code")
    link_commands = link.add_subparsers(dest="link_command", required=True)
    approve = link_commands.add_parser("approve", parents=[common])
    approve.add_argument("code")
    approve.add_argument("--account", required=True, help="the account the device is linked to")
    deny = link_commands.add_parser("deny", parents=[common])
    deny.add_argument("code")

    service = commands.add_parser(
        "account-service", parents=[common], help="run the account service on its own (HTTP JSON API)"
    )
    service.add_argument("--host", default="127.0.0.1", help="where to listen (default: this machine only)")
    service.add_argument("--port", type=int, default=_env_int("LINKHUB_ACCOUNT_SERVICE_PORT", 8081))

    devices = commands.add_parser("devices", parents=[common], help="list linked devices")
    devices.add_argument("--json", action="store_true")
    devices_commands = devices.add_subparsers(dest="devices_command", metavar="{unlink}")
    # Its own --data-dir and --database-url, defaulting to "not given": a
    # subcommand's defaults would otherwise overwrite the ones given before it.
    common_after = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common_after.add_argument("--data-dir", type=Path, help="as for `linkhub devices`")
    common_after.add_argument("--database-url", help="as for `linkhub devices`")
    unlink = devices_commands.add_parser(
        "unlink",
        parents=[common_after],
        help="unlink a device: disconnect it and delete its broker credentials (its settings are kept)",
        description="Unlink a device, whichever account holds it (the hub's operator may unlink any): "
        "the broker disconnects it at once and refuses its credentials from then on; its settings "
        "stay as history. The device links again with a new code and a new approval.",
    )
    unlink.add_argument("device_id", metavar="DEVICE_ID", help="as `linkhub devices` lists it")

    backup = commands.add_parser(
        "backup",
        parents=[common],
        help="copy the database, the broker's state and the secrets into one file (the hub may run)",
    )
    backup.add_argument("file", type=Path, metavar="FILE", help="the archive to write (tar.gz, mode 0600)")
    restore = commands.add_parser(
        "restore", parents=[common], help="bring a backup back into a data directory where no hub runs"
    )
    restore.add_argument("file", type=Path, metavar="FILE", help="an archive made by `linkhub backup`")
    restore.add_argument(
        "--force", action="store_true", help="replace the database and secrets already in the data directory"
    )

    settings = commands.add_parser("settings", help="account preferences and a device's own settings")
    settings_commands = settings.add_subparsers(dest="settings_command", required=True)
    change = settings_commands.add_parser(
        "set",
        parents=[common],
        help="change settings; every device of the account gets an account-wide change",
        epilog='VALUE is JSON if it parses (7, true, "7", {"a": 1}), else text; KEY=null removes KEY.',
    )
    _settings_target(change)
    change.add_argument("changes", nargs="+", type=_assignment, metavar="KEY=VALUE")
    show = settings_commands.add_parser("show", parents=[common], help="show settings")
    _settings_target(show)
    show.add_argument("--json", action="store_true")
    return parser


def _settings_target(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--account", metavar="NAME", help="an account's preferences (all its devices)")
    target.add_argument("--device", metavar="ID", help="one device's own settings (they win on it)")


def _assignment(text: str) -> tuple[str, Any]:
    """KEY=VALUE from the command line; split at the first `=`, so values may hold `=`."""
    try:
        return values.parse_assignment(text)
    except ValueError as exc:  # AssignmentError or ValueTooDeep, each with its message
        raise argparse.ArgumentTypeError(str(exc)) from None


def _hub_socket(args: argparse.Namespace) -> Path:
    """Where the running hub of this data directory answers; its refusals
    (ControlError) are printed once, by main."""
    return control_socket(_data_dir(args))


def _data_dir(args: argparse.Namespace) -> Path:
    return (args.data_dir or default_data_dir()).expanduser().resolve()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Everything LinkHub writes is for its own user only: the database holds
    # password hashes, TOTP secrets and device passwords until first use, the
    # data directory the broker's and the hub's secrets. (The systemd unit sets
    # UMask=0077 too; this covers `linkhub run` and `account add` by hand.)
    os.umask(0o077)
    try:
        match args.command:
            case "account-service":
                from linkhub.account_server import run_account_service

                data_dir = _data_dir(args)
                return run_account_service(
                    data_dir, args.database_url or default_database_url(data_dir), args.host, args.port
                )
            case "run":
                from linkhub.server import run_hub

                return run_hub(_run_config(args), verbose=args.verbose)
            case "config":
                return _config_check(args)
            case "account":
                return _account(args)
            case "activity":
                return _activity(args)
            case "link":
                return _link_decision(args)
            case "devices":
                return _devices(args)
            case "settings":
                return _settings(args)
            case "backup":
                return _backup(args)
            case "restore":
                return _restore(args)
    except control_client.ControlError as exc:  # the running hub refused: its reason code too
        print(f"linkhub: {exc} [{exc.reason}]", file=sys.stderr)
        return 1
    except LinkHubError as exc:
        print(f"linkhub: {exc}", file=sys.stderr)
        return 1
    return 2


def _resolved(args: argparse.Namespace) -> config_file.Resolution:
    """Flags given, LINKHUB_* and the configuration file, merged in hub/config/loader.py."""
    return config_file.load(
        config_file.flags_from(args), os.environ, config_flag=args.config, data_dir_flag=args.data_dir
    )


def _run_config(args: argparse.Namespace) -> HubConfig:
    """What `linkhub run` uses: flag > environment > file > default; every problem at once."""
    resolution = _resolved(args)
    warning = password_on_command_line(resolution)
    if warning:
        print(f"linkhub: warning: {warning}", file=sys.stderr, flush=True)
    return resolution.hub_config()


def password_on_command_line(resolution: config_file.Resolution) -> str | None:
    """What to say when --broker carries the admin password: any local user reads
    a process's arguments (`ps`, /proc/PID/cmdline, world-readable), while its
    environment and a 0600 file are the hub's user's only."""
    broker = resolution.setting("broker")
    # A valid --broker always carries the password (mqtt://ADMIN:PASSWORD@...).
    if not broker.source.startswith("flag") or not isinstance(broker.value, ExternalBroker):
        return None
    return (
        "--broker carries the broker's admin password on the command line, where any user of this "
        "machine can read it (ps). Give it in the environment (LINKHUB_BROKER=mqtt://...) or in the "
        'configuration file (broker = "mqtt://...", mode 0600) instead.'
    )


def _config_check(args: argparse.Namespace) -> int:
    """Print the effective configuration with each value's source; non-zero if anything is wrong."""
    resolution = _resolved(args)
    print(resolution.report())
    return 1 if resolution.problems else 0


def _account(args: argparse.Namespace) -> int:
    match args.account_command:
        case "list":
            return _account_list(args)
        case "remove":
            return _account_remove(args)
        case "two-factor-off":
            return _account_two_factor_off(args)
    return _account_add(args)


def _account_list(args: argparse.Namespace) -> int:
    """Like `account add`: through the running hub if there is one, else the built-in service."""
    data_dir = _data_dir(args)
    socket_path = control_socket(data_dir)
    if socket_path.exists():
        accounts = control_client.call(socket_path, "GET", "/v1/accounts")["accounts"]
    else:
        from hub.services.local_accounts import AccountService  # only here: it pulls in argon2 and SQLAlchemy
        from hub.store.engine import make_engine

        data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(args.database_url or default_database_url(data_dir))
        try:
            # No hub: no device counts to give (devices are the hub's to know).
            accounts = [dataclasses.asdict(a) for a in AccountService(engine, time.time).list_accounts()]
        finally:
            engine.dispose()
    if args.json:
        print(json.dumps(accounts, indent=2, ensure_ascii=False))
        return 0
    if not accounts:
        print("no accounts yet (create the owner with `linkhub account add NAME --password-stdin`)")
        return 0
    table = [("NAME", "ROLE", "CREATED", "DEVICES")] + [
        (
            account["name"],
            "owner" if account["is_owner"] else "member",
            datetime.fromtimestamp(account["created_at_s"], UTC).strftime("%Y-%m-%d %H:%M UTC"),
            str(account["devices"]) if "devices" in account else "-",
        )
        for account in accounts
    ]
    _print_table(table)
    return 0


def _account_remove(args: argparse.Namespace) -> int:
    """Only through the running hub: it knows which devices are still linked to the account."""
    removed = control_client.call(_hub_socket(args), "DELETE", f"/v1/accounts/{_quote(args.name)}")
    print(f"account {removed['name']!r} removed: it cannot sign in any more; its history is kept")
    return 0


def _account_two_factor_off(args: argparse.Namespace) -> int:
    """Only through the running hub, like `remove`: the event goes in its activity log."""
    account = control_client.call(_hub_socket(args), "POST", "/v1/two-factor/off", {"account": args.name})
    print(
        f"two-factor sign-in is off for {account['name']!r}: the password alone signs in now; "
        "they can turn it on again under Settings > Two-factor sign-in"
    )
    return 0


def _activity(args: argparse.Namespace) -> int:
    query = {"limit": str(args.limit)} | ({"account": args.account} if args.account else {})
    events = control_client.call(_hub_socket(args), "GET", "/v1/activity?" + urllib.parse.urlencode(query))[
        "events"
    ]
    if args.json:
        for event in events:
            print(json.dumps(event, ensure_ascii=False))
        return 0
    if not events:
        print("no activity yet")
        return 0
    table = [("WHEN", "ACCOUNT", "WHAT", "DEVICE", "FROM", "DETAIL")] + [
        (
            datetime.fromtimestamp(event["at_s"], UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            _account_label(event),
            event["what"],
            event["device_name"] or event["device_id"] or "-",
            event["address"] or "-",
            event["detail"] or "-",
        )
        for event in events
    ]
    if args.account:  # one account: its name on every line says nothing
        table = [row[:1] + row[2:] for row in table]
    _print_table(table)
    return 0


def _account_label(event: dict[str, Any]) -> str:
    if event["account"]:
        return str(event["account"])
    if event["account_id"] is not None:
        return f"#{event['account_id']} (removed)"
    return "-"


def _print_table(table: Sequence[tuple[str, ...]]) -> None:
    """Columns as wide as their widest cell; the last one runs on.

    Cells hold what devices and people typed (device names, settings keys,
    refused input): control and format characters are shown escaped, so an ESC
    sequence, a line break or a bidi override is seen, not obeyed by the terminal.
    """
    table = [tuple(escape_hidden(cell) for cell in line) for line in table]
    widths = [max(len(line[column]) for line in table) for column in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def _account_add(args: argparse.Namespace) -> int:
    """Through the running hub if there is one (so a separate account service is
    used when the hub uses one); otherwise straight into the built-in one."""
    password = sys.stdin.readline().rstrip("\r\n")
    data_dir = _data_dir(args)
    socket_path = control_socket(data_dir)
    if socket_path.exists():
        created = control_client.call(
            socket_path, "POST", "/v1/accounts", {"name": args.name, "password": password}
        )
        name, is_owner = created["name"], created["is_owner"]
    else:
        from hub.services.activity import ActivityLog
        from hub.services.household import Origin, record_created
        from hub.services.local_accounts import AccountService  # only here: it pulls in argon2 and SQLAlchemy
        from hub.store.engine import make_engine

        data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(args.database_url or default_database_url(data_dir))
        try:
            service = AccountService(engine, time.time)
            account = service.create(args.name, password)
            owner = next((a.id for a in service.list_accounts() if a.is_owner), None)
            # The same trail as through the running hub (hub.services.household).
            record_created(ActivityLog(engine, time.time), account, owner_id=owner, origin=Origin.CLI)
        finally:
            engine.dispose()
        name, is_owner = account.name, account.is_owner
    print(f"account {name!r} created ({'owner' if is_owner else 'member'})")
    return 0


# The hub closed the control connection or stopped answering mid-request (it died,
# or was stopped): control_client turns RemoteDisconnected, a reset or the 30 s
# timeout into HubWentAway, with a general message; the commands that change
# something say here what to check for their own change.
_HUB_WENT_AWAY = (control_client.HubWentAway, http.client.HTTPException, ConnectionError, TimeoutError)


def _hub_went_away(doing: str, what_to_do: str) -> int:
    print(
        f"linkhub: the hub stopped answering while {doing}, so it may or may not have been done. "
        f"Once the hub runs again: {what_to_do}",
        file=sys.stderr,
    )
    return 1


def _link_decision(args: argparse.Namespace) -> int:
    socket_path = _hub_socket(args)
    try:
        if args.link_command == "approve":
            result = control_client.call(
                socket_path, "POST", "/v1/link/approve", {"code": args.code, "account": args.account}
            )
            print(
                escape_hidden(
                    f"approved: {result['name']} ({result['model']}) is linked to {result['account']} "
                    f"as {result['device_id']}"
                )
            )
        else:
            control_client.call(socket_path, "POST", "/v1/link/deny", {"code": args.code})
            print("denied: the device was told")
    except _HUB_WENT_AWAY:
        if args.link_command == "approve":
            # A broker login left by an approval cut short is removed by the hub
            # itself (LinkService.reconcile_identities); the code stays usable.
            return _hub_went_away(
                f"approving {args.code}",
                "`linkhub devices` lists the device if it was linked; if not, approve the code again "
                "(it works until it expires).",
            )
        return _hub_went_away(f"denying {args.code}", "`linkhub activity` shows whether it was denied.")
    return 0


def _devices(args: argparse.Namespace) -> int:
    if args.devices_command == "unlink":
        return _unlink(args)
    devices = control_client.call(_hub_socket(args), "GET", "/v1/devices")["devices"]
    if args.json:
        print(json.dumps(devices, indent=2))
        return 0
    if not devices:
        print("no linked devices")
    for device in devices:
        linked = datetime.fromtimestamp(device["linked_at_s"], UTC).strftime("%Y-%m-%d %H:%M UTC")
        state = "online" if device["online"] else "offline"
        if device.get("status_unknown_since_s"):
            since = datetime.fromtimestamp(device["status_unknown_since_s"]).strftime("%H:%M")
            state = f"unknown since {since} (the hub has no broker connection)"
        line = f"{device['device_id']}  {device['name']} ({device['model']})  {state}  linked {linked}"
        print(escape_hidden(line))
    return 0


def _unlink(args: argparse.Namespace) -> int:
    socket_path = _hub_socket(args)
    try:
        device = control_client.call(socket_path, "DELETE", f"/v1/devices/{_quote(args.device_id)}")
    except _HUB_WENT_AWAY:
        return _hub_went_away(
            f"unlinking {args.device_id}",
            f"`linkhub devices unlink {args.device_id}` again is safe (it says if it was already done).",
        )
    owner = f" from {device['account']}" if device.get("account") else ""
    print(
        f"unlinked: {device['name']} ({device['model']}) {device['device_id']}{owner}; "
        "it was disconnected and its broker credentials are deleted (its settings are kept)"
    )
    return 0


def _backup(args: argparse.Namespace) -> int:
    """A thin shell: hub/store/backup.py does the work (and is tested without the CLI)."""
    from hub.store.backup import create_backup

    data_dir = _data_dir(args)
    report = create_backup(data_dir, args.file, args.database_url or default_database_url(data_dir))
    database = report.manifest["database"]
    held = [entry["path"] for entry in report.manifest["files"]]
    if database.get("member"):
        held.insert(0, f"the database (schema {database.get('schema_revision') or 'from before migrations'})")
    print(f"backup written to {report.path}: {', '.join(held) or 'nothing'}")
    for note in report.notes:
        print(note)
    return 0


def _restore(args: argparse.Namespace) -> int:
    from hub.store.backup import restore_backup

    data_dir = _data_dir(args)
    report = restore_backup(
        args.file, data_dir, args.database_url or default_database_url(data_dir), force=args.force
    )
    print(f"restored the backup made {report.manifest['created_at']} into {report.data_dir}:")
    if report.database_path is not None:
        print(f"  database: {report.database_path} (upgraded when the hub starts, if it is older)")
    for path in report.files:
        print(f"  {path}")
    for note in report.notes:
        print(note)
    print(f"Start the hub with: linkhub run --data-dir {report.data_dir}")
    return 0


def _settings(args: argparse.Namespace) -> int:
    socket_path = _hub_socket(args)
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
    before = control_client.call(socket_path, "GET", f"/v1/settings/account/{_quote(account)}")
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

    before = control_client.call(socket_path, "GET", f"/v1/settings/device/{_quote(device_id)}")
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

    current = control_client.call(socket_path, "GET", f"/v1/settings/account/{_quote(account)}")
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

    body = control_client.call(socket_path, "GET", f"/v1/settings/device/{_quote(device_id)}")
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
    _print_table(table)


def _quote(segment: str) -> str:
    """A name as one URL path segment: account names may hold spaces or slashes."""
    return urllib.parse.quote(segment, safe="")


if __name__ == "__main__":  # last: main() needs every function above
    raise SystemExit(main())
