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

import os
import sys
from collections.abc import Sequence

from hub.config.model import default_database_url
from hub.errors import LinkHubError
from linkhub import control_client
from linkhub.cli.accounts import account_command
from linkhub.cli.activity import activity_command
from linkhub.cli.apps import apps_command
from linkhub.cli.backup import backup_command, restore_command
from linkhub.cli.common import data_dir_of, print_table
from linkhub.cli.devices import devices_command, link_decision
from linkhub.cli.home_assistant import home_assistant_command
from linkhub.cli.parser import build_parser
from linkhub.cli.run import config_check, password_on_command_line, run_config
from linkhub.cli.settings import settings_command

__all__ = ["build_parser", "main", "password_on_command_line", "print_table", "run_config"]


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

                data_dir = data_dir_of(args)
                return run_account_service(
                    data_dir, args.database_url or default_database_url(data_dir), args.host, args.port
                )
            case "run":
                from linkhub.server import run_hub

                return run_hub(run_config(args), verbose=args.verbose)
            case "config":
                return config_check(args)
            case "account":
                return account_command(args)
            case "activity":
                return activity_command(args)
            case "link":
                return link_decision(args)
            case "apps":
                return apps_command(args)
            case "homeassistant":
                return home_assistant_command(args)
            case "devices":
                return devices_command(args)
            case "settings":
                return settings_command(args)
            case "backup":
                return backup_command(args)
            case "restore":
                return restore_command(args)
    except control_client.ControlError as exc:  # the running hub refused: its reason code too
        print(f"linkhub: {exc} [{exc.reason}]", file=sys.stderr)
        return 1
    except LinkHubError as exc:
        print(f"linkhub: {exc}", file=sys.stderr)
        return 1
    return 2
