"""`linkhub account add|list|remove|two-factor-off|password`."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hub.config.model import control_socket, default_database_url
from linkhub import control_client

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from hub.services.local_accounts import AccountService

from linkhub.cli.common import data_dir_of, hub_socket, print_table, quote


def account_command(args: argparse.Namespace) -> int:
    match args.account_command:
        case "list":
            return _account_list(args)
        case "remove":
            return _account_remove(args)
        case "two-factor-off":
            return _account_two_factor_off(args)
        case "password":
            return _account_password(args)
    return _account_add(args)


@contextlib.contextmanager
def _built_in_accounts(args: argparse.Namespace) -> Iterator[tuple[Engine, AccountService]]:
    """The built-in account service on the data directory's database, for when
    no hub runs (list, add, password); the engine is disposed of afterwards."""
    from hub.services.local_accounts import AccountService  # only here: it pulls in argon2 and SQLAlchemy
    from hub.store.engine import make_engine

    data_dir = data_dir_of(args)
    data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(args.database_url or default_database_url(data_dir))
    try:
        yield engine, AccountService(engine, time.time)
    finally:
        engine.dispose()


def _account_list(args: argparse.Namespace) -> int:
    """Like `account add`: through the running hub if there is one, else the built-in service."""
    data_dir = data_dir_of(args)
    socket_path = control_socket(data_dir)
    if socket_path.exists():
        accounts = control_client.call(socket_path, "GET", "/v1/accounts")["accounts"]
    else:
        with _built_in_accounts(args) as (_engine, service):
            # No hub: no device counts to give (devices are the hub's to know).
            accounts = [dataclasses.asdict(a) for a in service.list_accounts()]
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
    print_table(table)
    return 0


def _account_remove(args: argparse.Namespace) -> int:
    """Only through the running hub: it knows which devices are still linked to the account."""
    removed = control_client.call(hub_socket(args), "DELETE", f"/v1/accounts/{quote(args.name)}")
    print(f"account {removed['name']!r} removed: it cannot sign in any more; its history is kept")
    return 0


def _account_two_factor_off(args: argparse.Namespace) -> int:
    """Only through the running hub, like `remove`: the event goes in its activity log."""
    account = control_client.call(hub_socket(args), "POST", "/v1/two-factor/off", {"account": args.name})
    print(
        f"two-factor sign-in is off for {account['name']!r}: the password alone signs in now; "
        "they can turn it on again on their account page > Two-factor sign-in"
    )
    return 0


def _account_password(args: argparse.Namespace) -> int:
    """Through the running hub if there is one (its pages end the sessions at
    once), else straight into the built-in account service, like `add`."""
    password = sys.stdin.readline().rstrip("\r\n")
    data_dir = data_dir_of(args)
    socket_path = control_socket(data_dir)
    if socket_path.exists():
        reset = control_client.call(
            socket_path, "POST", "/v1/accounts/password", {"account": args.name, "password": password}
        )
        name = reset["name"]
    else:
        from hub.services.activity import ActivityLog
        from hub.services.household import Household, Origin

        with _built_in_accounts(args) as (engine, service):
            account = service.find(args.name)
            if account is None:
                print(f"linkhub: no account named {args.name!r}", file=sys.stderr)
                return 1
            # No hub runs, so no device is linked to check: an empty device list.
            household = Household(service, ActivityLog(engine, time.time), _NoDevices())
            name = household.reset_password(account.id, password, origin=Origin.CLI).name
    print(f"new password set for {name!r}: signed out everywhere; they choose their own at the next sign-in")
    return 0


class _NoDevices:
    """The device list when no hub runs: this command touches no device."""

    def list_devices(self, account_id: int | None = None) -> list[Any]:
        return []


def _account_add(args: argparse.Namespace) -> int:
    """Through the running hub if there is one (so a separate account service is
    used when the hub uses one); otherwise straight into the built-in one."""
    password = sys.stdin.readline().rstrip("\r\n")
    data_dir = data_dir_of(args)
    socket_path = control_socket(data_dir)
    if socket_path.exists():
        created = control_client.call(
            socket_path, "POST", "/v1/accounts", {"name": args.name, "password": password}
        )
        name, is_owner = created["name"], created["is_owner"]
    else:
        from hub.services.activity import ActivityLog
        from hub.services.household import Origin, record_created

        with _built_in_accounts(args) as (engine, service):
            account = service.create(args.name, password)
            owner = next((a.id for a in service.list_accounts() if a.is_owner), None)
            # The same trail as through the running hub (hub.services.household).
            record_created(ActivityLog(engine, time.time), account, owner_id=owner, origin=Origin.CLI)
        name, is_owner = account.name, account.is_owner
    print(f"account {name!r} created ({'owner' if is_owner else 'member'})")
    return 0
