"""Two-factor sign-in in the account service: the local AccountService and the
same service over HTTP (web/account_api.py served by waitress on loopback,
hub/services/remote_accounts.py calling it) must answer alike, and neither lets the TOTP
secret or a recovery code hash out once enrolment is done.

The service's clock is a FakeClock, so TOTP time steps move when a test says so.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from conftest import FakeClock, free_port
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlmodel import Session, select
from test_account_service import BrokenDirectory, raw, serving

from hub.core import two_factor
from hub.core.accounts import AccountDirectory, SecondFactor, TwoFactorStatus
from hub.errors import AccountError, AccountServiceUnavailable
from hub.services.local_accounts import AccountService
from hub.services.remote_accounts import AccountServiceRefusedToken, RemoteAccountService
from hub.store.engine import make_engine
from hub.store.models import Account, RecoveryCode
from web.account_api import create_account_api

TOKEN = "service-token"
PASSWORD = "correct horse"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def service_at(path: Path, clock: FakeClock) -> AccountService:
    return AccountService(make_engine(f"sqlite:///{path}"), clock)


@pytest.fixture
def served(tmp_path: Path, clock: FakeClock) -> Iterator[tuple[str, AccountService]]:
    service = service_at(tmp_path / "served.db", clock)
    with serving(create_account_api(service, token=TOKEN)) as url:
        yield url, service


@pytest.fixture(params=["local", "remote"])
def directory(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> AccountDirectory:
    if request.param == "local":
        return service_at(tmp_path / "local.db", clock)
    url, _ = request.getfixturevalue("served")
    return RemoteAccountService(url, TOKEN)


def wrong_code(secret: str, now_s: float, n: int = 0) -> str:
    """A well-formed code that is none of the live ones (a fixed guess could be, once in a million)."""
    live = {pyotp.TOTP(secret).at(now_s + 30 * k) for k in range(-2, 3)}
    return [code for code in (f"{k:06d}" for k in range(123456, 123470)) if code not in live][n]


def enrol(directory: AccountDirectory, account_id: int, clock: FakeClock) -> tuple[str, list[str]]:
    new = directory.begin_two_factor(account_id)
    return new.secret, directory.confirm_two_factor(
        account_id, new.secret, pyotp.TOTP(new.secret).at(clock())
    )


# --- the whole life of it, local and remote ----------------------------------------------
def test_enrol_sign_in_recover_renew_and_disable(directory: AccountDirectory, clock: FakeClock) -> None:
    alice = directory.create("alice", PASSWORD)
    assert not alice.two_factor
    assert directory.two_factor_status(alice.id) == TwoFactorStatus(enabled=False)

    new = directory.begin_two_factor(alice.id)
    assert two_factor.is_secret(new.secret)
    assert new.uri == f"otpauth://totp/LinkHub:alice?secret={new.secret}&issuer=LinkHub"
    assert directory.begin_two_factor(alice.id).secret != new.secret  # fresh each time, nothing kept
    assert not directory.authenticate("alice", PASSWORD).two_factor  # type: ignore[union-attr]

    with pytest.raises(AccountError, match="That code is not right"):
        directory.confirm_two_factor(alice.id, new.secret, wrong_code(new.secret, clock()))
    first = pyotp.TOTP(new.secret).at(clock())
    codes = directory.confirm_two_factor(alice.id, new.secret, first)
    assert len(codes) == len(set(codes)) == 10
    assert all(two_factor.normalise_recovery_code(code) for code in codes)
    assert directory.two_factor_status(alice.id) == TwoFactorStatus(True, clock(), 10)

    # Every view of the account says so: sign-in decides on the answer that checked the password.
    for view in (directory.authenticate("alice", PASSWORD), directory.get(alice.id), directory.find("alice")):
        assert view is not None and view.two_factor
    with pytest.raises(AccountError, match="already on"):
        directory.begin_two_factor(alice.id)
    with pytest.raises(AccountError, match="already on"):
        directory.confirm_two_factor(alice.id, new.secret, first)

    # Each code once: the one that confirmed is used up, the next step's works once.
    assert directory.check_second_factor(alice.id, first) is None
    clock.advance(30)
    now = pyotp.TOTP(new.secret).at(clock())
    assert directory.check_second_factor(alice.id, f" {now[:3]} {now[3:]} ") is SecondFactor.TOTP
    assert directory.check_second_factor(alice.id, now) is None
    for junk in ("", "12345", "1234567", "abcdef", "٠١٢٣٤٥", "x" * 5000):
        assert directory.check_second_factor(alice.id, junk) is None

    assert (
        directory.check_second_factor(alice.id, codes[0].upper().replace("-", ""))
        is SecondFactor.RECOVERY_CODE
    )
    assert directory.check_second_factor(alice.id, codes[0]) is None
    assert directory.two_factor_status(alice.id).recovery_codes_left == 9

    assert directory.renew_recovery_codes(alice.id, wrong_code(new.secret, clock())) is None
    renewed = directory.renew_recovery_codes(alice.id, codes[1])
    assert renewed is not None and len(renewed) == 10 and not set(renewed) & set(codes)
    assert directory.check_second_factor(alice.id, codes[2]) is None  # the old ones are gone
    assert directory.two_factor_status(alice.id).recovery_codes_left == 10

    assert directory.disable_two_factor(alice.id, "wrong password", renewed[0]) is False
    assert directory.two_factor_status(alice.id).recovery_codes_left == 10  # not used up by that
    assert directory.disable_two_factor(alice.id, PASSWORD, wrong_code(new.secret, clock())) is False
    assert directory.two_factor_status(alice.id).enabled
    assert directory.disable_two_factor(alice.id, PASSWORD, renewed[0]) is True
    assert directory.two_factor_status(alice.id) == TwoFactorStatus(enabled=False)
    assert not directory.get(alice.id).two_factor  # type: ignore[union-attr]
    assert directory.check_second_factor(alice.id, renewed[1]) is None
    with pytest.raises(AccountError, match="not on"):
        directory.disable_two_factor(alice.id, PASSWORD, renewed[1])


def test_unknown_accounts_and_foreign_secrets(directory: AccountDirectory, clock: FakeClock) -> None:
    with pytest.raises(AccountError, match="no such account"):
        directory.begin_two_factor(999)
    with pytest.raises(AccountError, match="no such account"):
        directory.two_factor_status(999)
    assert directory.check_second_factor(999, "123456") is None
    assert directory.disable_two_factor(999, PASSWORD, "123456") is False
    assert directory.renew_recovery_codes(999, "123456") is None
    alice = directory.create("alice", PASSWORD)
    # Only a secret as the service makes them can be confirmed (the web hands it back).
    for bad in ("", "short", "a" * 32, "A" * 31 + "1", "A" * 33):
        with pytest.raises(AccountError, match="Start again"):
            directory.confirm_two_factor(alice.id, bad, "123456")
    secret = pyotp.random_base32(32)
    with pytest.raises(AccountError, match="no such account"):
        directory.confirm_two_factor(999, secret, pyotp.TOTP(secret).at(clock()))


def test_codes_a_step_either_side_work_and_no_further(directory: AccountDirectory, clock: FakeClock) -> None:
    alice = directory.create("alice", PASSWORD)
    secret, _ = enrol(directory, alice.id, clock)
    totp = pyotp.TOTP(secret)
    clock.advance(300)
    assert directory.check_second_factor(alice.id, totp.at(clock() - 60)) is None
    assert directory.check_second_factor(alice.id, totp.at(clock() + 60)) is None
    assert directory.check_second_factor(alice.id, totp.at(clock() - 30)) is SecondFactor.TOTP
    assert directory.check_second_factor(alice.id, totp.at(clock() + 30)) is SecondFactor.TOTP
    # The newest step was used: the one between, still in the window, is refused now.
    assert directory.check_second_factor(alice.id, totp.at(clock())) is None


# --- nothing secret leaves the service ----------------------------------------------------
def test_the_secret_and_the_hashes_stay_inside(served: tuple[str, AccountService], clock: FakeClock) -> None:
    url, service = served
    remote = RemoteAccountService(url, TOKEN)
    alice = remote.create("alice", PASSWORD)
    secret, codes = enrol(remote, alice.id, clock)
    with Session(service.engine) as session:
        stored = session.get(Account, alice.id)
        hashes = [row.code_hash for row in session.exec(select(RecoveryCode))]
    assert stored is not None and stored.totp_secret == secret
    assert len(hashes) == 10 and not any(code in each for code in codes for each in hashes)
    assert all(each.startswith("$argon2id$") for each in hashes)
    replies = [
        raw(url, "GET", f"/v1/accounts/{alice.id}", token=TOKEN),
        raw(url, "GET", "/v1/accounts/by-name/alice", token=TOKEN),
        raw(url, "POST", "/v1/auth", {"name": "alice", "password": PASSWORD}, token=TOKEN),
        raw(url, "GET", f"/v1/accounts/{alice.id}/two-factor", token=TOKEN),
        raw(url, "POST", f"/v1/accounts/{alice.id}/two-factor/check", {"code": codes[0]}, token=TOKEN),
        raw(url, "POST", f"/v1/accounts/{alice.id}/two-factor/begin", None, token=TOKEN),  # refused: on
    ]
    for status, body, _ in replies:
        text = json.dumps(body)
        assert secret not in text and "argon2" not in text, (status, text)
    assert replies[3][1] == {"enabled": True, "enabled_at_s": clock(), "recovery_codes_left": 10}
    assert replies[4][:2] == (200, {"method": "recovery_code"})
    assert replies[5][0] == 400 and replies[5][1]["error"] == "account_error"


TWO_FACTOR_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v1/accounts/1/two-factor", None),
    ("POST", "/v1/accounts/1/two-factor/begin", None),
    ("POST", "/v1/accounts/1/two-factor/confirm", {"secret": "A" * 32, "code": "123456"}),
    ("POST", "/v1/accounts/1/two-factor/check", {"code": "123456"}),
    ("POST", "/v1/accounts/1/two-factor/disable", {"password": PASSWORD, "code": "123456"}),
    ("POST", "/v1/accounts/1/two-factor/recovery-codes", {"code": "123456"}),
    ("POST", "/v1/accounts/1/two-factor/reset", {}),
]


@pytest.mark.parametrize(("method", "path", "body"), TWO_FACTOR_ROUTES)
def test_the_two_factor_routes_need_the_token(
    served: tuple[str, AccountService], clock: FakeClock, method: str, path: str, body: dict[str, Any] | None
) -> None:
    url, service = served
    alice = service.create("alice", PASSWORD)
    secret, _ = enrol(service, alice.id, clock)
    status, reply, _ = raw(url, method, path, body, token="wrong")
    assert (status, reply["error"]) == (401, "unauthorized")
    assert secret not in json.dumps(reply)
    assert service.two_factor_status(alice.id).enabled


def two_factor_calls(client: RemoteAccountService) -> list[Callable[[], Any]]:
    return [
        lambda: client.begin_two_factor(1),
        lambda: client.confirm_two_factor(1, "A" * 32, "123456"),
        lambda: client.check_second_factor(1, "123456"),
        lambda: client.two_factor_status(1),
        lambda: client.disable_two_factor(1, PASSWORD, "123456"),
        lambda: client.renew_recovery_codes(1, "123456"),
        lambda: client.reset_two_factor(1),
    ]


def test_a_wrong_token_raises_rather_than_looking_like_a_wrong_code(
    served: tuple[str, AccountService],
) -> None:
    url, _ = served
    for call in two_factor_calls(RemoteAccountService(url, "not-the-token")):
        with pytest.raises(AccountServiceRefusedToken):
            call()


def test_an_absent_or_failing_service_raises_unavailable() -> None:
    # Not "wrong code": a sign-in must not look refused when the service is away.
    for call in two_factor_calls(RemoteAccountService(f"http://127.0.0.1:{free_port()}", TOKEN, timeout_s=2)):
        with pytest.raises(AccountServiceUnavailable, match="did not answer"):
            call()
    with serving(create_account_api(BrokenDirectory(), token=TOKEN)) as url:  # type: ignore[arg-type]
        for call in two_factor_calls(RemoteAccountService(url, TOKEN)):
            with pytest.raises(AccountServiceUnavailable, match="HTTP 500"):
                call()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/accounts/1/two-factor/confirm", {"secret": "A" * 32}),
        ("/v1/accounts/1/two-factor/confirm", {"secret": 5, "code": "123456"}),
        ("/v1/accounts/1/two-factor/check", {}),
        ("/v1/accounts/1/two-factor/check", {"code": 123456}),
        ("/v1/accounts/1/two-factor/disable", {"code": "123456"}),
        ("/v1/accounts/1/two-factor/recovery-codes", b"not json"),
    ],
)
def test_malformed_two_factor_requests_give_400(
    served: tuple[str, AccountService], path: str, body: dict[str, Any] | bytes
) -> None:
    url, service = served
    service.create("alice", PASSWORD)
    status, reply, _ = raw(url, "POST", path, body, token=TOKEN)
    assert (status, reply["error"]) == (400, "bad_request")
    assert not service.two_factor_status(1).enabled


# --- each code once, even raced ---------------------------------------------------------
def race(
    directory: AccountDirectory, account_id: int, code: str, threads: int = 8
) -> list[SecondFactor | None]:
    """The same code checked by `threads` callers at once."""
    results: list[SecondFactor | None] = []
    barrier = threading.Barrier(threads)

    def check() -> None:
        barrier.wait()
        results.append(directory.check_second_factor(account_id, code))

    running = [threading.Thread(target=check) for _ in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join(timeout=30)
    return results


def test_one_code_sent_by_many_at_once_is_accepted_once(
    served: tuple[str, AccountService], clock: FakeClock
) -> None:
    url, service = served
    alice = service.create("alice", PASSWORD)
    secret, codes = enrol(service, alice.id, clock)
    clock.advance(30)
    remote = RemoteAccountService(url, TOKEN)
    for code in (pyotp.TOTP(secret).at(clock()), codes[0]):
        results = race(remote, alice.id, code)
        assert len(results) == 8
        assert sum(result is not None for result in results) == 1, results


def test_recovery_codes_read_well_and_forgive_typing() -> None:
    codes = two_factor.new_recovery_codes()
    assert len(codes) == 10
    for code in codes:
        assert len(code) == 14 and code[4] == code[9] == "-"
        assert not set(code) & set("ilou")  # nothing that reads as another character
    code = "0a1b-2c3d-4e5f"
    assert two_factor.normalise_recovery_code("OA1B 2C3D 4E5F") == "0a1b2c3d4e5f"  # O for 0
    assert two_factor.normalise_recovery_code("0aIb-2c3d-4e5f") == "0a1b2c3d4e5f"  # I for 1
    assert two_factor.normalise_recovery_code(code + "x") is None
    assert two_factor.normalise_recovery_code("0a1b-2c3d-4e5u") is None
    stored = two_factor.hash_recovery_code(code)
    assert two_factor.recovery_code_matches(stored, "0a1b2c3d4e5f")
    assert not two_factor.recovery_code_matches(stored, "0a1b2c3d4e5g")
    assert not two_factor.recovery_code_matches("not a hash", "0a1b2c3d4e5f")


@settings(max_examples=300, deadline=None)
@given(typed=st.text(max_size=80))
def test_any_typed_text_is_a_code_or_nothing(typed: str) -> None:
    """Parsers of what a person types: never raise, accept only the shapes they promise."""
    normalised = two_factor.normalise_recovery_code(typed)
    assert normalised is None or re.fullmatch(r"[0-9a-hjkmnp-tv-z]{12}", normalised)
    step = two_factor.matching_step(
        "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", typed, 1_800_000_000.0, after_step=None
    )
    assert step is None or (two_factor.looks_like_totp(typed) and abs(step - 60_000_000) <= 1)


# --- turned off for someone else, and removal ---------------------------------------------
def test_reset_turns_it_off_without_a_code(directory: AccountDirectory, clock: FakeClock) -> None:
    """For a person who lost phone and recovery codes: who may ask is hub.services.household's rule."""
    bob = directory.create("bob", PASSWORD)
    secret, codes = enrol(directory, bob.id, clock)
    assert directory.reset_two_factor(bob.id) is True
    assert directory.two_factor_status(bob.id) == TwoFactorStatus(enabled=False)
    assert directory.authenticate("bob", PASSWORD) == bob  # two_factor False: the password alone
    clock.advance(30)
    assert directory.check_second_factor(bob.id, pyotp.TOTP(secret).at(clock())) is None
    assert directory.check_second_factor(bob.id, codes[0]) is None
    assert directory.reset_two_factor(bob.id) is False  # off already
    with pytest.raises(AccountError, match="no such account"):
        directory.reset_two_factor(bob.id + 1000)
    # On again with a new phone, from scratch.
    new_secret, _ = enrol(directory, bob.id, clock)
    assert new_secret != secret and directory.two_factor_status(bob.id).enabled


def test_a_removed_account_keeps_nothing_that_signs_in(tmp_path: Path, clock: FakeClock) -> None:
    service = service_at(tmp_path / "removed.db", clock)
    service.create("alice", PASSWORD)
    bob = service.create("bob", PASSWORD)
    secret, codes = enrol(service, bob.id, clock)
    clock.advance(30)
    assert service.check_second_factor(bob.id, pyotp.TOTP(secret).at(clock())) is SecondFactor.TOTP
    removed = service.remove(bob.id)
    assert removed is not None and removed.id == bob.id and service.get(bob.id) is None
    with Session(service.engine) as session:  # what the database keeps is the point
        row = session.get(Account, bob.id)
        assert row is not None and row.removed_at_s is not None
        assert (row.password_hash, row.totp_secret, row.totp_enabled_at_s, row.totp_last_step) == (
            "",
            None,
            None,
            None,
        )
        assert session.exec(select(RecoveryCode).where(RecoveryCode.account_id == bob.id)).all() == []
    assert service.check_second_factor(bob.id, codes[1]) is None
