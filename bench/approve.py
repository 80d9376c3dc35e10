"""From approval to the device holding working credentials.

    .venv/bin/python bench/approve.py [--devices 200] [--plot approve.png]

For each of N devices, one at a time: the device asks for a code (firmware_sim's
`link`, as `linkhub-device link` does); the bench approves it through the hub's
control socket (what `linkhub link approve` sends); the time runs from that call
until the device is connected with its new identity and the broker has
acknowledged its "online" status (the `linked` event). That includes the hub's
dynamic-security calls (a role, its ACLs and a client per device), its database
write, the reply, the device saving its state file, and its first connection.

Baseline, on the same broker in the same run: one bare dynamic-security
createClient round trip (publish the command, wait for its answer), taken right
after each approval so that both see a dynamic-security configuration of the
same size (mosquitto rewrites the whole file on every change).
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import threading
import time
from pathlib import Path

import _common as common

from firmware_sim.fleet import Approver, Fleet, FleetOptions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--plot", metavar="FILE", help="write a PNG of both latency distributions")
    parser.add_argument("--limit", type=float, default=600.0, help="seconds at most (600)")
    args = parser.parse_args()
    common.print_machine()
    hub_times: list[float] = []
    call_times: list[float] = []  # of which: the approve call itself, until the hub answered
    bare_times: list[float] = []
    with common.running_hub() as hub, tempfile.TemporaryDirectory(prefix="fleet-") as states:
        hub.add_account("alice")
        dynsec = common.DynSec(hub)
        approve = common.control_approver(hub, "alice")
        approved_at: dict[str, float] = {}
        lock = threading.Lock()

        def timed_approver(user_code: str) -> None:
            began = time.monotonic()
            with lock:
                approved_at[user_code] = began
            approve(user_code)
            call_times.append(time.monotonic() - began)

        codes: dict[str, str] = {}  # device -> its code

        def on_event(event: dict[str, object]) -> None:
            now = time.monotonic()
            device = str(event.get("device"))
            if event.get("event") == "code":
                codes[device] = str(event["user_code"])
            elif event.get("event") == "linked":
                with lock:
                    hub_times.append(now - approved_at[codes[device]])
                # The baseline right after, with the same configuration size.
                began = time.monotonic()
                dynsec.call(
                    {
                        "command": "createClient",
                        "username": f"bench-{secrets.token_hex(6)}",
                        "password": secrets.token_urlsafe(24),
                    }
                )
                bare_times.append(time.monotonic() - began)

        approver: Approver = timed_approver
        fleet = Fleet(
            FleetOptions(
                host=common.HOST,
                port=hub.mqtt_port,
                count=args.devices,
                state_dir=Path(states),
                link_workers=1,  # one at a time: latency, not throughput
                link_timeout_s=60,
            ),
            on_event=on_event,
            approver=approver,
        )
        stop = threading.Event()
        timer = threading.Timer(args.limit, stop.set)
        timer.daemon = True
        timer.start()
        fleet.link_all(stop)
        timer.cancel()
        dynsec.close()
        summary = fleet.summary()
        print(f"linked {summary.linked} of {args.devices} devices, one at a time; errors={summary.errors}")
    print(f"bare dynamic-security createClient round trip: {common.describe_ms(bare_times)}")
    print(f"hub, approval -> device connected with its credentials: {common.describe_ms(hub_times)}")
    print(f"  of which the approve call, until the hub answered: {common.describe_ms(call_times)}")
    if args.plot:
        common.plot(
            args.plot,
            "approval to working credentials",
            {
                "baseline: bare createClient round trip": bare_times,
                "hub: approve -> device online": hub_times,
            },
        )
    p50_hub, p99_hub = common.percentile(hub_times, 50), common.percentile(hub_times, 99)
    p50_bare, p99_bare = common.percentile(bare_times, 50), common.percentile(bare_times, 99)
    print(
        f"RESULT approve: p50 {p50_hub * 1000:.1f} ms = {p50_hub / p50_bare:.1f}x baseline "
        f"{p50_bare * 1000:.1f} ms; p99 {p99_hub * 1000:.1f} ms = {p99_hub / p99_bare:.1f}x baseline "
        f"{p99_bare * 1000:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
