"""The CLI when the hub dies in the middle of a request: a plain message saying
what is known (a change may or may not have been applied) and how to check, not
a `RemoteDisconnected` traceback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from linkhub import cli, control_client


@pytest.fixture
def dying_hub(tmp_path: Path) -> Iterator[tuple[Path, list[bytes]]]:
    """A control socket whose hub reads the request, then dies without answering."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(data_dir / "hub.sock"))
    server.listen(4)
    received: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                received.append(connection.recv(65536))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield data_dir, received
    server.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
    server.close()
    thread.join(5)


def test_a_change_cut_off_says_it_may_or_may_not_be_applied(dying_hub: tuple[Path, list[bytes]]) -> None:
    """Any change the CLI sends (the commands that change something add what to
    check for their own change: tests/test_identities.py)."""
    data_dir, received = dying_hub
    with pytest.raises(control_client.HubWentAway) as went:
        control_client.call(data_dir / "hub.sock", "POST", "/v1/settings/device", {"device_id": "dev-1"})
    said = str(went.value)
    assert received and received[0].startswith(b"POST /v1/settings/device")
    assert "may or may not have been applied" in said
    assert "linkhub activity" in said and "linkhub devices" in said


def test_unlink_cut_off_says_what_to_check(
    dying_hub: tuple[Path, list[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir, received = dying_hub
    assert cli.main(["devices", "unlink", "dev-1", "--data-dir", str(data_dir)]) == 1
    err = capsys.readouterr().err
    assert received and received[0].startswith(b"DELETE /v1/devices/dev-1")
    assert "Traceback" not in err and "may or may not have been done" in err


def test_a_question_cut_off_says_nothing_was_changed(
    dying_hub: tuple[Path, list[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir, _received = dying_hub
    assert cli.main(["devices", "--json", "--data-dir", str(data_dir)]) == 1
    err = capsys.readouterr().err
    assert "Nothing was changed" in err and "may or may not" not in err


def test_linkhub_devices_says_the_status_is_unknown_while_the_hub_has_no_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    since = datetime(2026, 1, 2, 7, 41).timestamp()  # local time, as the CLI shows it
    device = {
        "device_id": "dev-1",
        "name": "Lamp",
        "model": "L1",
        "linked_at_s": since - 3600,
        "online": False,
        "status_unknown_since_s": since,
    }
    monkeypatch.setattr(control_client, "call", lambda *_a, **_k: {"devices": [device]})
    assert cli.main(["devices", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "unknown since 07:41 (the hub has no broker connection)" in out and "online" not in out
