"""Print the Python requirements of the integrations Home Assistant sets up at
every start (its bootstrap's default set) and of MQTT, one per line. No
discovery integration (zeroconf, dhcp, ssdp, bluetooth) is among them: the
tests' Home Assistant loads none, so it never multicasts on the machine's LAN.

Run with Home Assistant's own interpreter (.venv-ha/bin/python) by
scripts/bootstrap, which installs them before the tests start Home Assistant
(it lives with the tests: they are what needs Home Assistant); otherwise its
first start installs them itself from the network, inside a test's time, and a
start without them ends in recovery mode with no MQTT at all.
"""

from __future__ import annotations

import json
from pathlib import Path

from homeassistant import bootstrap, components

WANTED = {
    *bootstrap.CORE_INTEGRATIONS,
    *bootstrap.LOGGING_INTEGRATIONS,
    *bootstrap.FRONTEND_INTEGRATIONS,
    *bootstrap.RECORDER_INTEGRATIONS,
    *bootstrap.DEFAULT_INTEGRATIONS,
    "mqtt",
    "api",
    "http",
}
ROOT = Path(components.__file__).parent


def manifest(domain: str) -> dict[str, object]:
    path = ROOT / domain / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def main() -> None:
    seen: set[str] = set()
    todo = sorted(WANTED)
    requirements: set[str] = set()
    while todo:
        domain = todo.pop()
        if domain in seen:
            continue
        seen.add(domain)
        found = manifest(domain)
        requirements.update(found.get("requirements", []))  # type: ignore[arg-type]
        # `dependencies` only: an `after_dependencies` entry is set up only if configured.
        todo.extend(d for d in found.get("dependencies", []) if d not in seen)  # type: ignore[union-attr]
    print("\n".join(sorted(requirements)))


if __name__ == "__main__":
    main()
