"""Wrong code entries on /link, limited per account and per client address
(RFC 8628 §5.1): the counting on its own, then the page against a real hub on a
real mosquitto, then the figures docs/security.md states, recomputed here from
the code so they cannot drift."""

from __future__ import annotations

import dataclasses
import html
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import FakeClock, RunningBroker, hub_pages
from conftest import csrf_token as token
from device_doubles import BootstrapDevice
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from hub.config.model import CODE_LIFETIME_RANGE_S, DEFAULT_CODE_LIFETIME_S
from hub.core import codes
from hub.core.rate_limits import LimitsPolicy, Rate, address_key, parse_rate
from hub.daemon import Hub
from hub.services.activity import ActivityKind
from hub.services.links import DECISION_MESSAGES, CodeStatus
from linkhub_protocol import DeviceInfo
from web import WebConfig
from web.code_limits import Checked, Refused, WrongCodeLimits, counts
from web.control import create_control_app

PASSWORD = "correct horse battery"
LAMP = DeviceInfo(name="Kitchen Lamp", model="LH-Lamp 2", address="192.168.1.42")
HOME = "192.168.1.7"
NEIGHBOUR = "192.168.1.99"
SMALL = LimitsPolicy(
    code_failures_per_account="3 per 15 minutes", code_failures_per_address="4 per 15 minutes"
)
_MESSAGE = re.compile(r'data-status="([^"]+)"[^>]*>(.*?)</p>', re.S)


# --- the counting on its own --------------------------------------------------------


@dataclass(frozen=True)
class Found:
    status: str


def test_only_well_formed_codes_that_are_not_waiting_count() -> None:
    assert {s for s in CodeStatus if counts(s)} == {
        CodeStatus.UNKNOWN,
        CodeStatus.EXPIRED,
        CodeStatus.DENIED,
        CodeStatus.USED,
        CodeStatus.USED_BY_OTHER_ACCOUNT,
    }


def test_over_a_limit_the_code_is_not_even_looked_up() -> None:
    limits = WrongCodeLimits(LimitsPolicy(code_failures_per_account="2 per hour"))
    looked_up: list[str] = []

    def look_up(status: str) -> Callable[[], Found]:
        return lambda: looked_up.append(status) or Found(status)

    first = limits.enter(1, HOME, look_up(CodeStatus.UNKNOWN))
    assert first == Checked(Found(CodeStatus.UNKNOWN), wrong=True, limit_reached=False)
    assert limits.enter(1, HOME, look_up(CodeStatus.MALFORMED)) == Checked(
        Found(CodeStatus.MALFORMED), wrong=False, limit_reached=False
    )
    assert limits.enter(1, HOME, look_up(CodeStatus.EXPIRED)).limit_reached  # type: ignore[union-attr]
    refused = limits.enter(1, HOME, look_up(CodeStatus.PENDING))
    assert isinstance(refused, Refused) and 3500 < refused.retry_after_s <= 3600
    assert looked_up == [CodeStatus.UNKNOWN, CodeStatus.MALFORMED, CodeStatus.EXPIRED]
    # Another account is not held back by this one's guesses.
    assert isinstance(limits.enter(2, NEIGHBOUR, look_up(CodeStatus.PENDING)), Checked)


