"""Signing in against a real hub: failed sign-ins limited per account name and
per address (with one answer whether the account exists or not), two-factor
sign-in with TOTP codes computed by pyotp from the key the page shows, recovery
codes, and the activity rows each step leaves.

The hub and the pages share a FakeClock, so TOTP time steps move when a test
says so. The limits themselves run on real time (the `limits` library's
moving windows); these tests only fill them, they never wait for them to drain.
"""

from __future__ import annotations

import html
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyotp
import pytest
from conftest import FakeClock, HubFactory, hub_pages
from conftest import csrf_token as token
from flask import Flask
from flask.testing import FlaskClient
from sqlmodel import Session, col, select
from test_account_service import serving
from werkzeug.test import TestResponse

from hub.core.rate_limits import LimitsPolicy
from hub.daemon import Hub
from hub.services.activity import ActivityKind
from hub.services.local_accounts import AccountService
from hub.store.engine import make_engine
from hub.store.models import ActivityEvent
from web import WebConfig
from web.account_api import create_account_api
from web.auth import AWAITING_KEY, SESSION_KEY, WRONG_CREDENTIALS
from web.qr import qr_svg
from web.sign_in_limits import SignInLimits
from web.two_factor import WRONG_PASSWORD_OR_CODE, WRONG_SECOND_FACTOR

OWNER = "alice"
MEMBER = "bob"
PASSWORD = "correct horse battery"
HOME = "192.168.1.20"
ELSEWHERE = "192.168.1.66"
THROTTLED = re.compile(r"^Too many sign-in attempts\. Try again in about 15 minutes\.$")



# --- fixtures and helpers ------------------------------------------------------------
@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hub(make_hub: HubFactory, clock: FakeClock) -> Hub:
    made = make_hub(clock=clock)
    made.accounts.create(OWNER, PASSWORD)
    made.accounts.create(MEMBER, PASSWORD)
    return made


def web_app(hub: Hub, clock: Callable[[], float], **limits: str) -> Flask:
    return hub_pages(
        hub, WebConfig(secret_key="test", testing=True, clock=clock, limits=LimitsPolicy(**limits))
    )


def client_at(app: Flask, address: str = HOME) -> FlaskClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def page(response: TestResponse) -> str:
    return response.get_data(as_text=True)



def message(response: TestResponse) -> tuple[str, str]:
    """(data-status, text) of the page's first message."""
    found = re.search(r'<p class="message [^"]*" data-status="([^"]+)"[^>]*>(.*?)</p>', page(response), re.S)
    assert found, page(response)
    return found.group(1), html.unescape(found.group(2)).strip()


def post_form(client: FlaskClient, form_url: str, post_url: str, **fields: str) -> TestResponse:
    form = client.get(form_url)
    assert form.status_code == 200, (form_url, form.status_code)
    return client.post(post_url, data={"csrf_token": token(form), **fields})


def sign_in(client: FlaskClient, name: str = OWNER, password: str = PASSWORD) -> TestResponse:
    return post_form(client, "/login", "/login", name=name, password=password)


def second_factor(client: FlaskClient, code: str) -> TestResponse:
    return post_form(client, "/login/two-factor", "/login/two-factor", code=code)


def sign_out(client: FlaskClient) -> None:
    assert post_form(client, "/settings", "/logout").status_code == 302


def signed_in(client: FlaskClient) -> bool:
    return client.get("/devices").status_code == 200


def events(hub: Hub, kind: ActivityKind) -> list[ActivityEvent]:
    """Rows of one kind, oldest first, including those for no account."""
    with Session(hub.engine) as session:
        return list(
            session.exec(
                select(ActivityEvent).where(ActivityEvent.kind == str(kind)).order_by(col(ActivityEvent.id))
            )
        )


def enrol(client: FlaskClient, clock: FakeClock) -> tuple[str, list[str]]:
    """Turn two-factor on as a person would; the key as the page shows it, and the recovery codes."""
    started = post_form(client, "/account/two-factor", "/account/two-factor/start")
    assert started.status_code == 303
    shown = client.get("/account/two-factor")
    secret = key_on(shown)
    posted = post_form(
        client, "/account/two-factor", "/account/two-factor/confirm", code=pyotp.TOTP(secret).at(clock())
    )
    # Post/redirect/get: the codes are on a page that Reload shows again.
    assert posted.status_code == 303, page(posted)
    assert posted.headers["Location"] == "/account/two-factor/recovery-codes"
    confirmed = client.get(posted.headers["Location"])
    assert message(confirmed) == ("two_factor_on", "Two-factor sign-in is on.")
    assert recovery_codes_on(client.get(posted.headers["Location"])) == recovery_codes_on(confirmed)
    return secret, recovery_codes_on(confirmed)


