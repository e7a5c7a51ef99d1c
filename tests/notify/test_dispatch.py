"""The dispatcher against a local receiver, in-process, on both databases: what the outbox
holds is delivered, signed, in order per contact; failures are retried with the same id;
attempts run out into a dead letter that no longer holds the contact's later messages."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import select
from sqlmodel import col

from rewards.db.database import Database
from rewards.db.notify_tables import Delivery, WebhookSubscription
from rewards.notify import signing
from rewards.notify.dispatcher import Dispatcher
from rewards.settings import Settings
from tests.conftest import BOTH, fund, moment, purchase_body
from tests.notify.receiving import receiving

Client = TestClient[Litestar]
pytestmark = pytest.mark.parametrize("database_url", BOTH, indirect=True)


def subscribe(database: Database, url: str, types: list[str] | None = None) -> tuple[str, str]:
    secret = signing.new_secret()
    subscription_id = str(uuid.uuid4())
    with database.transaction() as session:
        session.add(
            WebhookSubscription(
                id=subscription_id, url=url, event_types=types or ["*"], secret=secret
            )
        )
    return subscription_id, secret


def dispatch_until(dispatcher: Dispatcher, done: Any, timeout: float = 20.0) -> None:
    """Tick until ``done()`` holds."""

    async def loop() -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, (
                f"not delivered in time: {deliveries(dispatcher.database)}"
            )
            if await dispatcher.tick() == 0:
                await asyncio.sleep(0.01)
        await dispatcher.close()

    asyncio.run(loop())


def deliveries(database: Database) -> list[Delivery]:
    with database.transaction(write=False) as session:
        rows = list(session.scalars(select(Delivery).order_by(col(Delivery.outbox_id))))
        for row in rows:
            session.expunge(row)
    return rows


def fast(settings: Settings, **changes: Any) -> Settings:
    return settings.with_changes(webhook_retry_base_seconds=0.005, **changes)


def test_awards_are_delivered_signed_in_order_with_the_outbox_id(
    client: Client, app: Litestar, new_contact: Any
) -> None:
    database: Database = app.state.database
    settings: Settings = app.state.runtime.settings
    ann, bob = new_contact(), new_contact()
    with receiving() as receiver:
        _, secret = subscribe(database, receiver.url)
        for amount in ("5.00", "7.25", "1.10"):
            fund(client, ann, amount)
        fund(client, bob, "3.00")
        dispatcher = Dispatcher(database, fast(settings))
        dispatch_until(
            dispatcher, lambda: sum(1 for m in receiver.accepted() if m.get("contact_id")) == 8
        )
    got = receiver.accepted()
    for item in receiver.got:  # every request signed with the subscription's secret
        assert signing.verify(secret, item.headers, item.body)
        assert item.headers["webhook-id"] == item.message["id"]
    of_ann = [m for m in got if m.get("contact_id") == ann["id"]]
    assert [m["type"] for m in of_ann] == ["award.created", "wallet.balance_changed"] * 3
    assert [int(m["id"]) for m in of_ann] == sorted(int(m["id"]) for m in of_ann)
    awards = [m["data"] for m in of_ann if m["type"] == "award.created"]
    assert [Decimal(str(a["amount"])) for a in awards] == [
        Decimal("5.00"),
        Decimal("7.25"),
        Decimal("1.10"),
    ]
    assert [Decimal(str(a["balance_after"])) for a in awards] == [
        Decimal("5"),
        Decimal("12.25"),
        Decimal("13.35"),
    ]
    assert {d.status for d in deliveries(database)} == {"delivered"}


def test_a_receiver_failing_five_times_gets_the_same_message_on_the_sixth(
    client: Client, app: Litestar, new_contact: Any
) -> None:
    database: Database = app.state.database
    settings: Settings = app.state.runtime.settings
    ann = new_contact()
    first_id: list[str] = []

    def policy(message: dict[str, Any], attempt: int) -> int:
        if not first_id:
            first_id.append(message["id"])
        return 500 if message["id"] == first_id[0] and attempt <= 5 else 200

    with receiving(policy) as receiver:
        subscribe(database, receiver.url, ["award.created"])
        fund(client, ann, "4.00")
        fund(client, ann, "6.00")
        dispatcher = Dispatcher(database, fast(settings))
        dispatch_until(dispatcher, lambda: len(receiver.accepted()) == 2)
        attempts = receiver.attempts_of(first_id[0])
    assert [a.status for a in attempts] == [500] * 5 + [200]
    assert len({a.body for a in attempts}) == 1  # the same message every time
    assert len({a.headers["webhook-timestamp"] for a in attempts}) >= 1  # signed per attempt
    # The contact's second award waited for the first: it arrived after the sixth attempt.
    second = next(r for r in receiver.got if r.message["id"] != first_id[0])
    assert second.at > attempts[-1].at
    first_row = next(d for d in deliveries(database) if str(d.outbox_id) == first_id[0])
    assert (first_row.status, first_row.attempts, first_row.last_status) == ("delivered", 6, 200)


def test_attempts_run_out_into_a_dead_letter_that_holds_nothing_back(
    client: Client, app: Litestar, new_contact: Any
) -> None:
    database: Database = app.state.database
    settings: Settings = fast(app.state.runtime.settings, webhook_max_attempts=3)
    ann = new_contact()
    doomed: list[str] = []

    def policy(message: dict[str, Any], _attempt: int) -> int:
        if not doomed:
            doomed.append(message["id"])
        return 503 if message["id"] == doomed[0] else 200

    with receiving(policy) as receiver:
        subscribe(database, receiver.url, ["award.created"])
        fund(client, ann, "2.00")
        fund(client, ann, "3.00")
        dispatch_until(Dispatcher(database, settings), lambda: len(receiver.accepted()) == 1)
    rows = deliveries(database)
    assert [(r.status, r.attempts) for r in rows] == [("dead", 3), ("delivered", 1)]
    assert rows[0].last_status == 503 and rows[0].last_error == "HTTP 503"
    assert len(receiver.attempts_of(doomed[0])) == 3


def test_a_410_switches_the_subscription_off(
    client: Client, app: Litestar, new_contact: Any
) -> None:
    database: Database = app.state.database
    ann = new_contact()
    with receiving(lambda _m, _n: 410) as receiver:
        subscription_id, _ = subscribe(database, receiver.url)
        fund(client, ann, "2.00")
        dispatch_until(
            Dispatcher(database, fast(app.state.runtime.settings)), lambda: len(receiver.got) >= 1
        )
    with database.transaction(write=False) as session:
        assert session.get(WebhookSubscription, subscription_id).active is False  # type: ignore[union-attr]


def test_nothing_is_told_of_what_was_refused(
    client: Client, app: Litestar, new_contact: Any
) -> None:
    """A spend the wallet cannot cover is refused and rolled back: the outbox holds
    nothing of it."""
    database: Database = app.state.database
    ann = new_contact()
    fund(client, ann, "1.00")
    purchase = client.post("/v1/events/purchases", json=purchase_body(ann["wallet"]["code"]))
    assert purchase.status_code == 201 and purchase.json()["awards"] == []
    refused = client.post(
        "/v1/events/spend-requests",
        json={
            "contact": {"contact_id": ann["id"]},
            "performed_on": moment(),
            "purchase_event_id": purchase.json()["id"],
            "requested_amount": "50.00",
        },
    )
    assert refused.status_code == 422, refused.text
    with receiving() as receiver:
        subscribe(database, receiver.url)
        dispatcher = Dispatcher(database, fast(app.state.runtime.settings))
        dispatch_until(
            dispatcher,
            lambda: (
                sum(1 for m in receiver.accepted() if m.get("contact_id")) == 2
                and {d.status for d in deliveries(database)} == {"delivered"}
            ),
        )
    told = sorted(m["type"] for m in receiver.accepted() if m.get("contact_id"))
    assert told == ["award.created", "wallet.balance_changed"]
    assert {d.status for d in deliveries(database)} == {"delivered"}  # nothing else pending
