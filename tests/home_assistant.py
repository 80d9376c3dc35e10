"""A real Home Assistant core for the tests, driven the way a person's would be:
its MQTT integration configured as a config entry (what the UI writes), its REST
API to read entity states and call services, its template API to ask about
devices. Installed by scripts/bootstrap in .venv-ha (its own pinned versions).

Home Assistant's documents: https://developers.home-assistant.io/docs/api/rest/
(REST), .../docs/auth_api (the login flow and tokens), and the onboarding
endpoint the first-start page uses.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HASS = ROOT / ".venv-ha" / "bin" / "hass"
USERNAME = "linkhub-tests"
PASSWORD = "correct horse battery staple"
START_TIMEOUT_S = 120.0


class HomeAssistantFailed(AssertionError):
    pass


class HomeAssistant:
    """One Home Assistant, its configuration in `config_dir`, on 127.0.0.1:`port`."""

    def __init__(self, config_dir: Path, port: int) -> None:
        if not HASS.exists():
            raise HomeAssistantFailed(
                f"{HASS} is missing: scripts/bootstrap installs it (LINKHUB_BOOTSTRAP_TEST=1)"
            )
        self.config_dir = config_dir
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.client_id = f"{self.base}/"
        self.token: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.log_path = config_dir / "hass.out"

    # --- configuration ---------------------------------------------------------------
    def configure(self, *, broker_port: int, username: str, password: str) -> None:
        """configuration.yaml, and the MQTT integration as a config entry (how the
        UI adds it: MQTT has no YAML set-up of the broker since 2022.12)."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "configuration.yaml").write_text(
            "homeassistant:\n"
            "  name: LinkHub test home\n  latitude: 0\n  longitude: 0\n  elevation: 0\n"
            "  unit_system: metric\n  time_zone: UTC\n"
            f"http:\n  server_host: 127.0.0.1\n  server_port: {self.port}\n"
            "api:\n"
            "logger:\n  default: warning\n  logs:\n    homeassistant.components.mqtt: info\n"
        )
        storage = self.config_dir / ".storage"
        storage.mkdir(exist_ok=True)
        entry = {
            "entry_id": secrets.token_hex(16),
            "version": 1,
            "minor_version": 1,
            "domain": "mqtt",
            "title": "broker",
            "data": {
                "broker": "127.0.0.1",
                "port": broker_port,
                "username": username,
                "password": password,
                "discovery": True,
            },
            "options": {},
            "pref_disable_new_entities": False,
            "pref_disable_polling": False,
            "source": "user",
            "unique_id": None,
            "disabled_by": None,
        }
        (storage / "core.config_entries").write_text(
            json.dumps(
                {
                    "version": 1,
                    "minor_version": 2,
                    "key": "core.config_entries",
                    "data": {"entries": [entry]},
                }
            )
        )

    # --- the process -------------------------------------------------------------------
    def start(self) -> None:
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [str(HASS), "-c", str(self.config_dir), "--skip-pip"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.config_dir,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise HomeAssistantFailed(f"Home Assistant exited: {self.log_tail()}")
            try:
                urllib.request.urlopen(f"{self.base}/api/onboarding", timeout=2).read()
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                time.sleep(0.5)  # not listening yet: the one wait that has nothing to wait on
        else:
            raise HomeAssistantFailed(
                f"Home Assistant did not answer in {START_TIMEOUT_S} s: {self.log_tail()}"
            )
        self.token = self._sign_in()

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None
        self.token = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # --- signing in ---------------------------------------------------------------------
    def _sign_in(self) -> str:
        """The first start makes the owner (onboarding); later ones use the login flow."""
        status = self._json("GET", "/api/onboarding")
        if any(step["step"] == "user" and not step["done"] for step in status):
            created = self._json(
                "POST",
                "/api/onboarding/users",
                {
                    "client_id": self.client_id,
                    "name": "Tests",
                    "username": USERNAME,
                    "password": PASSWORD,
                    "language": "en",
                },
            )
            code = created["auth_code"]
        else:
            flow = self._json(
                "POST",
                "/auth/login_flow",
                {
                    "client_id": self.client_id,
                    "handler": ["homeassistant", None],
                    "redirect_uri": self.client_id,
                },
            )
            done = self._json(
                "POST",
                f"/auth/login_flow/{flow['flow_id']}",
                {"client_id": self.client_id, "username": USERNAME, "password": PASSWORD},
            )
            code = done["result"]
        tokens = self._form(
            "/auth/token", {"grant_type": "authorization_code", "code": code, "client_id": self.client_id}
        )
        return str(tokens["access_token"])

    # --- the REST API ---------------------------------------------------------------------
    def _request(self, request: urllib.request.Request) -> Any:
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise HomeAssistantFailed(f"{request.full_url}: {exc.code} {exc.read()[:300]!r}") from None
        return json.loads(body) if body else None

    def _json(self, method: str, path: str, body: object = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        return self._request(
            urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        )

    def _form(self, path: str, fields: dict[str, str]) -> Any:
        data = urllib.parse.urlencode(fields).encode()
        return self._request(urllib.request.Request(self.base + path, data=data, method="POST"))

    def state(self, entity_id: str) -> dict[str, Any] | None:
        """The entity's state object; None if Home Assistant has no such entity."""
        found: dict[str, Any] | None = self._json("GET", f"/api/states/{entity_id}")
        return found

    def call(self, domain: str, service: str, data: dict[str, Any]) -> None:
        self._json("POST", f"/api/services/{domain}/{service}", data)

    def template(self, text: str) -> str:
        """Render a template: how the REST API answers questions about devices."""
        request = urllib.request.Request(
            self.base + "/api/template",
            data=json.dumps({"template": text}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return str(response.read().decode())

    def mqtt_entities(self) -> list[str]:
        """Every entity the MQTT integration has, sorted."""
        text = self.template("{{ integration_entities('mqtt') | sort | tojson }}")
        found: list[str] = json.loads(text)
        return found

    def wait_for(self, what: str, check: Callable[[], object], timeout_s: float = 60.0) -> Any:
        """Poll Home Assistant (its API is the event we wait on) until `check` is truthy."""
        deadline = time.monotonic() + timeout_s
        last: object = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(0.25)
        raise HomeAssistantFailed(
            f"Home Assistant: no {what} within {timeout_s} s (last: {last!r})\n{self.log_tail()}"
        )