def test_a_burst_of_parallel_guesses_gets_no_more_than_the_limit() -> None:
    limits = WrongCodeLimits(LimitsPolicy(code_failures_per_account="5 per hour"))
    lookups: list[int] = []
    start = threading.Barrier(40)

    def slow_unknown() -> Found:
        lookups.append(1)
        time.sleep(0.002)  # a database read: other threads get to run meanwhile
        return Found(CodeStatus.UNKNOWN)

    def guess() -> None:
        start.wait()
        limits.enter(1, HOME, slow_unknown)

    threads = [threading.Thread(target=guess) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(lookups) == 5


@pytest.mark.parametrize(
    ("remote", "key"),
    [
        ("192.168.1.7", "192.168.1.7"),
        ("::ffff:192.168.1.7", "192.168.1.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb:cccc:dddd:eeee", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        (None, "unknown"),
        ("not an address", "not an address"),
    ],
)
def test_an_ipv6_client_is_counted_by_its_64(remote: str | None, key: str) -> None:
    assert address_key(remote) == key


# --- the page, against a real hub ---------------------------------------------------


@pytest.fixture
def devices(broker: RunningBroker) -> Iterator[Callable[[], BootstrapDevice]]:
    made: list[BootstrapDevice] = []

    def make() -> BootstrapDevice:
        device = BootstrapDevice(broker.port, LAMP)
        made.append(device)
        return device

    yield make
    for device in made:
        device.close()


def web_app(hub: Hub, policy: LimitsPolicy = SMALL, limits_clock: FakeClock | None = None) -> Flask:
    config = WebConfig(secret_key="test", testing=True, limits=policy)
    if limits_clock is not None:
        config = dataclasses.replace(config, limits_clock=limits_clock)
    return hub_pages(hub, config)


def client_for(app: Flask, hub: Hub, name: str, address: str = HOME) -> FlaskClient:
    if hub.accounts.find(name) is None:
        hub.accounts.create(name, PASSWORD)
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    form = client.get("/login")
    signed_in = client.post("/login", data={"csrf_token": token(form), "name": name, "password": PASSWORD})
    assert signed_in.status_code == 302, signed_in.get_data(as_text=True)
    return client


def enter(client: FlaskClient, code: str, *, action: str | None = None) -> TestResponse:
    form = client.get("/link")
    data = {"csrf_token": token(form), "code": code}
    if action is None:
        return client.post("/link", data=data)
    return client.post("/link/decide", data=data | {"action": action})


def message(response: TestResponse) -> tuple[str, str]:
    found = _MESSAGE.search(response.get_data(as_text=True))
    assert found, response.get_data(as_text=True)
    return found.group(1), found.group(2).strip()


def unknown_code(hub: Hub, n: int) -> str:
    """A well-formed code no device is waiting with (checked, not assumed)."""
    code = codes.display(codes.ALPHABET[n % 20] * 4 + codes.ALPHABET[(n * 7 + 3) % 20] * 4)
    assert hub.links.lookup_code(code).status is CodeStatus.UNKNOWN
    return code


def test_wrong_codes_are_limited_per_account_and_even_a_good_one_waits(
    hub: Hub, devices: Callable[[], BootstrapDevice]
) -> None:
    pending = devices().request()
    alice = client_for(web_app(hub), hub, "alice")
    warnings = []
    for n in range(3):
        wrong = enter(alice, unknown_code(hub, n))
        assert wrong.status_code == 404 and message(wrong)[0] == CodeStatus.UNKNOWN
        warnings.append(html.unescape(message(wrong)[1]).removeprefix(DECISION_MESSAGES[CodeStatus.UNKNOWN]))
    # Warned before the limit holds, not only after (the limit here is 3).
    assert warnings == [
        " After 2 more wrong codes, codes are refused for a while, even the right one.",
        " After 1 more wrong code, codes are refused for a while, even the right one.",
        " That was the last try: codes are refused for a while now, even the right one.",
    ]

    refused = enter(alice, pending.user_code)
    assert refused.status_code == 429
    status, text = message(refused)
    assert status == "too_many_wrong_codes"
    assert text == "Too many wrong codes. Try again in about 15 minutes."
    assert 890 <= int(refused.headers["Retry-After"]) <= 900
    # The code was not looked up: no confirm step, though the device is listed as waiting.
    assert 'value="approve"' not in refused.get_data(as_text=True)
    # The decision route is held back too: no way round the form.
    assert enter(alice, pending.user_code, action="approve").status_code == 429
    assert hub.links.lookup_code(pending.user_code).status is CodeStatus.PENDING
    # Following a QR code only fills the form: nothing is looked up, nothing refused.
    assert alice.get(f"/link?code={pending.user_code}").status_code == 200

    kinds = [entry.kind for entry in hub.activity.recent(hub.accounts.find("alice").id)]
    assert kinds.count(ActivityKind.CODE_ENTRY_FAILED) == 3
    assert kinds.count(ActivityKind.CODE_ENTRY_THROTTLED) == 1  # once, not per refusal
    failed = [e for e in hub.activity.recent(hub.accounts.find("alice").id) if e.kind == "code_entry_failed"]
    assert {e.address for e in failed} == {HOME}
    assert sorted(e.detail for e in failed) == sorted(f"{unknown_code(hub, n)} (unknown)" for n in range(3))


def test_typos_do_not_count_but_every_wrong_code_does(
    hub: Hub, devices: Callable[[], BootstrapDevice]
) -> None:
    device = devices()
    pending = device.request()
    alice = client_for(web_app(hub), hub, "alice")
    for typo in ("BCDF-GHJ", "BCDA-GHJK", "hello", "B C D F G H J K L"):
        assert enter(alice, typo).status_code == 400
    denied = enter(alice, pending.user_code, action="deny")
    assert denied.status_code == 303  # a live code: not a wrong guess
    for status, http in ((CodeStatus.DENIED, 409), (CodeStatus.DENIED, 409), (CodeStatus.UNKNOWN, 404)):
        code = pending.user_code if status is CodeStatus.DENIED else unknown_code(hub, 1)
        answer = enter(alice, code, action="approve" if status is CodeStatus.DENIED else None)
        assert (answer.status_code, message(answer)[0]) == (http, status)
    assert enter(alice, unknown_code(hub, 2)).status_code == 429


def test_one_address_is_limited_across_accounts(hub: Hub) -> None:
    app = web_app(hub)
    alice = client_for(app, hub, "alice")
    bob = client_for(app, hub, "bob")
    for n in range(3):
        assert enter(alice, unknown_code(hub, n)).status_code == 404
    assert enter(bob, unknown_code(hub, 3)).status_code == 404  # the address's 4th
    # Bob's own second wrong code, but the address's fifth.
    assert enter(bob, unknown_code(hub, 4)).status_code == 429
    bob_elsewhere = client_for(app, hub, "bob", address=NEIGHBOUR)
    assert enter(bob_elsewhere, unknown_code(hub, 5)).status_code == 404
    alice_elsewhere = client_for(app, hub, "alice", address=NEIGHBOUR)
    assert enter(alice_elsewhere, unknown_code(hub, 6)).status_code == 429  # alice's own limit follows her


def test_the_limit_lifts_when_the_window_moves_on(hub: Hub) -> None:
    policy = LimitsPolicy(code_failures_per_account="2 per 2 seconds")
    limits_clock = FakeClock(start_s=1000.0)
    alice = client_for(web_app(hub, policy, limits_clock), hub, "alice")
    assert enter(alice, unknown_code(hub, 0)).status_code == 404
    limits_clock.advance(0.5)
    assert enter(alice, unknown_code(hub, 1)).status_code == 404
    refused = enter(alice, unknown_code(hub, 2))
    assert refused.status_code == 429 and message(refused)[1].endswith("Try again in 2 seconds.")
    assert refused.headers["Retry-After"] == "2"
    limits_clock.advance(1.4)  # the first wrong code is still in the window
    assert enter(alice, unknown_code(hub, 2)).status_code == 429
    limits_clock.advance(0.2)  # now it has left it
    assert enter(alice, unknown_code(hub, 2)).status_code == 404


def test_counts_belong_to_the_app_and_the_control_api_is_not_limited(
    hub: Hub, devices: Callable[[], BootstrapDevice]
) -> None:
    alice = client_for(web_app(hub), hub, "alice")
    for n in range(4):
        enter(alice, unknown_code(hub, n))
    assert enter(alice, unknown_code(hub, 0)).status_code == 429
    # A new app (a restarted hub) starts counting afresh.
    assert enter(client_for(web_app(hub), hub, "alice"), unknown_code(hub, 0)).status_code == 404

    control = create_control_app(
        links=hub.links, accounts=hub.accounts, settings=hub.settings, activity=hub.activity
    ).test_client()
    for n in range(10):
        answer = control.post("/v1/link/approve", json={"code": unknown_code(hub, n), "account": "alice"})
        assert answer.status_code == 404 and answer.get_json()["error"] == "unknown"
    pending = devices().request()
    approved = control.post("/v1/link/approve", json={"code": pending.user_code, "account": "alice"})
    assert approved.status_code == 200, approved.get_json()


# --- the figures in docs/security.md -----------------------------------------------

SECURITY_MD = Path(__file__).resolve().parent.parent / "docs" / "security.md"
YEAR_S = 365 * 24 * 3600


def guesses_within(limit: Rate | str, seconds: int) -> int:
    """Most entries a moving-window limit lets through in any `seconds`.

    A Throttle counts an entry while it is less than one window old, so any
    stretch of one window holds at most `amount` entries and a stretch of T
    seconds at most amount * ceil(T / window).
    """
    rate = limit if isinstance(limit, Rate) else parse_rate(limit)
    return rate.amount * math.ceil(seconds / rate.window_s)


def chance(guesses: int, live_codes: int, space: int) -> float:
    """1 - (1 - P/N)^G: at least one of G uniform guesses hits one of P live codes."""
    return -math.expm1(guesses * math.log1p(-live_codes / space))


def sci(x: float) -> str:
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa}e{int(exponent)} (1 in {one_in(x)})"


def one_in(x: float) -> str:
    n = 1 / x
    for size, word in ((1e9, "billion"), (1e6, "million"), (1e3, "thousand")):
        if n >= size:
            return f"{n / size:.2g} {word}" if n / size < 100 else f"{n / size:.0f} {word}"
    return f"{n:.0f}"


def figures() -> list[tuple[str, str]]:
    """The rows of the table in docs/security.md, computed from the code."""
    policy = LimitsPolicy()
    space = len(codes.ALPHABET) ** codes.CODE_LENGTH
    lifetime = DEFAULT_CODE_LIFETIME_S
    longest = CODE_LIFETIME_RANGE_S[1]
    per_account = guesses_within(policy.code_failures_per_account, lifetime)
    per_address = guesses_within(policy.code_failures_per_address, lifetime)
    pending = policy.max_pending_requests
    longest_guesses = guesses_within(policy.code_failures_per_account, longest)
    year_guesses = guesses_within(policy.code_failures_per_account, YEAR_S)
    return [
        ("code alphabet", f"{len(codes.ALPHABET)} letters, `{codes.ALPHABET}`"),
        ("code length", f"{codes.CODE_LENGTH} letters"),
        ("code space N", f"{len(codes.ALPHABET)}^{codes.CODE_LENGTH} = {space:,} ≈ 2^{math.log2(space):.1f}"),
        ("code lifetime T (default)", f"{lifetime} s"),
        ("live codes at once P (pending cap)", f"at most {pending}"),
        ("wrong codes per account", f"{policy.code_failures_per_account}: G = {per_account} per lifetime"),
        ("wrong codes per address", f"{policy.code_failures_per_address}: {per_address} per lifetime"),
        ("one account, one live code", sci(chance(per_account, 1, space))),
        (f"one account, {pending} live codes", sci(chance(per_account, pending, space))),
        (
            f"five accounts from one address, {pending} live codes",
            f"G = {min(5 * per_account, per_address)}: "
            + sci(chance(min(5 * per_account, per_address), pending, space)),
        ),
        (
            f"five accounts from five addresses, {pending} live codes",
            f"G = {5 * per_account}: {sci(chance(5 * per_account, pending, space))}",
        ),
        (
            f"one account, one code of the longest lifetime ({longest} s)",
            f"G = {longest_guesses}: {sci(chance(longest_guesses, 1, space))}",
        ),
        (
            "one account guessing for a year, one live code at every moment",
            f"G = {year_guesses:,}: {sci(chance(year_guesses, 1, space))}",
        ),
    ]


def test_the_guessing_figures_in_security_md_are_the_codes_own() -> None:
    text = SECURITY_MD.read_text()
    table = "\n".join(f"| {label} | {value} |" for label, value in figures())
    missing = [row for row in table.splitlines() if row not in text]
    assert not missing, "docs/security.md should hold these rows:\n" + table
    # And the bound it quotes for the default: RFC 8628 §5.1's 2^-32 per code
    # lifetime is met within a factor of two for one account and one code.
    space = len(codes.ALPHABET) ** codes.CODE_LENGTH
    one = chance(guesses_within(LimitsPolicy().code_failures_per_account, DEFAULT_CODE_LIFETIME_S), 1, space)
    assert math.log2(one) < -31


def test_the_figures_follow_the_formula() -> None:
    # Independent of the table's formatting: small chances are G·P/N, and exact ones exact.
    assert chance(10, 1, 20**8) == pytest.approx(10 / 20**8, rel=1e-6)
    assert chance(2, 1, 2) == pytest.approx(0.75)  # 1 - (1/2)^2
    assert chance(20, 100, 20**8) > chance(10, 100, 20**8) > chance(10, 1, 20**8)
    assert guesses_within("10 per 15 minutes", 900) == 10
    assert guesses_within("10 per 15 minutes", 901) == 20
    assert guesses_within("5 per minute", 900) == 75
    assert sci(3.90625e-10) == "3.9e-10 (1 in 2.6 billion)"
