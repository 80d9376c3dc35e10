"""`linkhub link approve|deny` and `linkhub devices [unlink]`."""

from __future__ import annotations

import argparse
import http.client
import json
from datetime import UTC, datetime

from linkhub import control_client
from linkhub.cli.common import hub_socket, hub_went_away, quote
from linkhub_protocol import escape_hidden

# The hub closed the control connection or stopped answering mid-request (it died,
# or was stopped): control_client turns RemoteDisconnected, a reset or the 30 s
# timeout into HubWentAway, with a general message; the commands that change
# something say here what to check for their own change.
_HUB_WENT_AWAY = (control_client.HubWentAway, http.client.HTTPException, ConnectionError, TimeoutError)


def link_decision(args: argparse.Namespace) -> int:
    socket_path = hub_socket(args)
    try:
        if args.link_command == "approve":
            result = control_client.call(
                socket_path, "POST", "/v1/link/approve", {"code": args.code, "account": args.account}
            )
            if "client_id" in result:
                print(escape_hidden(f"approved: the app {result['name']} is linked to {result['account']}"))
            else:
                print(
                    escape_hidden(
                        f"approved: {result['name']} ({result['model']}) is linked to {result['account']} "
                        f"as {result['device_id']}"
                    )
                )
        else:
            result = control_client.call(socket_path, "POST", "/v1/link/deny", {"code": args.code})
            told = "the app is told at its next poll" if "client_id" in result else "the device was told"
            print(f"denied: {told}")
    except _HUB_WENT_AWAY:
        if args.link_command == "approve":
            # A broker login left by an approval cut short is removed by the hub
            # itself (LinkService.reconcile_identities); the code stays usable.
            return hub_went_away(
                f"approving {args.code}",
                "`linkhub devices` lists the device if it was linked; if not, approve the code again "
                "(it works until it expires).",
            )
        return hub_went_away(f"denying {args.code}", "`linkhub activity` shows whether it was denied.")
    return 0


def devices_command(args: argparse.Namespace) -> int:
    if args.devices_command == "unlink":
        return _unlink(args)
    devices = control_client.call(hub_socket(args), "GET", "/v1/devices")["devices"]
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
    socket_path = hub_socket(args)
    try:
        device = control_client.call(socket_path, "DELETE", f"/v1/devices/{quote(args.device_id)}")
    except _HUB_WENT_AWAY:
        return hub_went_away(
            f"unlinking {args.device_id}",
            f"`linkhub devices unlink {args.device_id}` again is safe (it says if it was already done).",
        )
    owner = f" from {device['account']}" if device.get("account") else ""
    print(
        f"unlinked: {device['name']} ({device['model']}) {device['device_id']}{owner}; "
        "it was disconnected and its broker credentials are deleted (its settings are kept)"
    )
    return 0
