"""Link requests through the hub against the same load on a bare echo responder.

    .venv/bin/python bench/link.py [--clients 16] [--requests 2000] [--rounds 5] [--plot link.png]

K clients (the fleet's MQTT client, firmware_sim.fleet) each send a link
request, wait for the answer and send the next (closed loop), until N answers
came or the time limit ran out. Against the hub, each request is a new
request_id, so each answer is a new user code (a database row and a PendingReply).
The floor is the same load, same clients, same payloads, same broker, sent to a
responder (bench/echo_responder.py, its own process like the hub) that only
echoes each request to its Response Topic: no hub can answer faster than
that.

The two take turns: R rounds of N/R requests each, the floor first in rounds
1, 3, 5, ... and the hub first in the others, so that a few seconds of other
work on a shared machine land on both rather than on one (docs/performance.md).
Each figure is over all rounds: answers over the time spent answering them, and
the percentiles of every latency.

Goal: the hub's throughput at least 70% of the floor's, its p99 at most twice
the floor's. The last line says how it went.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import _common as common
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware_sim import keys
from firmware_sim.fleet import FleetMqttClient, NetLoop
from firmware_sim.mqtt_client import Incoming, Message
from linkhub_protocol import (
    BOOTSTRAP_PASSWORD,
    BOOTSTRAP_USERNAME,
    DeviceInfo,
    LinkRequest,
    encode,
    link_request_topic,
    reply_topic,
)

FLOOR_TOPIC = "linkhub/v1/bench/link-request"
WARMUP = 50


@dataclass
class Run:
    label: str
    spans: list[tuple[float, float]] = field(default_factory=list)  # (sent, answered), monotonic
    stalled: int = 0  # clients still waiting for an answer when time ran out
    elapsed_s: float = 0.0  # from the first timed request to the last answer, summed over rounds

    @property
    def latencies_s(self) -> list[float]:
        return [done - sent for sent, done in self.spans]

    @property
    def throughput(self) -> float:
        """Timed answers per second of timed answering."""
        return len(self.spans) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def add(self, other: Run) -> None:
        """Another round's answers."""
        self.elapsed_s += other.elapsed_s
        self.spans.extend(other.spans)
        self.stalled += other.stalled


class _LoadClient:
    """One device of the load: a request in flight at a time, the next one sent
    from the network thread the moment the answer arrives."""

    def __init__(self, load: _Load, net: NetLoop, username: str, password: str) -> None:
        self.load = load
        self.token = secrets.token_urlsafe(24)
        self.reply_to = reply_topic(self.token)
        self.request_id = ""
        self.sent = 0.0
        # One key per client: every request is new (a new request_id) all the same.
        self.public_key = keys.public_key(keys.new_private_key())
        client_id = f"bench-{secrets.token_hex(6)}"
        # The hub takes requests under the client's own id; the floor on one topic.
        self.topic = link_request_topic(client_id) if load.topic is None else load.topic
        self.client = FleetMqttClient(
            net,
            client_id=client_id,
            username=username,
            password=password,
            mqtt5=True,
            will=None,
            inbox=_Answers(self),
        )

    def send(self) -> bool:
        if not self.load.take():
            return False
        request = LinkRequest(secrets.token_urlsafe(24), self.reply_to, self.load.device, self.public_key)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_to
        props.CorrelationData = request.request_id.encode()
        self.request_id = request.request_id
        self.sent = time.monotonic()
        self.client.paho.publish(self.topic, encode(request), qos=1, properties=props)
        return True

    def answered(self, payload: bytes) -> None:
        now = time.monotonic()
        if json.loads(payload).get("request_id") != self.request_id:
            return
        self.request_id = ""
        self.load.record(self.sent, now)
        if now >= self.load.deadline or not self.send():
            self.load.client_done()


class _Answers(queue.Queue[Incoming]):
    """The inbox of a load client: answers are handled where they arrive."""

    def __init__(self, owner: _LoadClient) -> None:
        super().__init__()
        self.owner = owner

    def put(self, item: Incoming, block: bool = True, timeout: float | None = None) -> None:
        if isinstance(item, Message):
            self.owner.answered(item.payload)


class _Load:
    def __init__(self, topic: str | None, requests: int, limit_s: float) -> None:
        self.topic = topic
        self.device = DeviceInfo(name="Bench Lamp", model="BENCH-1")
        self.lock = threading.Lock()
        self.to_send = requests + WARMUP
        self.sent_count = 0
        self.spans: list[tuple[float, float]] = []
        self.answers = 0
        self.deadline = time.monotonic() + limit_s
        self.idle_clients = 0
        self.finished = threading.Event()
        self.n_clients = 0

    def take(self) -> bool:
        with self.lock:
            if self.to_send <= 0:
                return False
            self.to_send -= 1
            return True

    def record(self, sent: float, answered: float) -> None:
        with self.lock:
            self.answers += 1
            if self.answers > WARMUP:  # the first WARMUP answers are not timed
                self.spans.append((sent, answered))

    def client_done(self) -> None:
        with self.lock:
            self.idle_clients += 1
            if self.idle_clients == self.n_clients:
                self.finished.set()