def enrolled(client: FlaskClient, clock: FakeClock) -> str:
    """Sign in, turn two-factor on, sign out: the key, for making codes."""
    sign_in(client)
    secret, _ = enrol(client, clock)
    sign_out(client)
    return secret


def wrong_code(secret: str, now_s: float, n: int = 0) -> str:
    """A well-formed code that is none of the live ones (a fixed guess could be, once in a million)."""
    live = {pyotp.TOTP(secret).at(now_s + 30 * k) for k in range(-2, 3)}
    return [code for code in (f"{k:06d}" for k in range(123456, 123470)) if code not in live][n]


def key_on(response: TestResponse) -> str:
    found = re.search(r'<p class="secret-key"[^>]*>(.*?)</p>', page(response), re.S)
    assert found, page(response)
    return "".join(re.findall(r"<code>([A-Z2-7]{4})</code>", found.group(1)))


def recovery_codes_on(response: TestResponse) -> list[str]:
    return re.findall(r"<li><code>([0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4})</code></li>", page(response))


# --- limits on failed sign-ins -------------------------------------------------------
def test_wrong_passwords_are_limited_per_account_name(hub: Hub) -> None:
    app = web_app(hub, time.time, sign_in_failures_per_account="3 per 15 minutes")
    client = client_at(app)
    # Spelling does not make a new name: trimmed and case-folded, as a person would mean it.
    for typed in (f"  {OWNER.upper()} ", OWNER.capitalize(), OWNER):
        wrong = sign_in(client, typed, "not the password")
        assert wrong.status_code == 400
        assert message(wrong) == ("wrong_credentials", WRONG_CREDENTIALS)

    refused = sign_in(client, OWNER, PASSWORD)  # the right password, but too late
    assert refused.status_code == 429
    status, text = message(refused)
    assert status == "throttled" and THROTTLED.match(text), text
    assert 880 <= int(refused.headers["Retry-After"]) <= 900
    assert not signed_in(client)
    # From another address too: the limit is the account's.
    assert sign_in(client_at(app, ELSEWHERE)).status_code == 429
    # Someone else's account is not held up.
    assert sign_in(client, MEMBER).status_code == 302

    alice = hub.accounts.find(OWNER)
    assert alice is not None
    failed = events(hub, ActivityKind.SIGN_IN_FAILED)
    # Names are case-sensitive accounts: "ALICE" is nobody's, though it counts against alice's limit.
    assert [(e.account_id, e.address, e.detail) for e in failed] == [
        (None, HOME, "wrong password; no account named 'ALICE'"),
        (None, HOME, "wrong password; no account named 'Alice'"),
        (alice.id, HOME, "wrong password"),
    ]
    throttled = events(hub, ActivityKind.SIGN_IN_THROTTLED)
    assert [(e.account_id, e.address) for e in throttled] == [(alice.id, HOME)]  # once, not per refusal


def test_an_unknown_name_gets_the_same_answers_as_a_real_one(hub: Hub) -> None:
    def answers(name: str) -> list[tuple[int, tuple[str, str], str | None]]:
        client = client_at(web_app(hub, time.time, sign_in_failures_per_account="2 per 15 minutes"))
        seen = []
        for password in ("wrong one", "wrong two", PASSWORD, "wrong three"):
            response = sign_in(client, name, password)
            seen.append((response.status_code, message(response), response.headers.get("Retry-After")))
        return seen

    real, unknown = answers(OWNER), answers("mallory")
    assert [(status, said) for status, said, _ in real] == [(status, said) for status, said, _ in unknown]
    assert [status for status, _, _ in real] == [400, 400, 429, 429]
    assert real[0][1] == ("wrong_credentials", WRONG_CREDENTIALS)
    assert real[2][1][0] == "throttled"
    # The unknown name is in the log for nobody, with what was typed.
    failed = [e for e in events(hub, ActivityKind.SIGN_IN_FAILED) if e.account_id is None]
    assert len(failed) == 2 and all("'mallory'" in e.detail and e.address == HOME for e in failed)


