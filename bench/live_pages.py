"""What the live parts of the phone pages cost the hub (issue 14): phones polling
/link/waiting.json, the list of devices waiting to be linked, as web/static/link.js
does every 3 s while /link is open.

`--waiting` (10) devices ask to be linked (MQTT link requests on the bootstrap
login, left waiting); `--phones` (8) signed-in sessions then each fetch the
JSON in a closed loop, on kept-alive connections, for `--seconds` (10). The
baseline, in the same run against the same hub, is the same phones reloading
the whole /link page, which is what a person without the live list would do to
see a new device. The headline is the JSON's throughput and the number of
phones one hub serves at one poll per 3 s each.

    .venv/bin/python bench/live_pages.py        # ~40 s
"""

from __future__ import annotations

import argparse
import http.client
import re
import secrets
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench._common import HOST, describe_ms, print_machine, running_hub
from firmware_sim import keys
from linkhub_protocol import (
    BOOTSTRAP_PASSWORD,
    BOOTSTRAP_USERNAME,
    DeviceInfo,
    LinkRequest,
    encode,
    link_request_topic,
    reply_topic,
)

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
POLL_EVERY_S = 3.0  # web/static/link.js, WAITING_EVERY_MS
PASSWORD = "correct horse battery staple"


def ask_to_link(port: int, count: int) -> list[paho.Client]:
    """`count` link requests left waiting; their clients stay connected."""
    clients = []
    for n in range(count):
        client_id = f"bench-live-{n}-{secrets.token_hex(4)}"
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        client.username_pw_set(BOOTSTRAP_USERNAME, BOOTSTRAP_PASSWORD)
        client.connect(HOST, port)
        client.loop_start()
        reply_to = reply_topic(secrets.token_urlsafe(24))
        info = DeviceInfo(f"Bench Lamp {n} in the long hallway by the stairs", "LH-Lamp 2", "192.168.1.42")
        request = LinkRequest(
            secrets.token_urlsafe(24), reply_to, info, keys.public_key(keys.new_private_key())
        )
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = reply_to
        props.CorrelationData = request.request_id.encode()
        client.publish(
            link_request_topic(client_id), encode(request), qos=1, properties=props
        ).wait_for_publish(10)
        clients.append(client)
    return clients


def signed_in(port: int) -> http.client.HTTPConnection:
    """A kept-alive connection with a signed-in session's cookie as its default header."""
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    connection.request("GET", "/login")
    form = connection.getresponse()
    page = form.read().decode()
    cookie = form.getheader("Set-Cookie", "").split(";", 1)[0]
    found = _CSRF.search(page)
    assert found, "no CSRF token on /login"
    body = urlencode({"csrf_token": found.group(1), "name": "alice", "password": PASSWORD})
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie}
    connection.request("POST", "/login", body=body, headers=headers)
    answer = connection.getresponse()
    answer.read()
    assert answer.status == 302, answer.status
    connection.cookie = answer.getheader("Set-Cookie", cookie).split(";", 1)[0]  # type: ignore[attr-defined]
    return connection


def closed_loop(connections: list[http.client.HTTPConnection], path: str, seconds: float) -> list[float]:
    """Every connection fetches `path` again as soon as it has the answer, for `seconds`."""
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def phone(connection: http.client.HTTPConnection) -> None:
        mine = []
        while time.monotonic() < deadline:
            started = time.monotonic()
            connection.request("GET", path, headers={"Cookie": connection.cookie})  # type: ignore[attr-defined]
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 200, (path, answer.status)
            mine.append(time.monotonic() - started)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=phone, args=(c,)) for c in connections]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiting", type=int, default=10)
    parser.add_argument("--phones", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print_machine()
    with running_hub() as hub:
        hub.add_account("alice", PASSWORD)
        devices = ask_to_link(hub.mqtt_port, args.waiting)
        try:
            connections = [signed_in(hub.http_port) for _ in range(args.phones)]
            first = connections[0]
            first.request("GET", "/link/waiting.json", headers={"Cookie": first.cookie})  # type: ignore[attr-defined]
            listed = first.getresponse().read().decode().count('"confirm_url"')
            print(f"{listed} devices waiting, {args.phones} phones, {args.seconds:.0f} s per measurement")
            json_s = closed_loop(connections, "/link/waiting.json", args.seconds)
            page_s = closed_loop(connections, "/link", args.seconds)
        finally:
            for device in devices:
                device.loop_stop()
                device.disconnect()
    json_rps, page_rps = len(json_s) / args.seconds, len(page_s) / args.seconds
    print(f"/link/waiting.json: {json_rps:.0f} requests/s, {describe_ms(json_s)}")
    print(f"/link (a reload):   {page_rps:.0f} requests/s, {describe_ms(page_s)}")
    phones = json_rps * POLL_EVERY_S
    print(
        f"RESULT live list: {json_rps:.0f} polls/s = {phones:.0f} phones polling every {POLL_EVERY_S:.0f} s; "
        f"{json_rps / page_rps:.2f}x the requests/s of reloading /link (baseline {page_rps:.0f}/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
