"""What every command that acts on a hub needs: its data directory, the socket
of the hub running there, and printing that never lets a name act on the terminal."""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from hub.config.model import control_socket, find_data_dir
from linkhub_protocol import escape_hidden


def data_dir_of(args: argparse.Namespace) -> Path:
    """--data-dir, else LINKHUB_DATA_DIR, else ~/.local/share/linkhub (find_data_dir)."""
    return find_data_dir(args.data_dir)[0]


def hub_socket(args: argparse.Namespace) -> Path:
    """Where the running hub of this data directory answers; its refusals
    (ControlError) are printed once, by main."""
    return control_socket(data_dir_of(args))


def print_table(table: Sequence[tuple[str, ...]]) -> None:
    """Columns as wide as their widest cell; the last one runs on.

    Cells hold what devices and people typed (device names, settings keys,
    refused input): control and format characters are shown escaped, so an ESC
    sequence, a line break or a bidi override is seen, not obeyed by the terminal.
    """
    table = [tuple(escape_hidden(cell) for cell in line) for line in table]
    widths = [max(len(line[column]) for line in table) for column in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def hub_went_away(doing: str, what_to_do: str) -> int:
    print(
        f"linkhub: the hub stopped answering while {doing}, so it may or may not have been done. "
        f"Once the hub runs again: {what_to_do}",
        file=sys.stderr,
    )
    return 1


def quote(segment: str) -> str:
    """A name as one URL path segment: account names may hold spaces or slashes."""
    return urllib.parse.quote(segment, safe="")