def test_what_is_typed_as_a_name_reaches_the_log_harmless(hub: Hub) -> None:
    client = client_at(web_app(hub, time.time))
    for typed in ("\x1b[2Jmallory\r\n", "x" * 5000):
        assert sign_in(client, typed, "wrong").status_code == 400
    details = [e.detail for e in events(hub, ActivityKind.SIGN_IN_FAILED)]
    assert details[0] == "wrong password; no account named '\\x1b[2Jmallory'"  # escaped, not an escape
    assert details[1] == f"wrong password; no account named {'x' * 64!r}"


def test_wrong_passwords_are_limited_per_address(hub: Hub) -> None:
    app = web_app(
        hub,
        time.time,
        sign_in_failures_per_account="100 per 15 minutes",
        sign_in_failures_per_address="4 per 15 minutes",
    )
    guesser = client_at(app, ELSEWHERE)
    for name in ("carol", "dave", MEMBER, OWNER):  # spraying names, one guess each
        assert sign_in(guesser, name, "summer2024").status_code == 400
    refused = sign_in(guesser, OWNER, PASSWORD)
    assert refused.status_code == 429 and message(refused)[0] == "throttled"
    # The same account from the person's own phone still works.
    assert sign_in(client_at(app, HOME), OWNER, PASSWORD).status_code == 302


def test_x_forwarded_for_does_not_choose_the_address(hub: Hub) -> None:
    app = web_app(hub, time.time, sign_in_failures_per_address="2 per 15 minutes")
    client = client_at(app, ELSEWHERE)
    for n in range(3):
        form = client.get("/login")
        response = client.post(
            "/login",
            data={"csrf_token": token(form), "name": f"name{n}", "password": "wrong"},
            headers={"X-Forwarded-For": f"10.0.0.{n}"},
        )
        assert response.status_code == (400 if n < 2 else 429)
    assert {e.address for e in events(hub, ActivityKind.SIGN_IN_FAILED)} == {ELSEWHERE}


def test_a_right_password_does_not_reset_the_counts(hub: Hub) -> None:
    app = web_app(hub, time.time, sign_in_failures_per_account="3 per 15 minutes")
    client = client_at(app)
    assert sign_in(client, OWNER, "wrong").status_code == 400
    assert sign_in(client, OWNER, "wrong").status_code == 400
    assert sign_in(client).status_code == 302
    sign_out(client)
    assert sign_in(client, OWNER, "wrong").status_code == 400
    assert sign_in(client).status_code == 429


def test_sign_in_and_sign_out_are_in_the_activity(hub: Hub) -> None:
    client = client_at(web_app(hub, time.time))
    assert sign_in(client).status_code == 302
    sign_out(client)
    alice = hub.accounts.find(OWNER)
    assert alice is not None
    kinds = [(e.kind, e.address) for e in reversed(hub.activity.recent(alice.id))]
    assert kinds == [(ActivityKind.SIGN_IN, HOME), (ActivityKind.SIGN_OUT, HOME)]


def test_parallel_guesses_do_not_slip_past_the_limit() -> None:
    limits = SignInLimits(LimitsPolicy(sign_in_failures_per_account="5 per 15 minutes"))
    checked: list[int] = []
    barrier = threading.Barrier(20)

    def guess(n: int) -> None:
        barrier.wait()

        def slow_wrong_password() -> None:
            time.sleep(0.01)  # as a password hash takes time
            checked.append(n)

        limits.attempt("alice", f"192.168.1.{n}", slow_wrong_password)

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(checked) == 5
    assert limits.retry_after_s("ALICE", "192.168.1.99") > 0


