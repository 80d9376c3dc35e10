"""The command-line contract of apps over HTTP (issue 16), as scripts rely on
it: `linkhub run --oauth-port N` serves the issuer over HTTPS at
https://<host>:N/oauth, `--oauth-issuer URL` names another for a reverse proxy,
`GET http://HUB:HTTP_PORT/ca.pem` is the CA that signed the issuer's
certificate (MQTT TLS off), `--code-lifetime 10` applies to apps' codes, and
`linkhub apps` and `linkhub link approve` work from the shell. The app is plain
curl (tests/oauth_clients/curl_device_flow.sh), the worked example of
docs/oauth.md.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from hub_process import LINKHUB, LineReader
from test_oauth_clients import CLIENTS_DIR
from test_shell_path import RunningHub, started_hub

pytestmark = pytest.mark.timeout(180)

PASSWORD = "correct horse battery\n"
SCOPE = "openid devices:read"


def issuer_of(hub: RunningHub) -> str:
    (line,) = [line for line in hub.banner if "Apps (OAuth device flow):" in line]
    return line.split("Apps (OAuth device flow):")[1].split()[0]


def fetch_ca(hub: RunningHub, path: Path) -> Path:
    with urllib.request.urlopen(f"http://127.0.0.1:{hub.http_port}/ca.pem", timeout=10) as answer:
        assert answer.status == 200
        path.write_bytes(answer.read())
    return path


def get_json(url: str, ca_file: Path) -> Any:
    """Over HTTPS, trusting only the hub's CA: the certificate must be the one it signed."""
    context = ssl.create_default_context(cafile=str(ca_file))
    with urllib.request.urlopen(url, context=context, timeout=10) as answer:
        assert answer.status == 200 and answer.headers.get_content_type() == "application/json"
        return json.load(answer)


def curl_app(ca_file: Path, issuer: str, client_id: str) -> tuple[subprocess.Popen[str], LineReader]:
    process = subprocess.Popen(
        ["sh", str(CLIENTS_DIR / "curl_device_flow.sh"), str(ca_file), issuer, client_id, SCOPE],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    return process, LineReader(process.stdout)


def next_json(lines: LineReader) -> dict[str, Any]:
    line = lines.next_matching(lambda text: text.startswith("{"), 60)
    assert line is not None, lines.seen
    return json.loads(line)  # type: ignore[no-any-return]


def test_linkhub_run_serves_the_issuer_and_its_ca(tmp_path: Path) -> None:
    oauth_port = free_port()
    with started_hub(tmp_path / "data", "--oauth-port", str(oauth_port), "--code-lifetime", "10") as hub:
        issuer = issuer_of(hub)
        assert issuer == f"https://127.0.0.1:{oauth_port}/oauth"
        ca_file = fetch_ca(hub, tmp_path / "ca.pem")
        document = get_json(f"{issuer}/.well-known/openid-configuration", ca_file)
        assert document["issuer"] == issuer
        assert hub.cli("account", "add", "alice", "--password-stdin", stdin=PASSWORD).returncode == 0

        # Registered from the shell: its requests carry its name.
        added = hub.cli("apps", "add", "living-room", "--name", "Living-room TV", "--scopes", SCOPE)
        assert added.returncode == 0, added.stderr
        listed = hub.cli("apps", "list")
        assert "living-room" in listed.stdout and "Living-room TV" in listed.stdout
        bad = hub.cli("apps", "add", "has space", "--name", "X")
        assert bad.returncode == 1 and "without spaces" in bad.stderr

        # Approved from the shell.
        process, lines = curl_app(ca_file, issuer, "living-room")
        started = next_json(lines)
        assert started["expires_in"] == 10 and started["verification_uri"].endswith("/link")
        approved = hub.cli("link", "approve", started["user_code"], "--account", "alice")
        assert approved.returncode == 0 and "Living-room TV is linked to alice" in approved.stdout
        tokens = next_json(lines)
        assert process.wait(timeout=30) == 0
        assert tokens["token_type"] == "Bearer" and tokens["scope"] == SCOPE and tokens["id_token"]

        # Left alone, the 10 s code runs out and curl is told expired_token (it has no clock of its own).
        process, lines = curl_app(ca_file, issuer, "living-room")
        started = next_json(lines)
        assert next_json(lines)["error"] == "expired_token"
        assert process.wait(timeout=30) == 1
        late = hub.cli("link", "approve", started["user_code"], "--account", "alice")
        assert late.returncode == 1 and "[expired]" in late.stderr

        assert hub.cli("apps", "remove", "living-room").returncode == 0
        assert "No apps are registered." in hub.cli("apps", "list").stdout


def test_behind_a_reverse_proxy_the_issuer_is_the_one_given(tmp_path: Path) -> None:
    oauth_port = free_port()
    given = f"https://127.0.0.1:{oauth_port}/home/linkhub"
    with started_hub(tmp_path / "data", "--oauth-port", str(oauth_port), "--oauth-issuer", given) as hub:
        assert issuer_of(hub) == given
        ca_file = fetch_ca(hub, tmp_path / "ca.pem")
        document = get_json(f"{given}/.well-known/openid-configuration", ca_file)
        assert document["issuer"] == given
        assert document["token_endpoint"] == f"{given}/token"


def test_an_issuer_that_is_not_https_is_refused(tmp_path: Path) -> None:
    checked = subprocess.run(
        [
            LINKHUB, "config", "check",
            "--data-dir", str(tmp_path), "--oauth-issuer", "http://hub.lan/oauth",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert checked.returncode == 1
    assert "--oauth-issuer: expected https://HOST[:PORT]/PATH" in checked.stdout + checked.stderr
