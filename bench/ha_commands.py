"""A command from Home Assistant to a device and its new state back, through the
hub, against the same round trip published straight to the device (issue 15).

    .venv/bin/python bench/ha_commands.py [--commands 200] [--rounds 5]   # ~30 s

Setup: a hub (`linkhub run`, its own mosquitto), an account, Home Assistant's
login (`linkhub homeassistant --json`), and a simulated lamp
(firmware_sim, `--profile lamp`) linked and running in this process.

- Through the hub: a client on Home Assistant's login publishes `ON`/`OFF` on the
  lamp's command topic under linkhub/v1/ha/ (what Home Assistant publishes when
  its light is switched), the hub checks it against the lamp's description,
  records it and sends the LinkHub command; the lamp answers with its state on
  its own topic, which the same client reads (as Home Assistant does). Timed from
  the publish to the state message saying the new value.
- Baseline, direct: a client with the hub's own rights publishes the same LinkHub
  command straight to the lamp's command topic and waits for the same state
  message: the broker and the device, without the hub.

The two take turns, `--commands` round trips each per round, one at a time.
The goal (issue 15): p99 through the hub at most 2x the direct p99.
"""

from __future__ import annotations

import argparse
import json
import queue
import secrets
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho

from bench._common import BareClient, DynSec, describe_ms, percentile, print_machine, running_hub
from firmware_sim.link import link
from firmware_sim.run import run
from hub.core import home_assistant as ha
from linkhub_protocol import COMMAND, STATE, Command, DeviceInfo, device_topic, encode

ACCOUNT = "bench"
ANSWER_TIMEOUT_S = 10.0


class StateWatch:
    """The lamp's state messages, as they come off the measuring client's socket."""

    def __init__(self) -> None:
        self.states: queue.Queue[tuple[float, bool]] = queue.Queue()

    def on_message(self, message: paho.MQTTMessage) -> None:
        at = time.perf_counter()
        if message.payload:
            self.states.put((at, bool(json.loads(message.payload)["state"]["light"]["on"])))

    def wait_for(self, on: bool) -> float:
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while True:
            at, value = self.states.get(timeout=max(deadline - time.monotonic(), 0.001))
            if value == on:
                return at

    def drain(self) -> None:
        while not self.states.empty():
            self.states.get_nowait()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--commands", type=int, default=200, help="round trips per path per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print_machine()
    # A lamp switched as fast as the bench goes sends a state per command: far more
    # than a device's default limit (120 a minute), which would answer slow_down.
    with running_hub(["--device-states", "1000000 per minute"]) as hub:
        hub.add_account(ACCOUNT)
        login = json.loads(hub.cli("homeassistant", "--json").stdout)
        state_path = hub.data_dir.parent / "lamp.json"

        def approve(event: dict[str, object]) -> None:
            if event.get("event") == "code":
                hub.control("POST", "/v1/link/approve", {"code": event["user_code"], "account": ACCOUNT})

        info = DeviceInfo(name="Bench Lamp", model="LMP-1")
        if link("127.0.0.1", hub.mqtt_port, info, state_path, on_event=approve, profile="lamp") != 0:
            raise SystemExit("the lamp did not link")
        device_id = json.loads(state_path.read_text())["device_id"]
        stop = threading.Event()
        online = threading.Event()
        lamp = threading.Thread(
            target=run,
            args=(state_path,),
            kwargs={"on_event": lambda e: online.set() if e.get("event") == "online" else None, "stop": stop},
            daemon=True,
        )
        lamp.start()
        if not online.wait(30):
            raise SystemExit("the lamp did not come online")

        state_topic = device_topic(device_id, STATE)
        through_watch, direct_watch = StateWatch(), StateWatch()
        home_assistant = BareClient(
            hub.mqtt_port, login["username"], login["password"], through_watch.on_message
        )
        home_assistant.subscribe(state_topic)
        dynsec = DynSec(hub)
        username, password = dynsec.bench_identity()
        direct = BareClient(hub.mqtt_port, username, password, direct_watch.on_message)
        direct.subscribe(state_topic)
        time.sleep(0.5)  # the retained state both subscriptions get first: dropped below
        ha_topic = ha.command_topic(device_id, "light")
        command_topic = device_topic(device_id, COMMAND)

        through: list[float] = []
        straight: list[float] = []
        on = True
        for round_number in range(args.rounds):
            for watch in (through_watch, direct_watch):
                watch.drain()
            for _ in range(args.commands):
                on = not on
                started = time.perf_counter()
                home_assistant.publish(ha_topic, b"ON" if on else b"OFF")
                through.append(through_watch.wait_for(on) - started)
            direct_watch.drain()
            for _ in range(args.commands):
                on = not on
                command = Command(secrets.token_urlsafe(16), "light", {"on": on})
                started = time.perf_counter()
                direct.publish(command_topic, encode(command))
                straight.append(direct_watch.wait_for(on) - started)
            through_watch.drain()
            print(f"round {round_number + 1}: through the hub {describe_ms(through[-args.commands :])}")
            print(f"round {round_number + 1}: direct          {describe_ms(straight[-args.commands :])}")
        stop.set()
        lamp.join(10)
        for client in (home_assistant, direct):
            client.close()
        dynsec.close()

    print(f"through the hub (Home Assistant's topic): {describe_ms(through)}")
    print(f"direct to the device (baseline):          {describe_ms(straight)}")
    ratio_p50 = percentile(through, 50) / percentile(straight, 50)
    ratio_p99 = percentile(through, 99) / percentile(straight, 99)
    verdict = "met" if ratio_p99 <= 2.0 else "NOT met"
    p99_ms = percentile(through, 99) * 1000
    print(
        f"RESULT Home Assistant command round trip through the hub: p99 {p99_ms:.2f} ms "
        f"= {ratio_p99:.2f}x the direct p99 ({percentile(straight, 99) * 1000:.2f} ms); "
        f"p50 {ratio_p50:.2f}x; goal p99 <= 2x: {verdict}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
