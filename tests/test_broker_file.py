"""The hub's own mosquitto keeps every login through a full disk (issue 18 §3).

mosquitto 2.0.11 rewrites `dynamic-security.json` in place, so a full data
directory cuts it short, and the next start used to lose every login (admin,
hub, bootstrap, devices). Here a small tmpfs is the data directory, filled
until that happens; the hub refuses the change that was not saved, /healthz
says so, and the next start restores the last good copy with every login.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port
from device_doubles import BootstrapDevice, DeviceThread, RawClient
from test_web import PASSWORD

from hub.broker.dynsec import DynSecAdmin
from hub.broker.managed import (
    ADMIN_USERNAME,
    DYNSEC_FILE,
    DYNSEC_LAST_GOOD_FILE,
    DynsecFileGuard,
    initial_dynsec_config,
)
from hub.config.model import HubConfig
from hub.daemon import Hub
from hub.errors import BrokerAdminError, BrokerUnavailable, LinkHubError
from hub.services import metrics
from linkhub_protocol import ApprovedReply, DeviceInfo

PAGE = 4096  # tmpfs allocates whole pages (getconf PAGESIZE on x86-64 and the Pi)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the test machines run the suite as root)")
    mount = tmp_path / "data"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def hub_on(data_dir: Path, database: Path, port: int) -> Hub:
    """A hub running its own mosquitto with its data directory (broker/ included) in
    `data_dir`; the database elsewhere, so that only the broker meets the full disk."""
    return Hub(
        HubConfig(
            data_dir=data_dir,
            database_url=f"sqlite:///{database}",
            http_host="127.0.0.1",
            mqtt_host="127.0.0.1",
            mqtt_port=port,
            poll_interval_s=1,
            mdns=False,
            # The hub's own free-space guard (hub/store/engine.py SpaceGuard) would refuse
            # every write long before this small disk fills; off, so that the
            # broker's file meets the full disk as it would on a disk filled by
            # something else between the guard's check and mosquitto's save.
            min_free_space_mb=0,
        )
    )


def fill(directory: Path) -> Path:
    """Write a file until the file system refuses more: not one page is left."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as out:
        for chunk in (64 * 1024, PAGE):
            while True:
                try:
                    out.write(b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    return filler


def pad_to_page_end(hub: Hub, live: Path) -> None:
    """Bring the logins file to just under a page boundary with a role another tool
    could have made: the next device's login then needs a page more than the file
    had, which a full disk does not have once mosquitto truncated the file."""
    admin = hub.broker_admin
    assert admin is not None
    admin.call_with_retry([{"command": "createRole", "rolename": "padding", "textname": "x"}])
    size = live.stat().st_size
    target = (size // PAGE + 1) * PAGE - 64
    admin.call_with_retry(
        [{"command": "modifyRole", "rolename": "padding", "textname": "x" * (1 + target - size)}]
    )
    assert PAGE - 256 < live.stat().st_size % PAGE < PAGE, live.stat().st_size


class HubDied(BaseException):
    """The hub process is gone: nothing after this point runs."""


class KilledAfterTheBrokerWrote:
    """A hub killed right after the broker made a device's login (and tried to save it)."""

    def __init__(self, admin: DynSecAdmin) -> None:
        self._admin = admin

    def issue_device(self, device_id: str, password: str) -> None:
        self._admin.issue_device(device_id, password)
        raise HubDied

    def revoke_device(self, device_id: str) -> None:
        raise LinkHubError("the hub is dead")

    def device_clients(self) -> set[str]:
        raise LinkHubError("the hub is dead")


def can_connect(port: int, username: str, password: str, client_id: str | None = None) -> bool:
    client = RawClient(port, username, password, client_id=client_id)
    try:
        return not client.connack_reason.is_failure
    finally:
        client.close()


def test_a_full_disk_loses_no_broker_login(
    small_disk: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    database = tmp_path / "linkhub.db"
    live = small_disk / "broker" / DYNSEC_FILE
    hub = hub_on(small_disk, database, port)
    newcomer: BootstrapDevice | None = None
    hub.start()
    try:
        alice = hub.accounts.create("alice", PASSWORD).id
        linked = []
        for name in ("Kitchen Lamp", "Porch Light"):
            device = DeviceThread(port, tmp_path / f"{name}.json", name=name).start()
            hub.links.approve(device.wait_code(), alice)
            assert device.join() == 0
            linked.append(device.saved_state()["mqtt"])
        pad_to_page_end(hub, live)
        hub.check_broker_file()  # what every identity change does: the padding is in the copy

        filler = fill(small_disk)
        newcomer = BootstrapDevice(port, DeviceInfo(name="Desk Fan", model="FAN-2"))
        code = newcomer.request().user_code
        # The broker cannot save the newcomer's login: the approval is refused, not
        # reported done while the next start would not know the device.
        with pytest.raises(BrokerAdminError, match="could not save the change"):
            hub.links.approve(code, alice)
        assert len(hub.links.list_devices(alice)) == 2
        assert hub.engine is not None
        health = metrics.HealthProbe(hub.engine)
        try:
            report = health().as_json()
        finally:
            health.close()
        assert report["status"] == "degraded"
        # Removing the newcomer's login fitted again, so the file is whole: the space is what is left to say.
        assert report["broker"]["storage_error"].startswith("low space: 0 bytes free")

        # Again, and the hub is killed right after the broker's save was cut short:
        # the file stays as mosquitto 2.0.11 leaves it.
        assert hub.broker_admin is not None
        hub.links.context.issuer = KilledAfterTheBrokerWrote(hub.broker_admin)
        with pytest.raises(HubDied):
            hub.links.approve(code, alice)
        with pytest.raises(ValueError):
            json.loads(live.read_bytes())
        assert live.stat().st_size % PAGE == 0  # cut at a page, as tmpfs gave them out
    finally:
        hub.stop()
        if newcomer is not None:
            newcomer.close()

    filler.unlink()  # the person frees space, and starts the hub again
    caplog.set_level(logging.WARNING, logger="hub.broker.managed")
    again = hub_on(small_disk, database, port)
    again.start()
    try:
        assert "restored the last good copy" in caplog.text
        json.loads(live.read_bytes())
        assert (live.parent / f"{DYNSEC_FILE}.broken").exists()
        # Every login: the admin and the hub's own (it started), the bootstrap
        # (a new device links), and each linked device with what it saved.
        admin_password = (live.parent / "admin-password").read_text().strip()
        assert can_connect(port, ADMIN_USERNAME, admin_password)
        for mqtt in linked:
            assert can_connect(port, mqtt["username"], mqtt["password"], mqtt["client_id"])
        newcomer = BootstrapDevice(port, DeviceInfo(name="Desk Fan", model="FAN-2"))
        approved = again.links.approve(newcomer.request().user_code, alice)
        reply = newcomer.wait_reply()
        assert isinstance(reply, ApprovedReply) and reply.device_id == approved.device_id
        credentials = newcomer.credentials(reply)
        assert can_connect(port, credentials.username, credentials.password, credentials.client_id)
        assert again.engine is not None
        health = metrics.HealthProbe(again.engine)
        try:
            assert "storage_error" not in health().as_json()["broker"]
        finally:
            health.close()
    finally:
        again.stop()
        newcomer.close()


def test_a_broken_file_without_a_copy_stops_the_start_and_says_what_to_do(tmp_path: Path) -> None:
    guard = DynsecFileGuard(tmp_path)
    (tmp_path / DYNSEC_FILE).write_bytes(b'{"clients": [{"username": "dev-')
    with pytest.raises(BrokerUnavailable) as stopped:
        guard.restore_if_broken()
    message = str(stopped.value)
    assert "not valid JSON" in message and "there is no last good copy" in message
    assert "Free space" in message and "linkhub restore" in message
    assert (tmp_path / DYNSEC_FILE).read_bytes().startswith(b'{"clients"')  # left as it was


def test_the_last_good_copy_is_written_whole_and_replaced_only_by_a_good_file(tmp_path: Path) -> None:
    guard = DynsecFileGuard(tmp_path)
    live, copy = tmp_path / DYNSEC_FILE, tmp_path / DYNSEC_LAST_GOOD_FILE
    good = json.dumps(initial_dynsec_config("secret")).encode()
    live.write_bytes(good)
    guard.check()
    assert copy.read_bytes() == good and copy.stat().st_mode & 0o777 == 0o600
    live.write_bytes(good[:100])
    with pytest.raises(BrokerAdminError):
        guard.check()
    assert copy.read_bytes() == good  # the broken file never becomes the copy
    assert guard.storage_problem() is not None
    guard.restore_if_broken()
    assert live.read_bytes() == good and guard.storage_problem() is None
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind
