"""The hub's resident memory: idle, and with 1,000 linked devices online.

    .venv/bin/python bench/memory.py [--devices 1000] [--plot memory.png]

Baseline: a bare Python process that imports the modules `linkhub run` imports
(linkhub.cli, linkhub.server, hub.daemon, web) and does nothing else: the part
of the hub's memory that is the interpreter and its libraries. The hub's own
mosquitto is a separate process and is reported on its own, not counted.

Goal: under 80 MB idle and under 150 MB with 1,000 devices. The last line says
how it went. --plot draws the hub's RSS over the run (sampled every 0.5 s).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _common as common
import psutil

IMPORTS = "import linkhub.cli, linkhub.server, hub.daemon, web"
SETTLE_S = 5.0


def baseline_mb() -> float:
    """RSS of a process that only imported the hub's modules."""
    code = f"{IMPORTS}\nimport psutil, time\ntime.sleep(1)\nprint(psutil.Process().memory_info().rss)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return int(out.stdout.strip()) / (1024 * 1024)


class Sampler(threading.Thread):
    """The hub's RSS every 0.5 s, with a label for the phase, until stopped (or 1 hour)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.samples: list[tuple[float, float, str]] = []
        self.phase = "start"
        self.stop = threading.Event()
        self.began = time.monotonic()

    def run(self) -> None:
        deadline = self.began + 3600
        while not self.stop.wait(0.5) and time.monotonic() < deadline:
            try:
                rss = self.process.memory_info().rss / (1024 * 1024)
            except psutil.Error:
                return
            self.samples.append((time.monotonic() - self.began, rss, self.phase))


def settle(pid: int) -> float:
    time.sleep(SETTLE_S)
    return common.rss_mb(pid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--plot", metavar="FILE", help="write a PNG of the hub's RSS over the run")
    args = parser.parse_args()
    common.print_machine()
    base = baseline_mb()
    print(f"baseline: bare Python importing the hub's modules ({IMPORTS}): {base:.1f} MB")
    with common.running_hub() as hub, tempfile.TemporaryDirectory(prefix="fleet-") as states:
        pid = hub.process.pid
        sampler = Sampler(pid)
        sampler.start()
        hub.add_account("alice")
        idle = settle(pid)
        mosquitto_pid = hub.mosquitto_pid
        mosq_idle = common.rss_mb(mosquitto_pid) if mosquitto_pid else float("nan")
        print(
            f"hub idle: {idle:.1f} MB RSS (+{idle - base:.1f} MB over the baseline); "
            f"mosquitto {mosq_idle:.1f} MB"
        )
        sampler.phase = "linking"
        fleet, _log = common.linked_fleet(hub, args.devices, "alice", Path(states))
        try:
            sampler.phase = "online"
            loaded = settle(pid)
            peak = max((rss for _, rss, phase in sampler.samples if phase == "linking"), default=0.0)
            start_peak = max((rss for _, rss, phase in sampler.samples if phase == "start"), default=0.0)
            mosq = common.rss_mb(mosquitto_pid) if mosquitto_pid else float("nan")
            me = psutil.Process()
            print(
                f"hub with {args.devices} linked devices online: {loaded:.1f} MB RSS "
                f"(+{loaded - idle:.1f} MB over idle, "
                f"{(loaded - idle) * 1024 / args.devices:.1f} KB a device); "
                f"peak while linking {peak:.1f} MB; mosquitto {mosq:.1f} MB"
            )
            if start_peak > idle + 20:
                print(
                    f"peak before linking {start_peak:.1f} MB: `linkhub account add` hashes the password "
                    "with argon2 (64 MiB memory cost) inside the hub, which gives it back afterwards"
                )
            print(
                f"the fleet itself (this process, {args.devices} devices): "
                f"{me.memory_info().rss / 2**20:.1f} MB RSS, {me.num_threads()} threads, "
                f"{me.num_fds()} open descriptors"
            )
        finally:
            fleet.close()
        sampler.stop.set()
    if args.plot:
        plot_rss(args.plot, sampler.samples, base, args.devices)
    met = idle < 80 and loaded < 150
    print(
        f"RESULT memory: hub idle {idle:.1f} MB = {idle / base:.2f}x baseline {base:.1f} MB (goal < 80 MB); "
        f"with {args.devices} devices {loaded:.1f} MB = {loaded / base:.2f}x baseline (goal < 150 MB); "
        f"{'goals met' if met else 'GOAL MISSED'}"
    )
    return 0


def plot_rss(path: str, samples: list[tuple[float, float, str]], base: float, devices: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    for phase in dict.fromkeys(p for _, _, p in samples):
        points = [(t, rss) for t, rss, p in samples if p == phase]
        ax.plot([t for t, _ in points], [rss for _, rss in points], label=f"hub ({phase})")
    ax.axhline(base, linestyle="--", color="grey", label="baseline: bare Python + imports")
    ax.axhline(80, linestyle=":", color="green", label="goal idle (80 MB)")
    ax.axhline(150, linestyle=":", color="red", label=f"goal with {devices} devices (150 MB)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("RSS, MB")
    ax.set_title("LinkHub resident memory")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot written to {path}")


if __name__ == "__main__":
    raise SystemExit(main())
