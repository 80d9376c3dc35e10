"""`linkhub apps`: the apps registered to link over HTTP (the OAuth device flow)."""

from __future__ import annotations

import argparse

from linkhub import control_client
from linkhub.cli.common import hub_socket, print_table, quote


def apps_command(args: argparse.Namespace) -> int:
    socket = hub_socket(args)
    match args.apps_command:
        case "add":
            body = {"client_id": args.client_id, "name": args.name, "scopes": args.scopes.split()}
            app = control_client.call(socket, "POST", "/v1/apps", body)
            print(f"Registered {app['name']} ({app['client_id']}): it may ask for {' '.join(app['scopes'])}.")
        case "list":
            apps = control_client.call(socket, "GET", "/v1/apps")["apps"]
            if not apps:
                print("No apps are registered.")
            rows = [(app["client_id"], app["name"], " ".join(app["scopes"])) for app in apps]
            print_table([("CLIENT ID", "NAME", "SCOPES"), *rows] if rows else [])
        case "remove":
            control_client.call(socket, "DELETE", f"/v1/apps/{quote(args.client_id)}")
            print(f"Removed {args.client_id}: apps linked with it stay linked until unlinked.")
    return 0
