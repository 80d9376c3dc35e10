"""Fuzzed requests on the issuer's two POST endpoints (issue 16): whatever the
form holds (known parameters with wild values, unknown ones, repeated ones,
broken encodings, other content types), the answer is never a 5xx, and no
token is ever issued for a code nobody approved.

The codes the fuzzer may hit include real ones: a pending device_code (never
approved here), a denied one, and an expired one, besides made-up strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from conftest import HubFactory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_oauth import ALL_ASKED, DEVICE_GRANT, FORM, Issuer, make_issuer

pytestmark = pytest.mark.timeout(300)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

KNOWN = (
    "client_id", "scope", "grant_type", "device_code", "refresh_token", "client_secret", "code",
    "redirect_uri", "response_type", "token", "token_type_hint",
)  # fmt: skip
REAL_CODES = ("pending", "denied", "expired")

wild_text = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=50),
    st.sampled_from(
        ["", " ", "openid", ALL_ASKED, DEVICE_GRANT, "refresh_token", "media-centre", "\x00", "%"]
    ),
    st.sampled_from(REAL_CODES),  # replaced by a real code in the test
)
fields = st.lists(st.tuples(st.one_of(st.sampled_from(KNOWN), st.text(max_size=20)), wild_text), max_size=8)
content_types = st.sampled_from(
    [
        FORM,
        FORM + ";charset=UTF-8",
        FORM + ";charset=latin-1",
        "application/json",
        "text/plain",
        "multipart/form-data",
    ]
)


@pytest.fixture
def fuzzed(make_hub: HubFactory, tmp_path: Path) -> tuple[Issuer, dict[str, str]]:
    issuer = make_issuer(make_hub, tmp_path)
    pending = issuer.start()
    denied = issuer.start()
    issuer.hub.apps.deny(denied["user_code"], issuer.owner)
    expired = issuer.start()
    issuer.clock.advance(expired["expires_in"] - 1)
    codes = {"pending": pending["device_code"], "denied": denied["device_code"]}
    issuer.clock.advance(1)
    codes["expired"] = expired["device_code"]
    return issuer, codes


def _body(pairs: list[tuple[str, str]], codes: dict[str, str]) -> str:
    return urlencode([(key, codes.get(value, value)) for key, value in pairs])


def sound(answer: Any) -> bool:
    """No 5xx, and no token in the answer (nothing here was approved)."""
    return answer.status_code < 500 and b"access_token" not in answer.get_data()


@FUZZ
@given(pairs=fields, content_type=content_types)
def test_the_token_endpoint_never_fails_and_never_issues_unapproved(
    fuzzed: tuple[Issuer, dict[str, str]], pairs: list[tuple[str, str]], content_type: str
) -> None:
    issuer, codes = fuzzed
    answer = issuer.http.post("/oauth/token", data=_body(pairs, codes), content_type=content_type)
    assert sound(answer), (answer.status_code, answer.get_data(as_text=True))
    # The same with the grant type right and a real unapproved code, the rest fuzzed.
    pairs = [("grant_type", DEVICE_GRANT), ("client_id", "media-centre"), *pairs]
    answer = issuer.http.post("/oauth/token", data=_body(pairs, codes), content_type=FORM)
    assert sound(answer), (answer.status_code, answer.get_data(as_text=True))


@FUZZ
@given(pairs=fields, content_type=content_types)
def test_the_device_authorization_endpoint_never_fails(
    fuzzed: tuple[Issuer, dict[str, str]], pairs: list[tuple[str, str]], content_type: str
) -> None:
    issuer, codes = fuzzed
    answer = issuer.http.post(
        "/oauth/device_authorization", data=_body(pairs, codes), content_type=content_type
    )
    assert sound(answer), (answer.status_code, answer.get_data(as_text=True))
    if answer.status_code == 200:
        assert set(answer.get_json()) >= {"device_code", "user_code", "expires_in", "interval"}


@FUZZ
@given(body=st.binary(max_size=2000), content_type=content_types)
def test_raw_bodies_never_fail(fuzzed: tuple[Issuer, dict[str, str]], body: bytes, content_type: str) -> None:
    issuer, _codes = fuzzed
    for endpoint in ("token", "device_authorization", "revoke"):
        answer = issuer.http.post(f"/oauth/{endpoint}", data=body, content_type=content_type)
        assert sound(answer), (endpoint, answer.status_code, answer.get_data(as_text=True))
