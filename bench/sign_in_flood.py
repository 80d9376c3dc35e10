"""Parallel wrong sign-ins against `linkhub run`: the hub's peak memory (issue 19, item 6).

240 wrong sign-ins at once from 8 loopback addresses (127.0.0.2-9, 30 each: the
per-address limit, so every one of them reaches the password check). Each is a
GET /login (for the form's CSRF token and cookie) and a POST /login, on its own
connection. The hub's RSS is read from /proc every 10 ms; the headline is the
peak above the hub's RSS just before the flood.

    .venv/bin/python bench/sign_in_flood.py            # ~1 min
"""

from __future__ import annotations

import argparse
import http.client
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import HOST, print_machine, running_hub

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


def wrong_sign_in(port: int, source: str, name: str, statuses: Counter[int], lock: threading.Lock) -> None:
    connection = http.client.HTTPConnection(HOST, port, timeout=120, source_address=(source, 0))
    try:
        connection.request("GET", "/login")
        form = connection.getresponse()
        page = form.read().decode()
        cookie = form.getheader("Set-Cookie", "").split(";", 1)[0]
        found = _CSRF.search(page)
        assert found, "no CSRF token on /login"
        body = urlencode({"csrf_token": found.group(1), "name": name, "password": "not the password"})
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie}
        connection.request("POST", "/login", body=body, headers=headers)
        answer = connection.getresponse()
        answer.read()
        with lock:
            statuses[answer.status] += 1
    finally:
        connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=240)
    parser.add_argument("--addresses", type=int, default=8)
    args = parser.parse_args()
    print_machine()
    with running_hub() as hub:
        hub.add_account("alice")
        pid = hub.process.pid
        time.sleep(1.0)  # let the start settle before the baseline  # bench only, not a test
        before = rss_mb(pid)
        samples: list[float] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append(rss_mb(pid))
                done.wait(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        statuses: Counter[int] = Counter()
        lock = threading.Lock()
        workers = [
            threading.Thread(
                target=wrong_sign_in,
                args=(
                    hub.http_port,
                    f"127.0.0.{2 + n % args.addresses}",
                    "alice" if n % 2 else f"nobody{n}",
                    statuses,
                    lock,
                ),
            )
            for n in range(args.requests)
        ]
        started = time.monotonic()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=300)
        took_s = time.monotonic() - started
        done.set()
        sampler.join()
        after = rss_mb(pid)
        peak = max(samples)
        print(f"answers: {dict(sorted(statuses.items()))} in {took_s:.1f} s")
        print(f"hub RSS before {before:.0f} MB, peak {peak:.0f} MB, after {after:.0f} MB")
        print(f"hub VmHWM (peak since start) {rss_mb(pid, 'VmHWM'):.0f} MB")
        print(f"RESULT sign-in flood: peak {peak:.0f} MB ({peak - before:+.0f} MB over {before:.0f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
