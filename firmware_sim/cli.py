"""`linkhub-device`: link a simulated device to a hub, then run it.

    linkhub-device link --name NAME --model MODEL --state FILE
                        [--hub mqtt[s]://HOST:PORT | --hub-name NAME]
                        [--discover-timeout S] [--mdns-interface IP]...
                        [--mqtt 5|3.1.1] [--address ADDR] [--timeout S]
                        [--retry-interval S] [--tls --cafile FILE] [--json]
    linkhub-device run --state FILE [--mqtt 5|3.1.1] [--tls | --no-tls] [--cafile FILE] [--json]
    linkhub-device set --state FILE KEY=VALUE [KEY=VALUE ...] [--mqtt 5|3.1.1]
                       [--tls | --no-tls] [--cafile FILE] [--json]
    linkhub-device fleet --count N --state-dir DIR [--hub mqtt://HOST:PORT | --hub-name NAME]
                         [--auto-approve ACCOUNT [--data-dir DIR] [--linkhub-command CMD]]
                         [--duration S] [--link-workers N] [--workers N] [--link-timeout S]
                         [--mqtt 5|3.1.1] [--json]

Without `--hub`, `link` looks for hubs on the local network over mDNS
(`_linkhub._tcp.local.`, for up to --discover-timeout seconds, default 5, from
every home-network 10/8, 172.16/12 or 192.168/16 address unless
--mdns-interface says where) and reports the one it uses as a `hub` event
(name, host, port; with `others` and a `hint` when several answered). No
hub: the error event `no_hub_found`.

TLS: a hub run with --mqtt-tls-port sends its TLS port and its CA certificate
with the credentials, and `run` and `set` then connect with TLS, checking the
broker's certificate against that CA (host name included). `--no-tls` connects
without; `--cafile FILE` trusts that CA instead of the saved one. `link --cafile
FILE` (the hub's CA, from http://HUB:8080/ca.pem) links over TLS too: `--hub`
then names the TLS port (mqtts://HOST:PORT, as `linkhub run` prints it, or
mqtt://HOST:PORT), and without `--hub` the port comes from mDNS.

`set` is a change made on the device itself (a button): VALUE is JSON if it
parses as JSON (7, true, null, {"a": 1}), a string otherwise; null deletes
the key. A running `run` for the same state file sends it; without one, `set`
connects as the device for a moment.

Exit status 0 only once linked (link), after a clean stop (run) or once the
hub accepted the change (set); 1 when the procedure failed or the hub refused
(the reason was reported as an error event); 2 for bad usage; 3 when the
broker refused the device's credentials because the hub unlinked it (run, set:
the `unlinked` event; the credentials are forgotten, so `link` links it
again); 130 when interrupted during link or set.

`fleet` runs N devices from one process (firmware_sim/fleet.py), each with its
own state file in --state-dir (device-0001.json, ...): it links those that hold
no credentials (--auto-approve ACCOUNT approves each code with `linkhub link
approve`), reconnects the others, and keeps all of them online, with a progress
bar while linking and a summary line (linked, online, errors) on stderr. Exit
status 0 when all were linked and online and the stop was clean, 1 when any
device failed, 130 when interrupted while linking.
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from firmware_sim.display import HumanPrinter, JsonPrinter
from firmware_sim.events import Event, EventSink, error, from_mqtt_error
from firmware_sim.link import DEFAULT_RETRY_INTERVAL_S, link
from firmware_sim.mqtt_client import TlsUnavailable
from firmware_sim.profiles import DEFAULT_READING_INTERVAL_S, PROFILES
from firmware_sim.run import press, run
from firmware_sim.transport import TlsChoice, read_ca_file
from linkhub_protocol import DeviceInfo, ProtocolError, values

DEFAULT_MQTT_PORT = 1884  # the LinkHub-managed broker's default
DEFAULT_MQTT_TLS_PORT = 8883  # MQTT over TLS (IANA); the hub's TLS listener is off unless given a port
# Also firmware_sim.discovery's default; repeated so that --help does not import zeroconf.
DEFAULT_DISCOVER_TIMEOUT_S = 5.0


class HubUrl(NamedTuple):
    """Where `--hub` says the hub's broker is; `tls` for an mqtts:// URL."""

    host: str
    port: int
    tls: bool = False


