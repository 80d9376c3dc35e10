"""`linkhub`: run the hub, and act on the hub that runs in a data directory.

linkhub run [--data-dir DIR] [--http-host H] [--http-port N] [--mqtt-port N]
            [--broker mqtt://ADMIN:PASS@HOST:PORT]
            [--no-mdns] [--mdns-name NAME] [--mdns-interface IFACE_OR_IP]...
                [--account-service URL --account-service-token-file FILE]
    linkhub account-service [--data-dir DIR] [--host H] [--port N]
linkhub account add NAME --password-stdin
linkhub link approve CODE --account NAME
linkhub link deny CODE
linkhub devices [--json]
linkhub settings set (--account NAME | --device ID) KEY=VALUE [KEY=VALUE ...]
linkhub settings show (--account NAME | --device ID) [--json]

A VALUE is JSON if it parses as JSON (7, true, "7", {"from": "22:00"}), else
the text itself; KEY=null removes the key.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hub.config import (
    DEFAULT_CODE_LIFETIME_S,
    DEFAULT_HTTP_PORT,
    DEFAULT_MDNS_NAME,
    DEFAULT_MQTT_PORT,
    DEFAULT_POLL_INTERVAL_S,
    HubConfig,
    default_data_dir,
    default_database_url,
    mdns_host_label,
    parse_broker_url,
)
from hub.errors import ConfigError, LinkHubError, SettingsRefused
from linkhub import control_client


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
    run.add_argument("--http-host", default=os.environ.get("LINKHUB_HTTP_HOST", "0.0.0.0"))
    run.add_argument("--http-port", type=int, default=_env_int("LINKHUB_HTTP_PORT", DEFAULT_HTTP_PORT))
    run.add_argument(
        "--mqtt-host",
        default=os.environ.get("LINKHUB_MQTT_HOST", "0.0.0.0"),
        help="where the hub's own mosquitto listens",
    )
    run.add_argument("--mqtt-port", type=int, default=_env_int("LINKHUB_MQTT_PORT", DEFAULT_MQTT_PORT))
    run.add_argument(
        "--broker",
        default=os.environ.get("LINKHUB_BROKER"),
        help="use a mosquitto you already run: mqtt://ADMIN:PASSWORD@HOST:PORT (its dynamic-security admin)",
    )
    run.add_argument(
        "--public-host",
        default=os.environ.get("LINKHUB_PUBLIC_HOST"),
        help="the name or address phones use to reach the hub (default: its LAN address)",
    )
    run.add_argument(
        "--device-broker",
        default=os.environ.get("LINKHUB_DEVICE_BROKER"),
        metavar="HOST[:PORT]",
        help="where linked devices connect, if not where the hub does (a broker behind a port mapping)",
    )
    run.add_argument(
        "--code-lifetime",
        type=int,
        default=_env_int("LINKHUB_CODE_LIFETIME_S", DEFAULT_CODE_LIFETIME_S),
        help="seconds a user code stays valid (default 900)",
    )
    run.add_argument(
        "--poll-interval", type=int, default=_env_int("LINKHUB_POLL_INTERVAL_S", DEFAULT_POLL_INTERVAL_S)
    )
    run.add_argument("--no-mdns", action="store_true", help="do not advertise the hub over mDNS")
    run.add_argument(
        "--mdns-name",
        default=os.environ.get("LINKHUB_MDNS_NAME", DEFAULT_MDNS_NAME),
        metavar="NAME",
        help=f"the hub's host name on the LAN, NAME.local (default {DEFAULT_MDNS_NAME})",
    )
    run.add_argument(
        "--mdns-interface",
        action="append",
        default=[],
        metavar="IFACE_OR_IP",
        help="advertise over mDNS on this interface or IPv4 address (repeatable; "
        "default: every interface with a home-network 10/8, 172.16/12 or 192.168/16 address)",
    )
    run.add_argument(
        "--account-service",
        default=os.environ.get("LINKHUB_ACCOUNT_SERVICE"),
        metavar="URL",
        help="use an account service run on its own (`linkhub account-service`) instead of the built-in one",
    )
    run.add_argument(
        "--account-service-token-file",
        type=Path,
        default=os.environ.get("LINKHUB_ACCOUNT_SERVICE_TOKEN_FILE"),
        metavar="FILE",
        help="the file holding that service's bearer token (its DATA/account-service-token)",
    )
    run.add_argument("-v", "--verbose", action="store_true")

    account = commands.add_parser("account", help="household accounts")
    account_commands = account.add_subparsers(dest="account_command", required=True)
    add = account_commands.add_parser("add", parents=[common], help="create an account")
    add.add_argument("name")
    add.add_argument(
        "--password-stdin", action="store_true", required=True, help="read the password from stdin"
    )

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
    from web import values  # imported late: the web package pulls in Flask and SQLAlchemy

    """KEY=VALUE from the command line; split at the first `=`, so values may hold `=`."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), values.parse_value(value)
    except SettingsRefused as exc:
        raise argparse.ArgumentTypeError(f"{key}: {exc}") from None