# --- two-factor sign-in ------------------------------------------------------------------
@pytest.mark.parametrize("who", [OWNER, MEMBER])
def test_enrol_then_sign_in_with_a_code(hub: Hub, clock: FakeClock, who: str) -> None:
    app = web_app(hub, clock)
    client = client_at(app)
    assert sign_in(client, who).status_code == 302
    off = client.get("/account/two-factor")
    assert 'data-two-factor="off"' in page(off)

    started = post_form(client, "/account/two-factor", "/account/two-factor/start")
    assert started.status_code == 303
    shown = client.get("/account/two-factor")
    secret = key_on(shown)
    assert len(secret) == 32
    # The QR code on the page is the otpauth URI for this account and key, drawn on the hub.
    uri = pyotp.TOTP(secret).provisioning_uri(name=who, issuer_name="LinkHub")
    assert str(qr_svg(uri, label="QR code to add LinkHub to an authenticator app")) in page(shown)
    assert secret not in client.get_cookie("linkhub_session").value  # the key is not in the cookie

    wrong = post_form(
        client, "/account/two-factor", "/account/two-factor/confirm", code=wrong_code(secret, clock())
    )
    assert wrong.status_code == 400 and "That code is not right" in message(wrong)[1]
    account = hub.accounts.find(who)
    assert account is not None and not account.two_factor

    code = pyotp.TOTP(secret).at(clock())
    posted = post_form(client, "/account/two-factor", "/account/two-factor/confirm", code=code)
    assert posted.status_code == 303
    codes = recovery_codes_on(client.get(posted.headers["Location"]))
    assert len(codes) == len(set(codes)) == 10
    assert hub.accounts.two_factor_status(account.id).recovery_codes_left == 10
    status = client.get("/account/two-factor")
    assert 'data-two-factor="on"' in page(status) and "10 recovery codes" in page(status)
    assert not any(each in page(status) for each in codes)  # only on their own page
    clock.advance(601)  # ...and only for a while: then it says so, in words that are not a success
    gone = client.get("/account/two-factor/recovery-codes")
    assert message(gone)[0] == "codes_gone" and not any(each in page(gone) for each in codes)
    assert client.get("/account/two-factor/recovery-codes.txt").status_code == 302
    sign_out(client)

    # A right password alone no longer signs in: the session holds a token, not the account.
    halfway = sign_in(client, who)
    assert halfway.status_code == 302 and halfway.headers["Location"] == "/login/two-factor"
    with client.session_transaction() as cookie:
        assert SESSION_KEY not in cookie and isinstance(cookie.get(AWAITING_KEY), str)
    assert not signed_in(client)
    # The code that switched it on was used: the same time step is refused.
    replayed = second_factor(client, code)
    assert replayed.status_code == 400 and message(replayed) == ("wrong_code", WRONG_SECOND_FACTOR)
    clock.advance(30)
    done = second_factor(client, pyotp.TOTP(secret).at(clock()))
    assert done.status_code == 302 and done.headers["Location"] == "/link"
    assert signed_in(client)

    sign_out(client)
    sign_in(client, who)
    again = second_factor(client, pyotp.TOTP(secret).at(clock()))  # the code just used, again
    # Said, and logged, as a code already used, not as a wrong one (RFC 6238 §5.2).
    assert again.status_code == 400 and message(again)[0] == "code_used"
    clock.advance(30)
    assert second_factor(client, pyotp.TOTP(secret).at(clock())).status_code == 302

    assert [e.detail for e in events(hub, ActivityKind.SIGN_IN) if e.account_id == account.id] == [
        "password",
        "password and authenticator code",
        "password and authenticator code",
    ]
    assert [e.account_id for e in events(hub, ActivityKind.TWO_FACTOR_ENABLED)] == [account.id]
    assert [e.detail for e in events(hub, ActivityKind.SIGN_IN_FAILED)] == [
        "wrong second factor",  # the enrolment's code, out of its window by then
        "authenticator code already used in its 30-second window",
    ]


def test_a_code_from_the_next_or_last_step_works_but_not_two_steps_off(hub: Hub, clock: FakeClock) -> None:
    client = client_at(web_app(hub, clock))
    secret = enrolled(client, clock)
    totp = pyotp.TOTP(secret)
    sign_in(client)
    clock.advance(60)
    assert second_factor(client, totp.at(clock() - 60)).status_code == 400  # two steps old
    assert second_factor(client, totp.at(clock() + 60)).status_code == 400  # two steps ahead
    assert second_factor(client, totp.at(clock() + 30)).status_code == 302  # a phone a little fast
    sign_out(client)
    sign_in(client)
    # Once a newer step was used, an older code still in the window is refused too.
    assert second_factor(client, totp.at(clock())).status_code == 400


