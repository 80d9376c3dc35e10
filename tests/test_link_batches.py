"""Link requests that arrive together are answered in one transaction
(LinkService.handle_requests): each answer must be what the same request would
get on its own, in arrival order."""

from __future__ import annotations

import base64
import secrets
from typing import Any

import pytest
from conftest import HubFactory
from device_doubles import link_request, new_reply_topic
from sqlalchemy import event
from sqlmodel import Session, select

from hub.core import codes
from hub.core.rate_limits import LimitsPolicy
from hub.daemon import Hub
from hub.services.links import InboundRequest, OutboundReply
from hub.store.models import LinkRequestRecord
from linkhub_protocol import DeviceInfo, ErrorCode, ErrorReply, LinkRequest, PendingReply

LAMP = DeviceInfo("Kitchen Lamp", "LMP-1", address="127.0.0.1")


def new_request(client_id: str = "lamp-1", request_id: str | None = None) -> InboundRequest:
    request = link_request(request_id or secrets.token_urlsafe(16), new_reply_topic(), LAMP)
    return InboundRequest(request, secrets.token_bytes(8), client_id)


def pending_code(reply: OutboundReply) -> str:
    assert isinstance(reply.reply, PendingReply), reply.reply
    return reply.reply.user_code


def stored_codes(hub: Hub) -> dict[str, str]:
    assert hub.engine is not None
    with Session(hub.engine) as session:
        return {row.request_id: row.user_code for row in session.exec(select(LinkRequestRecord)).all()}


def test_a_batch_gets_one_fresh_code_each_and_stores_them(make_hub: HubFactory) -> None:
    hub = make_hub()
    batch = [new_request(client_id=f"lamp-{number}") for number in range(20)]
    replies = hub.links.handle_requests(batch)
    assert [reply.reply_to for reply in replies] == [item.request.reply_to for item in batch]
    assert [reply.correlation for reply in replies] == [item.correlation for item in batch]
    shown = [pending_code(reply) for reply in replies]
    assert len(set(shown)) == 20
    stored = stored_codes(hub)
    assert {item.request.request_id: codes.display(stored[item.request.request_id]) for item in batch} == {
        item.request.request_id: code for item, code in zip(batch, shown, strict=True)
    }


def test_a_request_twice_in_one_batch_is_a_request_then_a_poll(make_hub: HubFactory) -> None:
    hub = make_hub()
    first = new_request()
    again = InboundRequest(first.request, secrets.token_bytes(8), first.client_id)
    replies = hub.links.handle_requests([first, new_request(client_id="other"), again])
    assert pending_code(replies[0]) == pending_code(replies[2])
    assert pending_code(replies[1]) != pending_code(replies[0])
    assert replies[2].correlation == again.correlation  # each answer echoes its own message
    assert len(stored_codes(hub)) == 2


def test_a_known_request_in_a_batch_is_answered_as_a_poll(make_hub: HubFactory) -> None:
    hub = make_hub()
    earlier = new_request()
    code = pending_code(hub.links.handle_request(earlier.request, earlier.correlation, earlier.client_id))
    replies = hub.links.handle_requests([new_request(client_id="other"), earlier])
    assert pending_code(replies[1]) == code
    assert len(stored_codes(hub)) == 2


def test_limits_and_bad_keys_refuse_within_a_batch_and_store_nothing_for_them(make_hub: HubFactory) -> None:
    hub = make_hub(limits=LimitsPolicy(link_requests_per_client="2 per minute", max_pending_requests=4))
    flood = [new_request(client_id="flooder") for _ in range(3)]
    small_order_key = base64.b64encode(b"\x01" + bytes(31)).decode()  # parses, but nothing seals to it
    bad_key = InboundRequest(
        LinkRequest(secrets.token_urlsafe(16), new_reply_topic(), LAMP, small_order_key), None, "broken"
    )
    others = [new_request(client_id=f"lamp-{number}") for number in range(3)]
    batch = [*flood, bad_key, *others]
    replies = hub.links.handle_requests(batch)
    kinds = [reply.reply.error if isinstance(reply.reply, ErrorReply) else "pending" for reply in replies]
    # Two from the flooder, then slow_down; the bad key is refused whatever the
    # limits; two others fill the cap of 4, the last is refused.
    assert kinds == [
        "pending",
        "pending",
        ErrorCode.SLOW_DOWN,
        ErrorCode.INVALID_REQUEST,
        "pending",
        "pending",
        ErrorCode.TOO_MANY_PENDING,
    ]
    taken = {item.request.request_id for item, kind in zip(batch, kinds, strict=True) if kind == "pending"}
    assert set(stored_codes(hub)) == taken


