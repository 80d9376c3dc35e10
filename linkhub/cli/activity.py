"""`linkhub activity`: the household's recent events."""

from __future__ import annotations

import argparse
import json
import urllib.parse
from datetime import UTC, datetime
from typing import Any

from linkhub import control_client
from linkhub.cli.common import hub_socket, print_table


def activity_command(args: argparse.Namespace) -> int:
    query = {"limit": str(args.limit)} | ({"account": args.account} if args.account else {})
    events = control_client.call(hub_socket(args), "GET", "/v1/activity?" + urllib.parse.urlencode(query))[
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
    print_table(table)
    return 0


def _account_label(event: dict[str, Any]) -> str:
    if event["account"]:
        return str(event["account"])
    if event["account_id"] is not None:
        return f"#{event['account_id']} (removed)"
    return "-"
