"""Only the hub's own names and addresses in `Host` (issue 19, item 13): a
DNS-rebinding name is refused with 400 on every page, /link/qr and /setup
included, before anything is read or done."""

from __future__ import annotations

import pytest
from conftest import FakeClock, HubFactory, hub_pages

from web import WebConfig
from web.hosts import HostCheck, host_name

REBOUND = "http://attacker.example:8080"


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("LinkHub.local.", "linkhub.local"),
        ("192.168.1.20:8080", "192.168.1.20"),
        ("[::1]:8080", "::1"),
        ("[fe80::1]", "fe80::1"),
        ("localhost", "localhost"),
    ],
)
def test_host_name_drops_the_port_case_and_final_dot(header: str, name: str) -> None:
    assert host_name(header) == name


def test_names_loopback_and_the_machines_addresses_read_again_after_a_while() -> None:
    clock = FakeClock()
    addresses = ["192.168.1.20"]
    check = HostCheck(["linkhub.local", "hub.home.arpa"], lambda: list(addresses), clock=clock)
    for allowed in (
        "localhost:8080",
        "127.0.0.1",
        "[::1]:80",
        "LinkHub.local",
        "hub.home.arpa.",
        "192.168.1.20:8080",
    ):
        assert check.allows(allowed), allowed
    for refused in ("attacker.example", "192.168.1.21", "linkhub.local.attacker.example", "", "[::2]"):
        assert not check.allows(refused), refused
    addresses[:] = ["192.168.1.21"]  # a new DHCP lease
    assert not check.allows("192.168.1.21")  # not read again yet
    clock.advance(30)
    assert check.allows("192.168.1.21") and not check.allows("192.168.1.20")


def test_a_rebinding_name_is_refused_on_every_page(make_hub: HubFactory) -> None:
    hub = make_hub()  # no account yet: /setup would make the owner
    app = hub_pages(hub, WebConfig(secret_key="test", testing=True, host_names=("hub.home.arpa",)))
    client = app.test_client()
    for path in ("/setup", "/login", "/link", "/link/qr", "/api/v1/devices", "/static/style.css"):
        refused = client.get(path, base_url=REBOUND)
        assert refused.status_code == 400, path
        assert "attacker.example" not in refused.get_data(as_text=True)
    posted = client.post(
        "/setup", base_url=REBOUND, data={"name": "mallory", "password": "x" * 12, "password2": "x" * 12}
    )
    assert posted.status_code == 400 and not hub.accounts.has_accounts()
    assert "Not this hub&#39;s name" in posted.get_data(as_text=True)
    # Its own names are served.
    for base in ("http://localhost", "http://127.0.0.1:8080", "http://hub.home.arpa:8080"):
        assert client.get("/setup", base_url=base).status_code == 200, base


def test_the_qr_link_is_built_from_an_allowed_name_only(make_hub: HubFactory) -> None:
    hub = make_hub()
    hub.accounts.create("alice", "correct horse battery")
    app = hub_pages(hub, WebConfig(secret_key="test", testing=True))
    client = app.test_client()
    assert client.get("/link/qr", base_url=REBOUND).status_code == 400
    page = client.get("/link/qr", base_url="http://localhost:8080", follow_redirects=False)
    assert page.status_code == 302  # to sign in first: the page itself is served