def parse_hub_url(text: str) -> HubUrl:
    """`mqtt://HOST[:PORT]` or `mqtts://HOST[:PORT]` (TLS, as `linkhub run` prints its TLS
    listener); ValueError with a readable message otherwise."""
    hint = "expected mqtt://HOST:PORT (or mqtts:// for TLS), e.g. mqtt://linkhub.local:1884"
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad hub URL {text!r}: {exc}; {hint}") from exc
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"bad hub URL {text!r}: the scheme must be mqtt:// or mqtts://; {hint}")
    if not parts.hostname:
        raise ValueError(f"bad hub URL {text!r}: no host; {hint}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"bad hub URL {text!r}: credentials do not belong in it; {hint}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"bad hub URL {text!r}: unexpected path or query; {hint}")
    if port == 0:
        raise ValueError(f"bad hub URL {text!r}: port 0; {hint}")
    tls = parts.scheme == "mqtts"
    default_port = DEFAULT_MQTT_TLS_PORT if tls else DEFAULT_MQTT_PORT
    return HubUrl(parts.hostname, port if port is not None else default_port, tls)


def _hub_arg(text: str) -> HubUrl:
    try:
        return parse_hub_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _ipv4_arg(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IPv4 address: {text!r} (mDNS runs over IPv4)") from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


def _assignment(text: str) -> tuple[str, Any]:
    try:
        return values.parse_assignment(text)
    except ValueError as exc:  # AssignmentError or ValueTooDeep, each with its message
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linkhub-device", description="A simulated LinkHub device.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--state", required=True, metavar="FILE", help="the device's state file")
        p.add_argument(
            "--mqtt",
            choices=("5", "3.1.1"),
            default="5",
            help="MQTT protocol version (default 5)",
        )
        p.add_argument("--json", action="store_true", help="one JSON object per line per event")

    def tls_options(p: argparse.ArgumentParser, *, linking: bool) -> None:
        if linking:
            p.add_argument(
                "--tls",
                action="store_true",
                help="link over TLS (needs --cafile; --hub then names the broker's TLS port)",
            )
            p.add_argument(
                "--cafile",
                metavar="FILE",
                help="the hub's CA certificate (its http://HUB:8080/ca.pem); implies --tls",
            )
            return
        p.add_argument(
            "--tls",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="connect with TLS, or without (default: with TLS when the hub sent a TLS port and CA)",
        )
        p.add_argument(
            "--cafile", metavar="FILE", help="check the broker with this CA, not the one saved at linking"
        )

    def profile_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--profile",
            choices=sorted(PROFILES),
            help="what the device is: it describes itself, reports its state and obeys commands "
            "(lamp: a dimmable light; sensor: temperature and humidity; plug: a switch and its power use; "
            "thermostat: target, mode, boost); kept in the state file",
        )

    p_link = sub.add_parser("link", help="link this device to a hub")
    p_link.add_argument("--name", required=True, help="name shown to whoever approves")
    p_link.add_argument("--model", required=True, help="model shown to whoever approves")
    which_hub = p_link.add_mutually_exclusive_group()
    which_hub.add_argument(
        "--hub",
        type=_hub_arg,
        metavar="mqtt[s]://HOST:PORT",
        help="the hub's broker, mqtts:// for its TLS listener (with --cafile) "
        "(default: look for a hub on the local network over mDNS)",
    )
    which_hub.add_argument(
        "--hub-name", metavar="NAME", help="of the hubs found over mDNS, use the one with this name"
    )
    p_link.add_argument(
        "--discover-timeout",
        type=_positive_float,
        default=DEFAULT_DISCOVER_TIMEOUT_S,
        metavar="S",
        help=f"look for hubs for at most S seconds (default {DEFAULT_DISCOVER_TIMEOUT_S:g})",
    )
    p_link.add_argument(
        "--mdns-interface",
        action="append",
        type=_ipv4_arg,
        metavar="IP",
        help="look for hubs from this IPv4 address (repeatable; default: every home-network "
        "10/8, 172.16/12 or 192.168/16 address)",
    )
    p_link.add_argument("--address", help="where the device is, e.g. its IP address")
    p_link.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="S",
        help="give up after S seconds (default: the code's expiry + 30 s, 60 s without answer)",
    )
    p_link.add_argument(
        "--retry-interval",
        type=_positive_float,
        default=DEFAULT_RETRY_INTERVAL_S,
        metavar="S",
        help=f"resend the request every S seconds until the hub sets an interval "
        f"(default {DEFAULT_RETRY_INTERVAL_S:g})",
    )
    profile_option(p_link)
    tls_options(p_link, linking=True)
    common(p_link)

    p_run = sub.add_parser("run", help="run a linked device until SIGINT/SIGTERM")
    profile_option(p_run)
    p_run.add_argument(
        "--reading-interval",
        type=_positive_float,
        default=DEFAULT_READING_INTERVAL_S,
        metavar="S",
        help="a sensor, plug or thermostat takes a reading every S seconds "
        f"(default {DEFAULT_READING_INTERVAL_S:g})",
    )
    tls_options(p_run, linking=False)
    common(p_run)

    p_set = sub.add_parser("set", help="change settings on the device itself, like pressing a button")
    p_set.add_argument(
        "assignments",
        nargs="+",
        type=_assignment,
        metavar="KEY=VALUE",
        help="VALUE is JSON if it parses (7, true, null, {...}), else a string; null deletes",
    )
    tls_options(p_set, linking=False)
    common(p_set)

    p_fleet = sub.add_parser("fleet", help="run many simulated devices from one process")
    p_fleet.add_argument("--count", type=_positive_int, required=True, metavar="N", help="how many devices")
    p_fleet.add_argument(
        "--state-dir", required=True, metavar="DIR", help="one state file per device (device-0001.json, ...)"
    )
    fleet_hub = p_fleet.add_mutually_exclusive_group()
    fleet_hub.add_argument(
        "--hub", type=_hub_arg, metavar="mqtt://HOST:PORT", help="the hub's broker (default: mDNS)"
    )
    fleet_hub.add_argument("--hub-name", metavar="NAME", help="of the hubs found over mDNS, use this one")
    p_fleet.add_argument(
        "--discover-timeout", type=_positive_float, default=DEFAULT_DISCOVER_TIMEOUT_S, metavar="S"
    )
    p_fleet.add_argument("--mdns-interface", action="append", type=_ipv4_arg, metavar="IP")
    p_fleet.add_argument(
        "--auto-approve",
        metavar="ACCOUNT",
        help="approve each code for ACCOUNT with `linkhub link approve` (default: wait for a person)",
    )
    p_fleet.add_argument("--data-dir", metavar="DIR", help="passed to `linkhub link approve` (the hub's)")
    p_fleet.add_argument(
        "--linkhub-command", metavar="CMD", help="the linkhub command (default: the one beside this Python)"
    )
    p_fleet.add_argument(
        "--duration", type=_positive_float, metavar="S", help="stop S seconds after all are online"
    )
    p_fleet.add_argument("--link-workers", type=_positive_int, default=8, metavar="N", help="links at once")
    p_fleet.add_argument("--workers", type=_positive_int, default=4, metavar="N", help="session threads")
    p_fleet.add_argument("--link-timeout", type=_positive_float, metavar="S", help="per device")
    p_fleet.add_argument("--name-prefix", default="Fleet Device", help="names are PREFIX 0001, ...")
    p_fleet.add_argument("--model", default="SIM-FLEET", help="model shown to whoever approves")
    p_fleet.add_argument("--summary-interval", type=_positive_float, default=5.0, metavar="S")
    profile_option(p_fleet)
    p_fleet.add_argument("--mqtt", choices=("5", "3.1.1"), default="5", help="MQTT protocol version")
    p_fleet.add_argument("--json", action="store_true", help="one JSON object per line per event")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text!r}")
    return value


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set `stop` (only possible on the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def _interrupt_on_sigterm() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so the connection is closed on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _find_hub(
    args: argparse.Namespace, printer: EventSink, human: HumanPrinter | None
) -> tuple[str, int] | None:
    """Discover the hub over mDNS and say which one is used; None (after an
    error event) when there is none to use."""
    from firmware_sim import discovery  # only here: --hub never touches zeroconf

    timeout_s = args.discover_timeout
    if human is not None:
        human.say(f"Looking for a LinkHub on the local network (up to {timeout_s:g} s)...")
    wanted = args.hub_name
    try:
        hubs = discovery.discover(
            timeout_s,
            args.mdns_interface,
            until=(lambda hubs: any(discovery.matches(hub, wanted) for hub in hubs)) if wanted else None,
        )
    except discovery.NoNetwork:
        printer(
            error(
                "no_hub_found",
                "no interface with a home-network (RFC 1918) address to look for a hub from; "
                "pass --hub mqtt://HOST:PORT, or --mdns-interface IP to choose where to look",
            )
        )
        return None
    except OSError as exc:
        where = ", ".join(args.mdns_interface or ["the home-network interfaces"])
        printer(
            error("discovery_failed", f"cannot look for a hub on {where}: {exc}; pass --hub mqtt://HOST:PORT")
        )
        return None
    chosen, event = discovery.choose_hub(hubs, wanted, timeout_s)
    if human is not None and chosen is not None:
        human.say(_hub_text(event))
    else:
        printer(event)
    if chosen is None:
        return None
    if getattr(args, "tls", False):
        if chosen.tls_port is None:
            printer(
                error(
                    "tls_unavailable",
                    f"the hub {chosen.name!r} does not say it listens with TLS (no mqtt_tls_port over "
                    "mDNS): link without --tls, or give its TLS port with --hub mqtt://HOST:PORT",
                )
            )
            return None
        return chosen.host, chosen.tls_port
    return chosen.host, chosen.port


def _hub_text(event: Event) -> str:
    text = f"Found the hub {event['name']!r} at {event['host']}:{event['port']}."
    for other in event.get("others", []):
        text += f"\nAlso found {other['name']!r} at {other['host']}:{other['port']}."
    if "hint" in event:
        text += (
            f"\nUsing {event['name']!r}, the first by name; "
            "to use another: --hub-name NAME or --hub mqtt://HOST:PORT."
        )
    return text


def _fleet(args: argparse.Namespace, printer: EventSink, human: HumanPrinter | None) -> int:
    from firmware_sim import fleet  # only here: the other commands need none of it

    status = fleet.StatusLine(interval_s=args.summary_interval)
    sink: EventSink = printer if human is None else fleet.human_sink(status)
    if args.hub is None:
        found = _find_hub(args, sink, None)
        if found is None:
            return 1
        host, port = found
    elif args.hub.tls:
        printer(error("tls_unavailable", "fleet speaks plain MQTT only: give its hub as mqtt://HOST:PORT"))
        return 2
    else:
        host, port = args.hub.host, args.hub.port
    approver = None
    if args.auto_approve is not None:
        command = args.linkhub_command.split() if args.linkhub_command else fleet.default_linkhub_command()
        approver = fleet.shell_approver(args.auto_approve, args.data_dir, command)
    options = fleet.FleetOptions(
        host=host,
        port=port,
        count=args.count,
        state_dir=Path(args.state_dir),
        name_prefix=args.name_prefix,
        model=args.model,
        mqtt5=args.mqtt == "5",
        link_workers=args.link_workers,
        workers=args.workers,
        link_timeout_s=args.link_timeout,
        profile=args.profile,
    )
    stop = threading.Event()
    with _stop_on_signals(stop):
        return fleet.run_fleet(
            options,
            on_event=sink,
            stop=stop,
            approver=approver,
            duration_s=args.duration,
            status=status,
            summary_interval_s=args.summary_interval,
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else 2
    printer: EventSink
    human: HumanPrinter | None = None
    if args.json:
        printer = JsonPrinter()
    else:
        human = HumanPrinter()
        printer = human
    mqtt5 = args.mqtt == "5"

    if args.command == "fleet":
        return _fleet(args, printer, human)

    ca_pem = None
    if args.cafile is not None:
        try:
            ca_pem = read_ca_file(args.cafile)
        except TlsUnavailable as exc:
            printer(from_mqtt_error(exc))
            return 1
    tls = TlsChoice(use=args.tls, ca_pem=ca_pem)

    if args.command == "link":
        try:
            device = DeviceInfo(name=args.name, model=args.model, address=args.address)
        except ProtocolError as exc:
            parser.print_usage(sys.stderr)
            print(f"linkhub-device: error: {exc.description}", file=sys.stderr)
            return 2
        hub_tls = args.hub is not None and args.hub.tls
        if (args.tls or hub_tls) and ca_pem is None:
            parser.print_usage(sys.stderr)
            asked = "--hub mqtts://..." if hub_tls else "--tls"
            print(
                f"linkhub-device: error: {asked} needs --cafile FILE, the hub's CA certificate "
                "(from its web page: http://HUB:8080/ca.pem)",
                file=sys.stderr,
            )
            return 2
        args.tls = ca_pem is not None  # --cafile alone means TLS too
        if args.hub is None:
            found = _find_hub(args, printer, human)
            if found is None:
                return 1
            host, port = found
        else:
            host, port = args.hub.host, args.hub.port
        if human is not None:
            over = " over TLS" if ca_pem is not None else ""
            human.say(f"Asking the hub at {host}:{port}{over} to link {args.name!r}...")
        try:
            with _interrupt_on_sigterm():
                return link(
                    host,
                    port,
                    device,
                    args.state,
                    mqtt5=mqtt5,
                    timeout_s=args.timeout,
                    retry_interval_s=args.retry_interval,
                    on_event=printer,
                    ca_pem=ca_pem,
                    profile=args.profile,
                )
        except KeyboardInterrupt:
            if human is not None:
                human.say("Interrupted; run the same command again to resume linking.")
            return 130

    if args.command == "set":
        changes: dict[str, Any] = dict(args.assignments)
        try:
            with _interrupt_on_sigterm():
                return press(args.state, changes, on_event=printer, mqtt5=mqtt5, tls=tls)
        except KeyboardInterrupt:
            if human is not None:
                human.say("Interrupted; the change was not sent.")
            return 130

    stop = threading.Event()
    with _stop_on_signals(stop):
        return run(
            args.state,
            on_event=printer,
            stop=stop,
            mqtt5=mqtt5,
            tls=tls,
            profile=args.profile,
            reading_interval_s=args.reading_interval,
        )
