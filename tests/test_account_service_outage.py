"""Nothing lost when the account service is away: it runs as its own process
(`linkhub account-service`), is killed in the middle of a stream of changes and
started again, the hub restarts in between, and every change still arrives at
the service exactly once and in order."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import HubFactory, RunningBroker, free_port, hub_pages, wait_until
from device_doubles import BootstrapDevice, DeviceThread
from hub_process import LINKHUB, linkhub_run_command

from hub.core.accounts import ChangeKind
from hub.services.remote_accounts import RemoteAccountService
from linkhub_protocol import DeviceInfo


class AccountServiceProcess:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return (self.data_dir / "account-service-token").read_text().strip()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [LINKHUB, "account-service", "--data-dir", str(self.data_dir), "--port", str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("LinkHub account service on"), line

    def kill(self) -> None:
        """As a crash would: no chance to finish anything."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def service(tmp_path: Path) -> Iterator[AccountServiceProcess]:
    running = AccountServiceProcess(tmp_path / "accounts")
    running.start()
    yield running
    running.stop()


def test_changes_survive_an_account_service_outage_and_a_hub_restart(
    make_hub: HubFactory, broker: RunningBroker, service: AccountServiceProcess, tmp_path: Path
) -> None:
    def start_hub():  # type: ignore[no-untyped-def]
        return make_hub(
            data_dir=tmp_path / "hub", account_service_url=service.url, account_service_token=service.token
        )

    hub = start_hub()
    # Accounts, and so sign-in, live in the separate service now.
    account = hub.accounts.create("alice", "correct horse battery")
    remote = RemoteAccountService(service.url, service.token)
    assert remote.authenticate("alice", "correct horse battery") == account
    device = DeviceThread(broker.port, tmp_path / "lamp.json").start()
    hub.links.approve(device.wait_code(), account.id)
    assert device.join() == 0
    device_id = device.saved_state()["device_id"]

    made: list[tuple[ChangeKind, dict]] = []

    def change(step: int) -> None:
        if step % 3 == 0:
            hub.settings.set_preferences(account.id, {"round": step}, origin="web")
            made.append((ChangeKind.PREFERENCES, {"round": step}))
        else:
            hub.settings.set_device_settings(device_id, {"step": step}, origin="cli")
            made.append((ChangeKind.DEVICE_SETTINGS, {"step": step}))

    for step in range(10):
        change(step)
    service.kill()
    for step in range(10, 20):
        change(step)
    # The devices did not wait for the account service: local first.
    assert hub.settings.device_view(device_id).settings == {"step": 19}
    assert hub.outbox.pending() > 0

    hub.stop()  # and the hub restarts while the service is still away
    hub = start_hub()
    for step in range(20, 30):
        change(step)
    service.start()
    wait_until(lambda: hub.outbox.pending() == 0, 60, what="the outbox to drain")

    arrived = [logged.change for logged in remote.changes()]
    assert [(c.kind, c.patch) for c in arrived] == made  # every change, in order
    assert len({c.change_id for c in arrived}) == len(arrived) == 30  # once each
    assert remote.preferences(account.id).document == {"round": 27}
    assert remote.device_settings(device_id).document == {"step": 29}
    versions = [c.version for c in arrived if c.kind is ChangeKind.DEVICE_SETTINGS]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)


def test_sign_in_says_plainly_when_the_account_service_is_away(make_hub: HubFactory) -> None:
    from web.config import WebConfig

    hub = make_hub(account_service_url=f"http://127.0.0.1:{free_port()}", account_service_token="t" * 32)
    app = hub_pages(hub, WebConfig(secret_key="test"))
    response = app.test_client().get("/login")
    assert response.status_code == 503
    assert b"account service is not answering" in response.data


def test_linkhub_run_starts_and_serves_devices_while_the_account_service_is_down(tmp_path: Path) -> None:
    data_dir, mqtt_port = tmp_path / "data", free_port()
    token_file = tmp_path / "token"
    token_file.write_text("t" * 32 + "\n")
    command = linkhub_run_command(
        data_dir,
        http_port=free_port(),
        mqtt_port=mqtt_port,
        extra=[
            *("--account-service", f"http://127.0.0.1:{free_port()}"),  # nobody listens there
            *("--account-service-token-file", str(token_file)),
        ],
    )
    log_path = tmp_path / "hub.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(
            lambda: "Stop with" in log_path.read_text() or process.poll() is not None,
            timeout_s=30,
            what="the hub to start (or fail)",
        )
        assert process.poll() is None, log_path.read_text()
        text = log_path.read_text()
        assert "the account service is away" in text and "Traceback" not in text
        device = BootstrapDevice(mqtt_port, DeviceInfo("Lamp", "LMP-1"))
        try:
            assert len(device.request().user_code) == 9  # devices are served
        finally:
            device.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
