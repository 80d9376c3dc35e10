"""`linkhub run` and `linkhub config check`: the settings from flags, LINKHUB_*
and the file (hub/config/loader.py), and the warning about a password on the command line."""

from __future__ import annotations

import argparse
import os
import sys

from hub.config import loader as config_file
from hub.config.model import ExternalBroker, HubConfig


def resolved(args: argparse.Namespace) -> config_file.Resolution:
    """Flags given, LINKHUB_* and the configuration file, merged in hub/config/loader.py."""
    return config_file.load(
        config_file.flags_from(args), os.environ, config_flag=args.config, data_dir_flag=args.data_dir
    )


def run_config(args: argparse.Namespace) -> HubConfig:
    """What `linkhub run` uses: flag > environment > file > default; every problem at once."""
    resolution = resolved(args)
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


def config_check(args: argparse.Namespace) -> int:
    """Print the effective configuration with each value's source; non-zero if anything is wrong."""
    resolution = resolved(args)
    print(resolution.report())
    return 1 if resolution.problems else 0