def test_a_recovery_code_works_once(hub: Hub, clock: FakeClock) -> None:
    client = client_at(web_app(hub, clock))
    sign_in(client)
    _, codes = enrol(client, clock)
    sign_out(client)

    sign_in(client)
    typed = codes[3].upper().replace("-", " ")  # as copied from paper
    used = second_factor(client, typed)
    assert used.status_code == 303 and used.headers["Location"] == "/account/two-factor"
    landed = client.get("/account/two-factor")
    assert "You signed in with a recovery code; 9 recovery codes left." in message(landed)[1]
    sign_out(client)

    sign_in(client)
    again = second_factor(client, codes[3])
    assert again.status_code == 400 and message(again)[1] == WRONG_SECOND_FACTOR
    assert second_factor(client, codes[4]).status_code == 303
    alice = hub.accounts.find(OWNER)
    assert alice is not None
    assert len(events(hub, ActivityKind.RECOVERY_CODE_USED)) == 2
    assert hub.accounts.two_factor_status(alice.id).recovery_codes_left == 8


def test_wrong_second_factors_count_against_the_sign_in_limits(hub: Hub, clock: FakeClock) -> None:
    app = web_app(hub, clock, sign_in_failures_per_account="3 per 15 minutes")
    client = client_at(app)
    secret = enrolled(client, clock)
    clock.advance(30)

    assert sign_in(client).status_code == 302
    for n in range(3):
        assert second_factor(client, wrong_code(secret, clock(), n)).status_code == 400
    refused = second_factor(client, pyotp.TOTP(secret).at(clock()))
    assert refused.status_code == 429 and THROTTLED.match(message(refused)[1])
    assert not signed_in(client)
    # And the password page says the same for this account now.
    assert sign_in(client_at(app, ELSEWHERE)).status_code == 429
    assert len(events(hub, ActivityKind.SIGN_IN_THROTTLED)) == 1


def test_wrong_second_factors_have_a_daily_limit_of_their_own(hub: Hub, clock: FakeClock) -> None:
    app = web_app(hub, clock, second_factor_failures_per_account="2 per day")
    client = client_at(app)
    secret = enrolled(client, clock)
    clock.advance(30)
    assert sign_in(client).status_code == 302
    for n in range(2):
        assert second_factor(client, wrong_code(secret, clock(), n)).status_code == 400
    refused = second_factor(client, pyotp.TOTP(secret).at(clock()))
    assert refused.status_code == 429
    assert message(refused)[1] == "Too many sign-in attempts. Try again in about 24 hours."
    # Wrong passwords are not what this limit is about: a member is not held up by it.
    assert sign_in(client_at(app, ELSEWHERE), MEMBER).status_code == 302


def test_the_second_step_expires(hub: Hub, clock: FakeClock) -> None:
    client = client_at(web_app(hub, clock))
    secret = enrolled(client, clock)
    assert sign_in(client).status_code == 302
    clock.advance(301)
    late = client.get("/login/two-factor")
    assert late.status_code == 302 and late.headers["Location"].startswith("/login")
    # Straight to the second step without a password: back to the first.
    fresh = client_at(web_app(hub, clock))
    assert fresh.get("/login/two-factor").headers["Location"].startswith("/login")
    form = fresh.get("/login")
    skipped = fresh.post(
        "/login/two-factor", data={"csrf_token": token(form), "code": pyotp.TOTP(secret).at(clock())}
    )
    assert skipped.status_code == 302 and skipped.headers["Location"].startswith("/login")
    assert not signed_in(fresh)


def test_the_second_step_keeps_a_safe_next(hub: Hub, clock: FakeClock) -> None:
    client = client_at(web_app(hub, clock))
    secret = enrolled(client, clock)
    clock.advance(30)
    for target, expected in (("/devices?x=1", "/devices?x=1"), ("//evil.example/", "/link")):
        form = client.get("/login")
        halfway = client.post(
            "/login",
            query_string={"next": target},
            data={"csrf_token": token(form), "name": OWNER, "password": PASSWORD},
        )
        assert halfway.status_code == 302
        step = halfway.headers["Location"]
        assert "evil" not in step
        form = client.get(step)
        done = client.post(step, data={"csrf_token": token(form), "code": pyotp.TOTP(secret).at(clock())})
        assert done.headers["Location"] == expected
        sign_out(client)
        clock.advance(30)