def load(
    label: str,
    port: int,
    username: str,
    password: str,
    topic: str | None,
    *,
    clients: int,
    requests: int,
    limit_s: float,
) -> Run:
    """Closed loop: `clients` devices, one request in flight each, `requests` timed.
    `topic` None: each client publishes link requests under its own client id.

    All clients share one network thread (firmware_sim.fleet.NetLoop) and answer
    on it, so the load generator never waits on Python's GIL between threads:
    with a thread per client, hand-offs alone added tens of milliseconds.
    """
    net = NetLoop()
    work = _Load(topic, requests, limit_s + 30)
    work.n_clients = clients
    load_clients = [_LoadClient(work, net, username, password) for _ in range(clients)]
    try:
        for each in load_clients:
            each.client.connect(common.HOST, port)
            each.client.subscribe(each.reply_to)
        work.deadline = time.monotonic() + limit_s
        for each in load_clients:
            if not each.send():
                work.client_done()
        work.finished.wait(limit_s + 10)
        run = Run(label, spans=list(work.spans))
        if run.spans:
            run.elapsed_s = max(done for _, done in run.spans) - min(sent for sent, _ in run.spans)
        run.stalled = sum(bool(each.request_id) for each in load_clients)
        return run
    finally:
        for each in load_clients:
            each.client.close()
        net.stop()


@contextlib.contextmanager
def echo_responder(port: int, username: str, password: str, limit_s: float) -> Iterator[None]:
    """bench/echo_responder.py in its own process, until the block ends."""
    script = Path(__file__).with_name("echo_responder.py")
    process = subprocess.Popen(
        [sys.executable, str(script), str(port), username, FLOOR_TOPIC, "--limit", str(limit_s)],
        env={**os.environ, "BENCH_MQTT_PASSWORD": password},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError("the echo responder did not start")
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def describe(run: Run) -> str:
    return (
        f"{run.label}: {run.throughput:.0f} requests/s, {common.describe_ms(run.latencies_s)}, "
        f"unanswered at the time limit={run.stalled}"
    )


def report(run: Run) -> None:
    print(describe(run))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16, help="concurrent devices (default 16)")
    parser.add_argument("--requests", type=int, default=2000, help="answers to time per side (2000)")
    parser.add_argument("--rounds", type=int, default=5, help="turns each side takes (5)")
    parser.add_argument("--limit", type=float, default=120.0, help="seconds per turn at most (120)")
    parser.add_argument("--plot", metavar="FILE", help="write a PNG of both latency distributions")
    args = parser.parse_args()
    common.print_machine()
    per_round = max(1, args.requests // args.rounds)
    print(
        f"load: {args.clients} clients, closed loop, {per_round * args.rounds} timed requests a side "
        f"in {args.rounds} rounds (+{WARMUP} warm-up a turn), floor and hub taking turns"
    )
    floor, hub_run = Run("floor (echo responder)"), Run("hub (link request -> code)")
    with common.running_hub() as hub:
        dynsec = common.DynSec(hub)
        username, password = dynsec.bench_identity()
        dynsec.close()
        sides = {
            floor.label: (hub.mqtt_port, username, password, FLOOR_TOPIC),
            hub_run.label: (hub.mqtt_port, BOOTSTRAP_USERNAME, BOOTSTRAP_PASSWORD, None),
        }
        limit_s = (args.limit + 60) * args.rounds * 2
        with echo_responder(hub.mqtt_port, username, password, limit_s):
            for number in range(args.rounds):
                order = (floor, hub_run) if number % 2 == 0 else (hub_run, floor)
                for side in order:
                    port, user, secret, topic = sides[side.label]
                    turn = load(
                        side.label, port, user, secret, topic,
                        clients=args.clients, requests=per_round, limit_s=args.limit,
                    )  # fmt: skip
                    print(f"  round {number + 1}, {describe(turn)}", flush=True)
                    side.add(turn)
    report(floor)
    report(hub_run)
    if args.plot:
        common.plot(
            args.plot,
            f"link request round trip, {args.clients} clients",
            {floor.label: floor.latencies_s, hub_run.label: hub_run.latencies_s},
        )
    ratio = hub_run.throughput / floor.throughput if floor.throughput else 0.0
    p99_hub = common.percentile(hub_run.latencies_s, 99) * 1000
    p99_floor = common.percentile(floor.latencies_s, 99) * 1000
    p99_ratio = p99_hub / p99_floor if p99_floor else float("inf")
    met = ratio >= 0.70 and p99_ratio <= 2.0
    print(
        f"RESULT link: hub {hub_run.throughput:.0f} req/s = {ratio:.0%} of floor "
        f"{floor.throughput:.0f} req/s "
        f"(goal >= 70%); p99 {p99_hub:.2f} ms = {p99_ratio:.2f}x floor {p99_floor:.2f} ms (goal <= 2x); "
        f"{'goals met' if met else 'GOAL MISSED'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
