"""The pages over HTTPS on the hub's own CA (issue 19, item 3, second half):
`linkhub run --https-port N` serves them with a certificate the hub's CA signed
(verified here against /ca.pem, host name checked), the HTTP port redirects
every page to it (but /ca.pem and the probes), and the session cookie is then
`__Host-linkhub_session`, Secure, HttpOnly, on Path=/ without Domain. Real
Chromium, trusting only that certificate's key, signs in over it."""

from __future__ import annotations

import base64
import hashlib
import http.client
import re
import signal
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import Browser, expect
from test_browser import CHROMIUM, CHROMIUM_ARGS, PHONE, check_phone_page, chromium_present  # noqa: F401
from test_link_requests import new_request, subscribed
from test_shell_path import read_lines_until, run_command

from linkhub_protocol import PendingReply

PASSWORD = "correct horse battery"


class HttpsHub:
    def __init__(
        self, data_dir: Path, http_port: int, https_port: int, mqtt_port: int, process: subprocess.Popen[str]
    ) -> None:
        self.data_dir, self.http_port, self.https_port, self.mqtt_port, self.process = (
            data_dir,
            http_port,
            https_port,
            mqtt_port,
            process,
        )

    def plain(self, method: str, path: str) -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=15)
        connection.request(method, path)
        return connection.getresponse()

    def secure(self, method: str, path: str, ca_pem: str, headers: dict[str, str] | None = None,
               body: str | None = None) -> http.client.HTTPResponse:  # fmt: skip
        context = ssl.create_default_context(cadata=ca_pem)  # verifies the chain and the host name
        connection = http.client.HTTPSConnection("127.0.0.1", self.https_port, context=context, timeout=15)
        connection.request(method, path, body=body, headers=headers or {})
        return connection.getresponse()


@pytest.fixture
def https_hub(tmp_path: Path) -> Iterator[HttpsHub]:
    data_dir, http_port, https_port, mqtt_port = tmp_path / "data", free_port(), free_port(), free_port()
    command = [*run_command(data_dir, http_port, mqtt_port), "--https-port", str(https_port)]
    with (tmp_path / "hub.log").open("w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
    assert process.stdout is not None
    try:
        banner = read_lines_until(process.stdout, lambda line: line.startswith("Stop with"))
        assert any(f"https://127.0.0.1:{https_port}/link" in line for line in banner), banner
        yield HttpsHub(data_dir, http_port, https_port, mqtt_port, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_https_on_the_hubs_ca_and_http_redirects_to_it(https_hub: HttpsHub) -> None:
    # Plain HTTP: the CA and the probes as before, every page moved to HTTPS.
    ca = https_hub.plain("GET", "/ca.pem")
    assert ca.status == 200
    ca_pem = ca.read().decode()
    assert ca_pem.startswith("-----BEGIN CERTIFICATE-----")
    assert https_hub.plain("GET", "/healthz").status == 200
    moved = https_hub.plain("POST", "/login?next=/devices")
    assert moved.status == 308
    assert moved.getheader("Location") == f"https://127.0.0.1:{https_hub.https_port}/login?next=/devices"

    # HTTPS, verified against the CA from /ca.pem (with the wrong CA it fails).
    setup = https_hub.secure("GET", "/setup", ca_pem)
    assert setup.status == 200
    cookie = setup.getheader("Set-Cookie") or ""
    assert cookie.startswith("__Host-linkhub_session="), cookie
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"secure", "httponly", "path"} <= attributes and "domain" not in attributes
    assert "Path=/;" in cookie or cookie.endswith("Path=/")
    with pytest.raises(ssl.SSLCertVerificationError):
        https_hub.secure("GET", "/setup", _other_ca())


def test_devices_are_given_the_https_link_page(https_hub: HttpsHub) -> None:
    """With HTTPS on, the page a device shows (and puts in its QR code, with the
    code in `?code=`) is the HTTPS one: the code never crosses the LAN in clear
    on its way to the redirect."""
    client, reply_to = subscribed(https_hub.mqtt_port)
    try:
        _request_id, reply = new_request(client, reply_to)
    finally:
        client.close()
    assert isinstance(reply, PendingReply), reply
    assert reply.verification_uri == f"https://127.0.0.1:{https_hub.https_port}/link"
    assert reply.verification_uri_complete == f"{reply.verification_uri}?code={reply.user_code}"


def _other_ca() -> str:
    """A CA that did not sign the hub's certificate."""
    from datetime import UTC, datetime

    from hub.broker.tls import make_ca, new_key

    return make_ca(new_key(), now=datetime.now(UTC)).public_bytes(serialization.Encoding.PEM).decode()


def spki_hash(cert_pem: bytes) -> str:
    """What Chromium's --ignore-certificate-errors-spki-list takes: base64 SHA-256 of the key."""
    key = x509.load_pem_x509_certificate(cert_pem).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.mark.usefixtures("chromium_present")
def test_chromium_signs_in_over_https_with_a_host_cookie(https_hub: HttpsHub) -> None:
    from playwright.sync_api import sync_playwright

    cert = (https_hub.data_dir / "broker" / "tls" / "server.pem").read_bytes()
    args = [*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={spki_hash(cert)}"]
    with sync_playwright() as playwright:
        browser: Browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            page = browser.new_context(viewport=PHONE).new_page()
            page.goto(f"http://127.0.0.1:{https_hub.http_port}/link")  # typed as before: lands on HTTPS
            expect(page).to_have_url(re.compile(rf"^https://127\.0\.0\.1:{https_hub.https_port}/setup"))
            page.locator("#name").fill("alice")
            page.locator("#password").fill(PASSWORD)
            page.locator("#password2").fill(PASSWORD)
            page.get_by_role("button", name="Create account").click()
            expect(page).to_have_url(re.compile(rf"^https://127\.0\.0\.1:{https_hub.https_port}/link"))
            cookies = page.context.cookies()
            session = [c for c in cookies if c["name"] == "__Host-linkhub_session"]
            assert len(session) == 1 and session[0]["secure"] and session[0]["httpOnly"], cookies
            assert not [c for c in cookies if c["name"] == "linkhub_session"]
            page.reload()  # Reload after the post: still signed in, nothing posted again
            expect(page.locator("h1")).not_to_have_text("Sign in")
        finally:
            browser.close()