def test_turning_it_off_needs_the_password_and_a_code(hub: Hub, clock: FakeClock) -> None:
    client = client_at(web_app(hub, clock))
    sign_in(client)
    secret, codes = enrol(client, clock)
    clock.advance(30)
    totp = pyotp.TOTP(secret)

    def turn_off(password: str, code: str) -> TestResponse:
        return post_form(
            client, "/account/two-factor", "/account/two-factor/disable", password=password, code=code
        )

    wrong_password = turn_off("not the password", codes[0])
    assert wrong_password.status_code == 400 and message(wrong_password)[1] == WRONG_PASSWORD_OR_CODE
    not_the_code = turn_off(PASSWORD, wrong_code(secret, clock()))
    assert not_the_code.status_code == 400
    alice = hub.accounts.find(OWNER)
    assert alice is not None and alice.two_factor
    # The wrong password did not use up the recovery code it came with.
    assert hub.accounts.two_factor_status(alice.id).recovery_codes_left == 10

    off = turn_off(PASSWORD, totp.at(clock()))
    assert off.status_code == 303
    assert 'data-two-factor="off"' in page(client.get(off.headers["Location"]))
    sign_out(client)
    assert sign_in(client).headers["Location"] == "/link"  # the password alone again
    assert [e.account_id for e in events(hub, ActivityKind.TWO_FACTOR_DISABLED)] == [alice.id]
    assert len(events(hub, ActivityKind.SIGN_IN_FAILED)) == 2


def test_new_recovery_codes_replace_the_old_ones(hub: Hub, clock: FakeClock) -> None:
    client = client_at(web_app(hub, clock))
    sign_in(client)
    secret, old = enrol(client, clock)
    clock.advance(30)
    posted = post_form(
        client,
        "/account/two-factor",
        "/account/two-factor/recovery-codes",
        code=pyotp.TOTP(secret).at(clock()),
    )
    assert posted.status_code == 303
    renewed = client.get(posted.headers["Location"])
    assert message(renewed)[0] == "new_codes"
    text = client.get("/account/two-factor/recovery-codes.txt")
    assert text.mimetype == "text/plain" and "attachment" in text.headers["Content-Disposition"]
    new = recovery_codes_on(renewed)
    assert len(new) == 10 and not set(new) & set(old)
    sign_out(client)
    sign_in(client)
    assert second_factor(client, old[0]).status_code == 400
    assert second_factor(client, new[0]).status_code == 303
    assert len(events(hub, ActivityKind.RECOVERY_CODES_RENEWED)) == 1


# --- the same over a separate account service ---------------------------------------------
@pytest.fixture
def remote_hub(make_hub: HubFactory, clock: FakeClock, tmp_path: Path) -> Iterator[Hub]:
    service = AccountService(make_engine(f"sqlite:///{tmp_path / 'accounts.db'}"), clock)
    with serving(create_account_api(service, token="t0ken")) as url:
        made = make_hub(clock=clock, account_service_url=url, account_service_token="t0ken")
        made.accounts.create(OWNER, PASSWORD)
        yield made


def test_two_factor_through_a_separate_account_service(remote_hub: Hub, clock: FakeClock) -> None:
    client = client_at(web_app(remote_hub, clock))
    sign_in(client)
    secret, codes = enrol(client, clock)
    sign_out(client)
    clock.advance(30)
    assert sign_in(client).headers["Location"] == "/login/two-factor"
    assert second_factor(client, wrong_code(secret, clock())).status_code == 400
    assert second_factor(client, pyotp.TOTP(secret).at(clock())).status_code == 302
    sign_out(client)
    sign_in(client)
    assert second_factor(client, codes[0]).status_code == 303
    assert "9 recovery codes" in page(client.get("/account/two-factor"))


@pytest.mark.parametrize("where", ["in the hub", "separate"])
def test_switching_two_factor_on_ends_the_other_sessions(
    request: pytest.FixtureRequest, clock: FakeClock, where: str
) -> None:
    """A phone left signed in, or a session someone else took, signed in with the
    password alone: once two-factor is on, it must sign in again with a code. The
    session that switched it on goes on."""
    the_hub: Hub = request.getfixturevalue("hub" if where == "in the hub" else "remote_hub")
    app = web_app(the_hub, clock)
    left_signed_in, enrolling = client_at(app), client_at(app)
    sign_in(left_signed_in)
    sign_in(enrolling)
    clock.advance(5)
    secret, _ = enrol(enrolling, clock)
    assert signed_in(enrolling)
    assert not signed_in(left_signed_in)
    assert left_signed_in.get("/devices").headers["Location"].startswith("/login")
    # Signing in again, now with the second factor, works as before.
    clock.advance(30)
    assert sign_in(left_signed_in).headers["Location"] == "/login/two-factor"
    assert second_factor(left_signed_in, pyotp.TOTP(secret).at(clock())).status_code == 302
    assert signed_in(left_signed_in) and signed_in(enrolling)
