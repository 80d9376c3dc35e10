"""The command line of `linkhub`: every command, its flags and their help."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from hub.config import loader as config_file
from linkhub_protocol import values


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
        "on their account page. For the owner's account too. Recorded in the account's activity.",
    )
    two_factor_off.add_argument("name")
    password = account_commands.add_parser(
        "password",
        parents=[common],
        help="set a new password for an account (read from stdin); its person must replace it at sign-in",
        description="Set a new password for an account whose person forgot theirs, the owner's too: "
        "its sessions end everywhere, and at the next sign-in with this password the person must "
        "choose their own before anything else. Recorded in the account's activity.",
    )
    password.add_argument("name")
    password.add_argument(
        "--password-stdin", action="store_true", required=True, help="read the new password from stdin"
    )

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

    home_assistant = commands.add_parser(
        "homeassistant",
        parents=[common],
        help="make Home Assistant's broker login, and print what to type into its MQTT integration",
        description="Make (or make again, with a new password: the one before stops working) the broker "
        "login Home Assistant uses: it reads the discovery configs and the devices' state and status, and "
        "sends commands only on the hub's command topics, which the hub checks. Prints the host, port, user "
        "and password to type into Home Assistant's MQTT integration.",
    )
    home_assistant.add_argument("--json", action="store_true", help="the same as one JSON object")

    apps = commands.add_parser(
        "apps",
        help="register the apps that link over HTTP (OAuth device flow), by client_id",
        description="Apps the owner registered are shown by name on the confirm page; others by their "
        "client_id, marked unverified (or refused, with --no-oauth-unregistered-apps). docs/oauth.md.",
    )
    apps_commands = apps.add_subparsers(dest="apps_command", required=True)
    apps_add = apps_commands.add_parser("add", parents=[common], help="register an app (or change one)")
    apps_add.add_argument("client_id", help="the client_id the app sends")
    apps_add.add_argument("--name", required=True, help="the name the confirm page shows")
    apps_add.add_argument(
        "--scopes",
        default="openid profile offline_access devices:read",
        help="the scopes it may ask for, space-separated (default: %(default)s); docs/oauth.md lists them",
    )
    apps_commands.add_parser("list", parents=[common], help="the registered apps")
    apps_remove = apps_commands.add_parser("remove", parents=[common], help="forget a registered app")
    apps_remove.add_argument("client_id")

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