def _data_dir(args: argparse.Namespace) -> Path:
    return (args.data_dir or default_data_dir()).expanduser().resolve()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
            case "account":
                return _account_add(args)
            case "link":
                return _link_decision(args)
            case "devices":
                return _devices(args)
            case "settings":
                return _settings(args)
    except LinkHubError as exc:
        print(f"linkhub: {exc}", file=sys.stderr)
        return 1
    return 2


def _account_service_token(args: argparse.Namespace) -> str | None:
    if args.account_service is None:
        return None
    if args.account_service_token_file is None:
        raise ConfigError("--account-service needs --account-service-token-file FILE (the service's token)")
    try:
        return args.account_service_token_file.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the account service token: {exc}") from None


def _run_config(args: argparse.Namespace) -> HubConfig:
    data_dir = _data_dir(args)
    return HubConfig(
        data_dir=data_dir,
        database_url=args.database_url or default_database_url(data_dir),
        http_host=args.http_host,
        http_port=args.http_port,
        mqtt_host=args.mqtt_host,
        mqtt_port=args.mqtt_port,
        external_broker=parse_broker_url(args.broker) if args.broker else None,
        public_host=args.public_host,
        device_broker=args.device_broker,
        code_lifetime_s=args.code_lifetime,
        poll_interval_s=args.poll_interval,
        mdns=not args.no_mdns,
        mdns_name=mdns_host_label(args.mdns_name),
        mdns_interfaces=tuple(args.mdns_interface),
        account_service_url=args.account_service,
        account_service_token=_account_service_token(args),
    )


def _account_add(args: argparse.Namespace) -> int:
    """Through the running hub if there is one (so a separate account service is
    used when the hub uses one); otherwise straight into the built-in one."""
    password = sys.stdin.readline().rstrip("\r\n")
    data_dir = _data_dir(args)
    socket_path = data_dir / "hub.sock"
    if socket_path.exists():
        try:
            created = control_client.call(
                socket_path, "POST", "/v1/accounts", {"name": args.name, "password": password}
            )
        except control_client.ControlError as exc:
            print(f"linkhub: {exc}", file=sys.stderr)
            return 1
        name, is_owner = created["name"], created["is_owner"]
    else:
        from hub.accounts import AccountService  # only here: it pulls in argon2 and SQLAlchemy
        from hub.store import make_engine

        data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(args.database_url or default_database_url(data_dir))
        try:
            account = AccountService(engine, time.time).create(args.name, password)
        finally:
            engine.dispose()
        name, is_owner = account.name, account.is_owner
    print(f"account {name!r} created ({'owner' if is_owner else 'member'})")
    return 0


def _link_decision(args: argparse.Namespace) -> int:
    socket_path = _data_dir(args) / "hub.sock"
    try:
        if args.link_command == "approve":
            result = control_client.call(
                socket_path, "POST", "/v1/link/approve", {"code": args.code, "account": args.account}
            )
            print(
                f"approved: {result['name']} ({result['model']}) is linked to {result['account']} "
                f"as {result['device_id']}"
            )
        else:
            control_client.call(socket_path, "POST", "/v1/link/deny", {"code": args.code})
            print("denied: the device was told")
    except control_client.ControlError as exc:
        print(f"linkhub: {exc} [{exc.reason}]", file=sys.stderr)
        return 1
    return 0


def _devices(args: argparse.Namespace) -> int:
    devices = control_client.call(_data_dir(args) / "hub.sock", "GET", "/v1/devices")["devices"]
    if args.json:
        print(json.dumps(devices, indent=2))
        return 0
    if not devices:
        print("no linked devices")
    for device in devices:
        linked = datetime.fromtimestamp(device["linked_at_s"], UTC).strftime("%Y-%m-%d %H:%M UTC")
        state = "online" if device["online"] else "offline"
        print(f"{device['device_id']}  {device['name']} ({device['model']})  {state}  linked {linked}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def _settings(args: argparse.Namespace) -> int:
    socket_path = _data_dir(args) / "hub.sock"
    try:
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
    except control_client.ControlError as exc:
        print(f"linkhub: {exc} [{exc.reason}]", file=sys.stderr)
        return 1
    return 0


_ABSENT = object()


def _changed_lines(changes: dict[str, Any], old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    from web import values  # imported late: the web package pulls in Flask and SQLAlchemy

    """One line per key asked for: what it was and what it is now.

    Read back from the hub's answer rather than echoed from the command line: a
    merge patch merges objects, so the new value may be more than what was typed.
    """
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
    print("\n".join(_changed_lines(changes, before["document"], after["document"])))


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
    print("\n".join(_changed_lines(changes, before["settings"], after["settings"])))
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
        print(f"  {key} = {values.show_value(current['document'][key])}")


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
    widths = [max(len(line[column]) for line in table) for column in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def _quote(segment: str) -> str:
    """A name as one URL path segment: account names may hold spaces or slashes."""
    return urllib.parse.quote(segment, safe="")
