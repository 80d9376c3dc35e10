"""The account service on its own: web/account_api.py served by waitress over
loopback, hub/services/remote_accounts.py talking to it, and the local AccountService
that both must match call for call."""

from __future__ import annotations

import http.client
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from flask import Flask
from waitress.server import create_server
from waitress.wasyncore import close_all, loop
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.wrappers import Response

import hub.services.remote_accounts
from hub.core.accounts import AccountDirectory, ChangeKind, SettingsChange, VersionedDocument
from hub.errors import AccountError, AccountServiceUnavailable, ConfigError
from hub.services.local_accounts import AccountService
from hub.services.remote_accounts import AccountServiceRefusedToken, RemoteAccountService
from hub.store.engine import make_engine
from web.account_api import MAX_BODY_BYTES, create_account_api

WSGIApp = Callable[..., Any]


# --- fixtures -----------------------------------------------------------------------
@contextmanager
def serving(app: WSGIApp) -> Iterator[str]:
    """Serve `app` on a free loopback port for the length of the block."""
    server = create_server(app, host="127.0.0.1", port=0, threads=8)
    stop = threading.Event()

    def run() -> None:
        # Not server.run(): it has no stop, and closing its sockets (close(), or
        # a thunk on its trigger) from another thread races with its select()
        # and with the workers' own trigger pulls. Here the loop closes them.
        while not stop.is_set():
            loop(timeout=0.02, map=server._map, count=1)
        close_all(server._map, ignore_all=True)

    thread = threading.Thread(target=run, name="account-api", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.task_dispatcher.shutdown()  # first: a finishing worker pulls the trigger
        stop.set()
        thread.join(timeout=5)


def local_service(directory: Path) -> AccountService:
    return AccountService(make_engine(f"sqlite:///{directory}/a.db"), time.time)


@dataclass
class RunningApi:
    url: str
    token: str
    service: AccountService

    def client(self, **kwargs: Any) -> RemoteAccountService:
        return RemoteAccountService(self.url, self.token, **kwargs)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[RunningApi]:
    service = local_service(tmp_path)
    token = secrets.token_urlsafe(32)
    with serving(create_account_api(service, token=token)) as url:
        yield RunningApi(url, token, service)


@pytest.fixture
def remote(api: RunningApi) -> RemoteAccountService:
    return api.client()


@pytest.fixture(params=["local", "remote"])
def directory(request: pytest.FixtureRequest, tmp_path: Path) -> AccountDirectory:
    """Every test that takes this runs against both, so both must behave alike."""
    if request.param == "local":
        return local_service(tmp_path)
    return request.getfixturevalue("remote")


def raw(
    url: str,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | list[Any] | None = None,
    token: str | None = None,
) -> tuple[int, Any, http.client.HTTPResponse]:
    """A request below the client, to see exactly what the API answers."""
    host_port = url.removeprefix("http://")
    connection = http.client.HTTPConnection(host_port, timeout=5)
    headers: dict[str, str] = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        text = response.read()
    finally:
        connection.close()
    return response.status, json.loads(text) if text else None, response


def change(
    change_id: str,
    version: int,
    patch: dict[str, Any],
    *,
    account_id: int = 1,
    device_id: str | None = None,
    made_at_s: float = 1_800_000_000.0,
) -> SettingsChange:
    return SettingsChange(
        change_id=change_id,
        kind=ChangeKind.DEVICE_SETTINGS if device_id else ChangeKind.PREFERENCES,
        account_id=account_id,
        device_id=device_id,
        patch=patch,
        version=version,
        origin="device" if device_id else "web",
        made_at_s=made_at_s,
    )


# --- the same answers, local or remote ------------------------------------------
def script(directory: AccountDirectory) -> list[tuple[str, Any]]:
    """One long sequence of calls, each answer (or error) recorded for comparison."""
    transcript: list[tuple[str, Any]] = []

    def record(label: str, call: Callable[[], Any]) -> Any:
        try:
            result = call()
        except AccountError as exc:
            result = ("AccountError", str(exc))
        transcript.append((label, result))
        return result

    record("any before", directory.has_accounts)
    alice = record("create alice", lambda: directory.create("alice", "correct horse"))
    record("any after", directory.has_accounts)
    record("create bob", lambda: directory.create(" bob ", "battery staple"))
    record("create alice again", lambda: directory.create("alice", "another password"))
    record("create empty name", lambda: directory.create("", "long enough"))
    record("create bad name", lambda: directory.create("a/b", "long enough"))
    record("create short password", lambda: directory.create("carol", "short"))
    record("create dotted", lambda: directory.create("Dr. Who-2_x", "tardis tardis"))
    record("create unicode", lambda: directory.create("élan", "long enough"))
    record("auth", lambda: directory.authenticate("alice", "correct horse"))
    record("auth padded", lambda: directory.authenticate("  alice ", "correct horse"))
    record("auth wrong password", lambda: directory.authenticate("alice", "wrong horse"))
    record("auth unknown", lambda: directory.authenticate("nobody", "correct horse"))
    record("auth empty", lambda: directory.authenticate("", ""))
    record("get alice", lambda: directory.get(alice.id))
    for account_id in (999, 0, -1):
        record(f"get {account_id}", lambda account_id=account_id: directory.get(account_id))
    for name in ("bob", "  bob ", "Dr. Who-2_x", "nobody", "", "   ", "a/b", "?x#y", "..", "élan", "%41"):
        record(f"find {name!r}", lambda name=name: directory.find(name))

    changes = [
        change("c-1", 1, {"theme": "dark", "units": {"temp": "C"}}, account_id=alice.id),
        change("c-1", 1, {"theme": "dark", "units": {"temp": "C"}}, account_id=alice.id),  # replay
        change("c-2", 1, {"brightness": 40}, account_id=alice.id, device_id="lamp-1"),
        change("c-3", 2, {"theme": None, "units": {"speed": "km/h"}}, account_id=alice.id),
        change("c-4", 1, {"theme": "stale"}, account_id=alice.id),  # older version: logged only
        change("c-5", 2, {"colour": [1, 2, 3], "nested": {"a": {"b": 1.5}}}, device_id="lamp-1"),
    ]
    for n, each in enumerate(changes):
        record(f"apply #{n} {each.change_id}", lambda each=each: directory.apply_change(each))
    record("preferences alice", lambda: directory.preferences(alice.id))
    record("preferences nobody", lambda: directory.preferences(999))
    record("settings lamp-1", lambda: directory.device_settings("lamp-1"))
    record("settings unknown", lambda: directory.device_settings("no-such-device"))
    for after, limit in ((0, 1000), (2, 1000), (0, 2), (1, 1), (0, 0), (99, 10)):
        record(
            f"changes after {after} limit {limit}",
            lambda after=after, limit=limit: [
                (entry.seq, entry.change) for entry in directory.changes(after, limit)
            ],
        )
    return transcript


def test_local_and_remote_give_the_same_results(tmp_path: Path, remote: RemoteAccountService) -> None:
    (tmp_path / "local").mkdir()
    local = script(local_service(tmp_path / "local"))
    over_http = script(remote)
    assert over_http == local
    # And the answers are the ones the interface promises, not just equal:
    answers = dict(local)
    assert answers["any before"] is False and answers["any after"] is True
    assert answers["create alice"].is_owner and not answers["create bob"].is_owner
    assert answers["create bob"].name == "bob"
    assert answers["create alice again"][0] == "AccountError"
    assert answers["auth wrong password"] is None and answers["auth unknown"] is None
    assert answers["find 'a/b'"] is None and answers["find ''"] is None
    applied = [answers[f"apply #{n} c-{k}"] for n, k in enumerate((1, 1, 2, 3, 4, 5))]
    assert applied == [True, False, True, True, True, True]
    assert answers["preferences alice"] == VersionedDocument({"units": {"temp": "C", "speed": "km/h"}}, 2)
    assert answers["settings unknown"] == VersionedDocument({}, 0)
    assert len(answers["changes after 0 limit 1000"]) == 5


def test_every_method_works_against_the_real_server(directory: AccountDirectory) -> None:
    assert not directory.has_accounts()
    alice = directory.create("alice", "correct horse")
    assert (alice.name, alice.is_owner) == ("alice", True)
    assert directory.has_accounts()
    assert directory.authenticate("alice", "correct horse") == alice
    assert directory.authenticate("alice", "incorrect") is None
    assert directory.get(alice.id) == alice
    assert directory.find("alice") == alice
    assert directory.find("bob") is None
    with pytest.raises(AccountError, match="already exists"):
        directory.create("alice", "whatever whatever")
    assert directory.apply_change(change("p-1", 1, {"theme": "dark"}, account_id=alice.id))
    assert directory.apply_change(change("d-1", 3, {"on": True}, account_id=alice.id, device_id="lamp-1"))
    assert directory.preferences(alice.id) == VersionedDocument({"theme": "dark"}, 1)
    assert directory.device_settings("lamp-1") == VersionedDocument({"on": True}, 3)
    logged = directory.changes()
    assert [entry.change.change_id for entry in logged] == ["p-1", "d-1"]
    assert logged[1].change == change("d-1", 3, {"on": True}, account_id=alice.id, device_id="lamp-1")
    assert all(isinstance(entry.received_at_s, float) for entry in logged)


# --- exactly once, in arrival order -----------------------------------------------
def test_a_change_applied_twice_is_stored_once(directory: AccountDirectory) -> None:
    first = change("same-id", 1, {"volume": 3})
    assert directory.apply_change(first) is True
    assert directory.apply_change(first) is False
    # Same id, different content: still the first one that counts.
    assert directory.apply_change(change("same-id", 2, {"volume": 9})) is False
    assert [entry.change for entry in directory.changes()] == [first]
    assert directory.preferences(1) == VersionedDocument({"volume": 3}, 1)


def test_a_change_delivered_at_once_from_many_threads_is_stored_once(remote: RemoteAccountService) -> None:
    racing = change("racing", 1, {"x": 1})
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def deliver() -> None:
        barrier.wait()
        results.append(remote.apply_change(racing))

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == [False] * 7 + [True]
    assert len(remote.changes()) == 1


def test_changes_come_back_in_arrival_order(directory: AccountDirectory) -> None:
    # Arrival order, not version or made_at order: the log is what was received.
    sent = [
        change("a", 5, {"k": 1}, made_at_s=50.0),
        change("b", 1, {"k": 2}, device_id="plug-1", made_at_s=40.0),
        change("c", 3, {"k": 3}, made_at_s=30.0),
        change("d", 2, {"k": 4}, device_id="plug-1", made_at_s=20.0),
    ]
    for each in sent:
        directory.apply_change(each)
    logged = directory.changes()
    assert [entry.change for entry in logged] == sent
    seqs = [entry.seq for entry in logged]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert [entry.received_at_s for entry in logged] == sorted(entry.received_at_s for entry in logged)
    assert [entry.change.change_id for entry in directory.changes(after_seq=seqs[1])] == ["c", "d"]
    assert [entry.change.change_id for entry in directory.changes(after_seq=seqs[0], limit=2)] == ["b", "c"]
    # A stale version is logged, but the stored document keeps the newer one.
    assert directory.preferences(1) == VersionedDocument({"k": 1}, 5)


def test_changes_read_past_one_page(remote: RemoteAccountService, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub.services.remote_accounts, "CHANGES_PAGE", 2)
    for n in range(5):
        remote.apply_change(change(f"p-{n}", n + 1, {"n": n}))
    assert [entry.change.change_id for entry in remote.changes()] == [f"p-{n}" for n in range(5)]
    assert [entry.change.change_id for entry in remote.changes(limit=3)] == ["p-0", "p-1", "p-2"]
    assert remote.changes(limit=0) == []


# --- the token ----------------------------------------------------------------------
def test_health_needs_no_token(api: RunningApi) -> None:
    assert raw(api.url, "GET", "/v1/health")[:2] == (200, {"ok": True})


ROUTES = [
    ("GET", "/v1/accounts/any", None),
    ("POST", "/v1/accounts", {"name": "mallory", "password": "long enough"}),
    ("POST", "/v1/auth", {"name": "alice", "password": "correct horse"}),
    ("GET", "/v1/accounts/1", None),
    ("GET", "/v1/accounts/by-name/alice", None),
    ("POST", "/v1/changes", change("x", 1, {}).to_json()),
    ("GET", "/v1/changes", None),
    ("GET", "/v1/accounts/1/preferences", None),
    ("GET", "/v1/devices/lamp-1/settings", None),
    ("GET", "/v1/no-such-route", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize("token", [None, "wrong", ""])
def test_every_route_but_health_needs_the_token(
    api: RunningApi, method: str, path: str, body: dict[str, Any] | None, token: str | None
) -> None:
    status, reply, response = raw(api.url, method, path, body, token=token)
    assert status == 401
    assert reply["error"] == "unauthorized"
    assert response.getheader("WWW-Authenticate", "").startswith("Bearer")
    assert not api.service.has_accounts() and api.service.changes() == []


def test_a_client_with_the_wrong_token_raises_not_answers(api: RunningApi) -> None:
    api.service.create("alice", "correct horse")
    wrong = RemoteAccountService(api.url, "not-the-token")
    calls: list[Callable[[], Any]] = [
        wrong.has_accounts,
        lambda: wrong.create("bob", "long enough"),
        # Must not look like a wrong password: that would hide the misconfiguration.
        lambda: wrong.authenticate("alice", "correct horse"),
        lambda: wrong.get(1),
        lambda: wrong.find("alice"),
        lambda: wrong.apply_change(change("x", 1, {})),
        lambda: wrong.preferences(1),
        lambda: wrong.device_settings("lamp-1"),
        wrong.changes,
    ]
    for call in calls:
        with pytest.raises(AccountServiceRefusedToken) as caught:
            call()
        assert isinstance(caught.value, AccountServiceUnavailable)
        assert api.url in str(caught.value) and "not-the-token" not in str(caught.value)


def test_the_right_token_works_with_a_trailing_newline(api: RunningApi) -> None:
    # As read from a token file.
    assert RemoteAccountService(api.url, api.token + "\n").has_accounts() is False


def test_sign_in_answers_alike_for_unknown_names_and_wrong_passwords(api: RunningApi) -> None:
    api.service.create("alice", "correct horse")
    unknown = raw(api.url, "POST", "/v1/auth", {"name": "nobody", "password": "x" * 12}, token=api.token)
    wrong = raw(api.url, "POST", "/v1/auth", {"name": "alice", "password": "x" * 12}, token=api.token)
    assert unknown[:2] == wrong[:2]
    assert unknown[0] == 401 and unknown[1]["error"] == "bad_credentials"


def test_api_refuses_an_empty_token() -> None:
    with pytest.raises(ValueError):
        create_account_api(AccountService(make_engine("sqlite://"), time.time), token="")


# --- malformed requests -------------------------------------------------------------
GOOD_CHANGE = change("good", 1, {"a": 1}).to_json()

BAD_CHANGES: list[bytes | dict[str, Any] | list[Any]] = [
    b"not json",
    b"",
    [GOOD_CHANGE],
    {},
    {k: v for k, v in GOOD_CHANGE.items() if k != "change_id"},
    {k: v for k, v in GOOD_CHANGE.items() if k != "patch"},
    {k: v for k, v in GOOD_CHANGE.items() if k != "version"},
    GOOD_CHANGE | {"kind": "firmware"},
    GOOD_CHANGE | {"kind": "device_settings", "device_id": None},
    GOOD_CHANGE | {"kind": "device_settings", "device_id": 7},
    GOOD_CHANGE | {"patch": [1, 2]},
    GOOD_CHANGE | {"version": "1"},
    GOOD_CHANGE | {"version": True},
    GOOD_CHANGE | {"version": 1.0},
    GOOD_CHANGE | {"account_id": "one"},
    GOOD_CHANGE | {"account_id": True},
    GOOD_CHANGE | {"change_id": ""},
    GOOD_CHANGE | {"change_id": 12},
    GOOD_CHANGE | {"change_id": "x" * 65},
    GOOD_CHANGE | {"device_id": "d" * 41},
    GOOD_CHANGE | {"origin": "o" * 17},
    GOOD_CHANGE | {"made_at_s": "yesterday"},
]


@pytest.mark.parametrize("body", BAD_CHANGES)
def test_malformed_change_bodies_give_400(api: RunningApi, body: bytes | dict[str, Any] | list[Any]) -> None:
    status, reply, _ = raw(api.url, "POST", "/v1/changes", body, token=api.token)
    assert status == 400
    assert reply["error"] == "bad_request" and reply["message"]
    assert api.service.changes() == []


def test_the_good_change_those_were_made_from_is_accepted(api: RunningApi) -> None:
    assert raw(api.url, "POST", "/v1/changes", GOOD_CHANGE, token=api.token)[:2] == (200, {"applied": True})
    assert raw(api.url, "POST", "/v1/changes", GOOD_CHANGE, token=api.token)[:2] == (200, {"applied": False})


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/changes?after=x", None),
        ("GET", "/v1/changes?limit=-1", None),
        ("POST", "/v1/accounts", {"name": 5, "password": "long enough"}),
        ("POST", "/v1/accounts", b"{"),
        ("POST", "/v1/auth", {"name": "alice"}),
    ],
)
def test_other_malformed_requests_give_400(
    api: RunningApi, method: str, path: str, body: bytes | dict[str, Any] | None
) -> None:
    status, reply, _ = raw(api.url, method, path, body, token=api.token)
    assert (status, reply["error"]) == (400, "bad_request")


def test_an_oversized_body_is_refused(api: RunningApi) -> None:
    huge = GOOD_CHANGE | {"patch": {"blob": "x" * MAX_BODY_BYTES}}
    status, reply, _ = raw(api.url, "POST", "/v1/changes", huge, token=api.token)
    assert status == 413 and reply["error"] == "request_entity_too_large"
    assert api.service.changes() == []


def test_create_refused_raises_account_error_with_the_message(remote: RemoteAccountService) -> None:
    with pytest.raises(AccountError, match="at least 8 characters"):
        remote.create("carol", "short")


def test_unknown_account_is_404_with_its_own_code(api: RunningApi) -> None:
    for path in ("/v1/accounts/42", "/v1/accounts/by-name/nobody"):
        status, reply, _ = raw(api.url, "GET", path, token=api.token)
        assert (status, reply["error"]) == (404, "unknown_account")


# --- when the service is not there, or not itself -----------------------------------
def every_call(client: RemoteAccountService) -> list[Callable[[], Any]]:
    return [
        client.has_accounts,
        lambda: client.create("bob", "long enough"),
        lambda: client.authenticate("bob", "long enough"),
        lambda: client.get(1),
        lambda: client.find("bob"),
        lambda: client.apply_change(change("x", 1, {})),
        lambda: client.preferences(1),
        lambda: client.device_settings("lamp-1"),
        client.changes,
    ]


def test_an_unreachable_url_raises_unavailable_quickly() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = RemoteAccountService(url, "secret-token", timeout_s=2.0)
    for call in every_call(client):
        started = time.monotonic()
        with pytest.raises(AccountServiceUnavailable) as caught:
            call()
        assert time.monotonic() - started < 1.0
        assert url in str(caught.value) and "secret-token" not in str(caught.value)


def test_a_silent_service_times_out() -> None:
    # Accepts connections (the kernel does, from the backlog) but never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        client = RemoteAccountService(f"http://127.0.0.1:{silent.getsockname()[1]}", "t", timeout_s=0.3)
        started = time.monotonic()
        with pytest.raises(AccountServiceUnavailable, match="timed out"):
            client.has_accounts()
        assert time.monotonic() - started < 2.0


class BrokenDirectory:
    """A service whose database is gone: every call fails."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def fail(*_args: Any, **_kwargs: Any) -> Any:
            raise RuntimeError("database is locked: secret detail")

        return fail


def test_a_failing_service_answers_500_and_the_client_raises_unavailable() -> None:
    with serving(create_account_api(BrokenDirectory(), token="t")) as url:  # type: ignore[arg-type]
        status, reply, _ = raw(url, "GET", "/v1/accounts/any", token="t")
        assert (status, reply["error"]) == (500, "internal_error")
        assert "secret detail" not in json.dumps(reply)
        for call in every_call(RemoteAccountService(url, "t")):
            with pytest.raises(AccountServiceUnavailable, match="HTTP 500"):
                call()


def test_a_url_that_is_not_an_account_service_is_not_taken_for_an_empty_one() -> None:
    other = Flask("not-an-account-service")
    with serving(other) as url:
        client = RemoteAccountService(url, "t")
        for call in every_call(client):
            # A 404 page is not "no such account", nor "no accounts".
            with pytest.raises(AccountServiceUnavailable):
                call()


def test_a_base_url_with_a_path_prefix(tmp_path: Path) -> None:
    service = local_service(tmp_path)
    app = create_account_api(service, token="t")
    mounted = DispatcherMiddleware(Response("not here", status=404), {"/accounts": app})
    with serving(mounted) as url:
        client = RemoteAccountService(url + "/accounts/", "t")
        alice = client.create("alice", "correct horse")
        assert client.find("alice") == alice
        assert client.url == url + "/accounts"


@pytest.mark.parametrize(
    ("url", "token"),
    [
        ("ftp://127.0.0.1:1", "t"),
        ("127.0.0.1:8000", "t"),
        ("http://user:pw@127.0.0.1:8000", "t"),
        ("http://127.0.0.1:8000/?x=1", "t"),
        ("http://127.0.0.1:99999", "t"),
        ("http://127.0.0.1:8000", ""),
        ("http://127.0.0.1:8000", "two words"),
        ("http://127.0.0.1:8000", "a\r\nX-Injected: 1"),
    ],
)
def test_bad_settings_are_config_errors(url: str, token: str) -> None:
    with pytest.raises(ConfigError):
        RemoteAccountService(url, token)


def test_the_token_never_shows_in_repr() -> None:
    client = RemoteAccountService("http://127.0.0.1:8000", "hunter2-token")
    assert "hunter2-token" not in repr(client) and "127.0.0.1:8000" in repr(client)


# --- the household: listing and removing accounts (hub.services.household uses these) -------------
def test_accounts_are_listed_and_members_removed(directory: AccountDirectory) -> None:
    assert directory.list_accounts() == []
    alice = directory.create("alice", "correct horse")
    bob = directory.create("bob", "battery staple")
    carol = directory.create("carol", "carol's password")
    listed = directory.list_accounts()
    assert [(a.id, a.name, a.is_owner) for a in listed] == [
        (alice.id, "alice", True),
        (bob.id, "bob", False),
        (carol.id, "carol", False),
    ]
    assert all(isinstance(a.created_at_s, float) and a.created_at_s > 1_700_000_000 for a in listed)
    assert directory.apply_change(change("bob-1", 1, {"theme": "dark"}, account_id=bob.id))

    with pytest.raises(AccountError, match="owner's account cannot be removed"):
        directory.remove(alice.id)
    assert directory.remove(carol.id) == carol  # the last one: SQLite would reuse its id
    assert directory.remove(carol.id) is None  # gone already
    assert directory.remove(999) is None
    assert [a.name for a in directory.list_accounts()] == ["alice", "bob"]
    assert directory.get(carol.id) is None and directory.find("carol") is None
    assert directory.authenticate("carol", "carol's password") is None

    # The name is free again; the id is not, and what was kept under it stays there.
    new_carol = directory.create("carol", "a new password")
    assert new_carol.id not in (alice.id, bob.id, carol.id) and not new_carol.is_owner
    assert directory.authenticate("carol", "a new password") == new_carol
    assert directory.authenticate("carol", "carol's password") is None
    assert directory.remove(bob.id) == bob
    assert directory.preferences(bob.id) == VersionedDocument({"theme": "dark"}, 1)
    assert [entry.change.change_id for entry in directory.changes()] == ["bob-1"]
    assert [a.name for a in directory.list_accounts()] == ["alice", "carol"]


def test_removal_over_http_answers_with_its_own_codes(api: RunningApi) -> None:
    alice = api.service.create("alice", "correct horse")
    bob = api.service.create("bob", "battery staple")
    status, body, _ = raw(api.url, "DELETE", f"/v1/accounts/{alice.id}", token=api.token)
    assert (status, body["error"]) == (400, "account_error")
    status, body, _ = raw(api.url, "DELETE", "/v1/accounts/999", token=api.token)
    assert (status, body["error"]) == (404, "unknown_account")
    status, body, _ = raw(api.url, "DELETE", f"/v1/accounts/{bob.id}")
    assert status == 401 and api.service.get(bob.id) == bob  # no token, nothing removed
    status, body, _ = raw(api.url, "GET", "/v1/accounts")
    assert status == 401
    status, body, _ = raw(api.url, "DELETE", f"/v1/accounts/{bob.id}", token=api.token)
    assert status == 200 and body["name"] == "bob"
    status, body, _ = raw(api.url, "GET", "/v1/accounts", token=api.token)
    assert status == 200 and [a["name"] for a in body["accounts"]] == ["alice"]