def test_a_request_another_hub_took_meanwhile_is_answered_with_its_code(make_hub: HubFactory) -> None:
    """Two hub processes on one database: the batch's insert fails on the
    request the other stored first, and every request is answered one by one."""
    hub = make_hub()
    assert hub.engine is not None
    engine = hub.engine
    contested, other = new_request(), new_request(client_id="other")
    taken_by_the_other_hub: list[str] = []

    # Between the batch's read and its insert (SQLAlchemy's public before_execute
    # hook on the batch's INSERT): the other hub stores the contested request first.
    def racing(_conn: Any, clause: Any, multiparams: Any, _params: Any, _options: Any) -> None:
        if taken_by_the_other_hub or getattr(clause, "table", None) is not LinkRequestRecord.__table__:
            return
        (row,) = [row for row in multiparams if row["request_id"] == contested.request.request_id]
        taken_by_the_other_hub.append(row["request_id"])  # first: the insert below fires this hook too
        with Session(engine) as elsewhere:  # SQLite: waits for nothing, the batch has not written yet
            elsewhere.add(LinkRequestRecord(**{**row, "user_code": "BCDFGHJK"}))
            elsewhere.commit()

    event.listen(engine, "before_execute", racing)
    try:
        replies = hub.links.handle_requests([contested, other])
    finally:
        event.remove(engine, "before_execute", racing)
    assert taken_by_the_other_hub == [contested.request.request_id]
    assert pending_code(replies[0]) == "BCDF-GHJK"
    assert pending_code(replies[1]) != "BCDF-GHJK"
    assert len(stored_codes(hub)) == 2


def scripted_codes(monkeypatch: pytest.MonkeyPatch, *drawn: str) -> None:
    """The hub draws these codes, in this order."""
    script = iter(drawn)
    monkeypatch.setattr(codes, "generate", lambda _rng: next(script))


def test_a_drawn_code_that_is_live_is_drawn_again(
    make_hub: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = make_hub()
    scripted_codes(monkeypatch, "BCDFGHJK")
    assert pending_code(hub.links.handle_requests([new_request()])[0]) == "BCDF-GHJK"
    # Both draw the live code first; the second also draws the first's second draw.
    scripted_codes(monkeypatch, "BCDFGHJK", "BCDFGHJK", "LMNPQRST", "LMNPQRST", "VWXZBCDF")
    replies = hub.links.handle_requests([new_request(client_id="two"), new_request(client_id="three")])
    assert [pending_code(reply) for reply in replies] == ["LMNP-QRST", "VWXZ-BCDF"]
    assert sorted(stored_codes(hub).values()) == ["BCDFGHJK", "LMNPQRST", "VWXZBCDF"]


def test_two_requests_of_a_batch_never_share_a_code(
    make_hub: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = make_hub()
    scripted_codes(monkeypatch, "BCDFGHJK", "BCDFGHJK", "LMNPQRST")
    replies = hub.links.handle_requests([new_request(), new_request(client_id="two")])
    assert [pending_code(reply) for reply in replies] == ["BCDF-GHJK", "LMNP-QRST"]


def test_the_code_of_an_ended_request_may_be_drawn_again(
    make_hub: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = make_hub()
    scripted_codes(monkeypatch, "BCDFGHJK")
    first = hub.links.handle_requests([new_request()])[0]
    hub.links.deny(pending_code(first), None)
    scripted_codes(monkeypatch, "BCDFGHJK")
    assert pending_code(hub.links.handle_requests([new_request(client_id="two")])[0]) == "BCDF-GHJK"
