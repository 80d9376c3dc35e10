"""The hub's own mosquitto killed under it (as the out-of-memory killer does):
noticed and reaped at once, restarted on the same port with the same logins,
devices' status never shown as online while nobody can hear them, and a hub
that gives up (exit status 1, for systemd) when its broker keeps dying."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from conftest import free_port, wait_until
from device_doubles import DeviceThread
from hub_process import linkhub_run_command
from test_device_settings import RunThread
from test_web import OWNER, control_app, page, signed_in_client

from hub.broker.managed import ManagedBroker, ManagedBrokerConfig, RestartBudget, SupervisionHooks
from hub.config.model import HubConfig
from hub.daemon import Hub
from hub.services import metrics

FLEET = 20
# Stated deadline: every device online again, and the change made during the
# outage applied on each, within this many seconds of the broker's restart.
RECOVERY_S = 30


def test_the_restart_budget_backs_off_then_gives_up_within_its_window() -> None:
    budget = RestartBudget(limit=5, window_s=60, first_delay_s=0.2, max_delay_s=1.0)
    assert [budget.failed(t) for t in (0, 1, 2, 3)] == [0.2, 0.4, 0.8, 1.0]
    assert budget.failed(4) is None  # the fifth failure within 60 s
    spaced = RestartBudget(limit=3, window_s=10)
    # Failures further apart than the window never add up to giving up.
    assert all(spaced.failed(t) == spaced.first_delay_s for t in (0, 20, 40, 60, 80))


def test_a_restart_that_fails_is_tried_again_and_counted(tmp_path: Path) -> None:
    """The port taken by someone else while the broker was down: the restart
    fails, counts against the budget, and the next try (the port free) works."""
    port = free_port()
    broker = ManagedBroker(ManagedBrokerConfig(tmp_path / "mosquitto", "127.0.0.1", port))
    broker.start()
    events: list[str] = []
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    up = threading.Event()

    def wait(seconds: float) -> bool:
        events.append(f"wait {seconds}")
        if len(events) == 2:  # the first wait: someone takes the port meanwhile
            squatter.bind(("127.0.0.1", port))
            squatter.listen()
        else:
            squatter.close()
        return False

    def up_hook() -> None:
        events.append("up")
        up.set()

    hooks = SupervisionHooks(
        down=lambda reason: events.append(f"down: {reason}"),
        up=up_hook,
        gave_up=lambda reason: events.append(f"gave up: {reason}"),
    )
    try:
        broker.supervise(hooks, RestartBudget(limit=5, window_s=60), wait=wait)
        first = broker.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert up.wait(20), events
        assert _pid_gone(first)
        assert broker.running and broker.pid != first
        assert [e.split(":")[0] for e in events] == ["down", "wait 0.2", "down", "wait 0.4", "up"]
        assert "killed by SIGKILL" in events[0]
        assert "could not be restarted" in events[2] and "already in use" in events[2]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # listening again, on the same port
    finally:
        squatter.close()
        broker.stop()
    assert not broker.running


def _own_broker_config(data_dir: Path) -> HubConfig:
    return HubConfig(
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'linkhub.db'}",
        http_host="127.0.0.1",
        mqtt_host="127.0.0.1",
        mqtt_port=free_port(),
        poll_interval_s=1,
        mdns=False,
    )


def _pid_gone(pid: int) -> bool:
    """Reaped: a zombie keeps its /proc entry until its parent waits for it."""
    return not Path(f"/proc/{pid}").exists()


def test_a_killed_broker_comes_back_with_every_device_and_the_change_made_meanwhile(tmp_path: Path) -> None:
    held = threading.Event()  # the supervisor is waiting to restart the broker
    release = threading.Event()
    waited: list[float] = []

    def broker_wait(seconds: float) -> bool:
        waited.append(seconds)
        held.set()
        release.wait(60)
        return False

    hub = Hub(_own_broker_config(tmp_path / "hub"), broker_wait=broker_wait)
    hub.start()
    runs: list[RunThread] = []
    try:
        assert hub.managed_broker is not None and hub.engine is not None
        port = hub.managed_broker.config.port
        web = signed_in_client(hub)
        account_id = hub.accounts.find(OWNER).id  # type: ignore[union-attr]
        control = control_app(hub).test_client()
        linking = [
            DeviceThread(port, tmp_path / f"device-{n}.json", name=f"Lamp {n}").start() for n in range(FLEET)
        ]
        for device in linking:
            hub.links.approve(device.wait_code(), account_id)
        for device in linking:
            assert device.join() == 0
        runs = [RunThread(tmp_path / f"device-{n}.json").start() for n in range(FLEET)]
        for run in runs:
            run.wait_for(lambda e: e["event"] == "online", "the device online")
        wait_until(
            lambda: sum(d.online for d in hub.links.list_devices()) == FLEET, what="all devices online"
        )

        killed = hub.managed_broker.pid
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        assert held.wait(15), "the supervisor noticed nothing"
        wait_until(lambda: _pid_gone(killed), what="the killed mosquitto to be reaped")
        probe = metrics.HealthProbe(hub.engine)
        wait_until(lambda: not probe().broker.ok, what="health to say the broker is down")
        health = probe().as_json()
        assert health["status"] == "degraded"
        assert "killed by SIGKILL" in health["broker"]["error"]

        # While it is down: nobody shown online, anywhere, and the page says why.
        wait_until(lambda: hub.links.list_devices()[0].status_unknown_since_s, what="status unknown")
        listed = hub.links.list_devices()
        assert len(listed) == FLEET
        assert not any(d.online for d in listed)
        api = control.get("/v1/devices").get_json()["devices"]
        assert not any(d["online"] for d in api) and all(d["status_unknown_since_s"] for d in api)
        shown = page(web.get("/devices"))
        assert "state-online" not in shown
        assert shown.count("Status unknown since") == FLEET
        assert "lost its connection to the MQTT broker" in shown
        # A change made during the outage.
        hub.settings.set_preferences(account_id, {"theme": "dark"}, origin="test")
        assert not any(d.online for d in hub.links.list_devices())

        release.set()
        deadline = time.monotonic() + RECOVERY_S
        wait_until(lambda: probe().ok, timeout_s=RECOVERY_S, what="health ok again")
        assert hub.managed_broker.pid not in (None, killed)
        assert hub.managed_broker.config.port == port
        ids = [d.device_id for d in listed]

        def converged() -> bool:
            views = [hub.settings.device_view(device_id) for device_id in ids]
            return all(
                v is not None and v.reported.get("theme") == "dark" and v.applied_version == v.desired_version
                for v in views
            ) and all(d.online for d in hub.links.list_devices())

        left_s = max(0.1, deadline - time.monotonic())
        wait_until(converged, timeout_s=left_s, what="all back with the change")
        assert "state-online" in page(web.get("/devices"))
        # The link-request responder is back too: a new device links.
        newcomer = DeviceThread(port, tmp_path / "newcomer.json", name="Newcomer").start()
        hub.links.approve(newcomer.wait_code(), account_id)
        assert newcomer.join() == 0
        assert waited == [0.2]
        values = metrics.of(hub.engine).exposition()[0].decode()
        assert "linkhub_broker_restarts_total 1.0" in values
    finally:
        release.set()
        for run in runs:
            run.stop.set()
        hub.stop()
        for run in runs:
            run.close()


def test_linkhub_run_gives_up_after_five_quick_broker_deaths_and_exits_1(tmp_path: Path) -> None:
    data_dir, mqtt_port = tmp_path / "data", free_port()
    command = linkhub_run_command(data_dir, http_port=free_port(), mqtt_port=mqtt_port)
    log_path = tmp_path / "hub.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, text=True)
    pid_file = data_dir / "broker" / "mosquitto.pid"
    try:
        wait_until(lambda: "Stop with" in log_path.read_text(), timeout_s=30, what="the hub started")
        killed: list[int] = []
        for _ in range(5):

            def restarted() -> int | None:
                try:
                    pid = int(pid_file.read_text())
                except (OSError, ValueError):
                    return None
                return pid if pid not in killed and Path(f"/proc/{pid}").exists() else None

            wait_until(restarted, timeout_s=30, what="a running mosquitto")
            pid = restarted()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        assert process.wait(timeout=30) == 1
        log_text = log_path.read_text()
        assert log_text.count("restarting it in") == 4
        assert "giving up" in log_text
        assert all(_pid_gone(pid) for pid in killed)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_unit_restarts_a_hub_that_exits_non_zero() -> None:
    unit = Path(__file__).parent.parent / "deploy" / "linkhub.service"
    assert "Restart=on-failure" in unit.read_text().splitlines()
