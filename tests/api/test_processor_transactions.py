"""Merchants, terminals, payment cards, processor transactions (direct, matching, claim)
and claims through HTTP, on both databases (PLATFORM.md). Test definition: cafe-co
(direct; T-CAFE, T-SHARED), books-co (matching, 30 minutes; T-BOOKS, T-SHARED), fuel-co
(claim; T-FUEL); offer merchant-cashback gives 10% at all three."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from tests.conftest import ADMIN_KEY, BOTH, INTEGRATOR_KEY, PROCESSOR_KEY, moment

Client = TestClient[Litestar]
pytestmark = pytest.mark.parametrize("database_url", BOTH, indirect=True)


def as_(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def transaction(
    terminal: str = "T-CAFE",
    amount: str = "20.00",
    token: str | None = None,
    last4: str = "4242",
    at: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "processor": "acme-pay",
        "transaction_id": f"TX-{uuid.uuid4().hex[:10]}",
        "terminal_id": terminal,
        "performed_on": at or moment(),
        "amount": amount,
        "currency": "EUR",
        "card": {"token": token or f"tok_{uuid.uuid4().hex[:12]}", "brand": "visa", "last4": last4},
    }
    body.update(fields)
    return body


def post_transaction(client: Client, body: dict[str, Any]) -> Any:
    return client.post("/v1/processor-transactions", json=body, headers=as_(PROCESSOR_KEY))


def balance(client: Client, contact_id: str) -> Decimal:
    wallet = client.get(f"/v1/contacts/{contact_id}").json()["wallet"]
    return Decimal(str(wallet["balance"]))


def pos_purchase(
    client: Client, contact: dict[str, Any], amount: str, *, unit: str = "mall-books", **extra: Any
) -> Any:
    body = {
        "contact": {"contact_id": contact["id"]},
        "performed_on": extra.pop("at", None) or moment(),
        "performed_by_unit": unit,
        "reference_number": "POS-1",
        "process_immediately": True,
        "products": [{"sku": "NOVEL", "net_amount": amount}],
        **extra,
    }
    return client.post("/v1/events/purchases", json=body, headers=as_(INTEGRATOR_KEY))


# ---- payment cards and terminals -------------------------------------------------------


def test_payment_cards_identify_and_are_unique(client: Client, new_contact: Any) -> None:
    ada = new_contact(payment_cards=["tok_ada_1"])
    assert ada["payment_cards"] == ["tok_ada_1"]
    taken = client.post("/v1/contacts", json={"payment_cards": ["tok_ada_1"]})
    assert taken.status_code == 409
    assert taken.json()["errors"][0]["path"] == "/payment_cards/0"
    bob = new_contact()
    clash = client.patch(f"/v1/contacts/{bob['id']}", json={"payment_cards": ["tok_ada_1"]})
    assert clash.status_code == 409
    moved = client.patch(f"/v1/contacts/{ada['id']}", json={"payment_cards": ["tok_ada_2"]})
    assert moved.json()["payment_cards"] == ["tok_ada_2"]
    body = {
        "contact": {"payment_card": "tok_ada_2"},
        "performed_on": moment(),
        "performed_by_unit": "store-001",
        "reference_number": "R-1",
        "products": [{"sku": "THING", "net_amount": "1.00"}],
    }
    recorded = client.post("/v1/events/purchases", json=body)
    assert recorded.status_code == 201, recorded.text
    assert recorded.json()["contact_id"] == ada["id"]
    body["contact"] = {"payment_card": "tok_ada_1"}
    unknown = client.post("/v1/events/purchases", json=body)
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["path"] == "/contact/payment_card"


def test_a_purchase_named_by_its_terminal_is_at_the_merchants_first_unit(
    client: Client, new_contact: Any
) -> None:
    contact = new_contact()
    body = {
        "contact": {"contact_id": contact["id"]},
        "performed_on": moment(),
        "performed_by_terminal": "T-CAFE",
        "process_immediately": True,
        "reference_number": "R-1",
        "products": [{"sku": "LATTE", "net_amount": "30.00"}],
    }
    recorded = client.post("/v1/events/purchases", json=body)
    assert recorded.status_code == 201, recorded.text
    event = recorded.json()
    assert event["performed_by_unit"] == "mall-cafe"
    assert [(a["offer_id"], a["amount"]) for a in event["awards"]] == [("merchant-cashback", 3.0)]
    for terminal, code in (("T-SHARED", "ambiguous_terminal"), ("T-NOWHERE", "unknown_terminal")):
        refused = client.post(
            "/v1/events/purchases", json={**body, "performed_by_terminal": terminal}
        )
        assert refused.status_code == 422
        assert refused.json()["code"] == code
        assert refused.json()["errors"][0]["path"] == "/performed_by_terminal"
    both = client.post("/v1/events/purchases", json={**body, "performed_by_unit": "store-001"})
    assert both.status_code == 422  # one of unit or terminal, not both
    outside = {**body, "performed_by_terminal": None}
    del outside["performed_by_terminal"]
    outside["performed_by_unit"] = "store-001"
    plain = client.post("/v1/events/purchases", json=outside)
    assert plain.status_code == 201
    assert plain.json()["awards"] == []  # store-001 belongs to no merchant


# ---- roles -----------------------------------------------------------------------------


def test_roles_keep_processors_and_integrators_apart(client: Client) -> None:
    body = transaction()
    assert (
        client.post(
            "/v1/processor-transactions", json=body, headers=as_(INTEGRATOR_KEY)
        ).status_code
        == 403
    )
    assert client.get("/v1/processor-transactions", headers=as_(INTEGRATOR_KEY)).status_code == 403
    assert client.get("/v1/contacts/x", headers=as_(PROCESSOR_KEY)).status_code == 403
    claim = {
        "contact": {"contact_code": "nobody"},
        "merchant_id": "fuel-co",
        "performed_on": "2026-01-01",
        "amount": 1,
        "last4": "1234",
    }
    forbidden = client.post("/v1/transaction-claims", json=claim, headers=as_(PROCESSOR_KEY))
    assert forbidden.status_code == 403
    assert forbidden.json()["code"] == "forbidden"
    assert (
        client.post("/v1/processor-transactions", json=body, headers=as_(ADMIN_KEY)).status_code
        == 201
    )


# ---- direct ----------------------------------------------------------------------------


def test_direct_a_known_card_is_a_purchase_evaluated_at_once(
    client: Client, new_contact: Any
) -> None:
    contact = new_contact(payment_cards=["tok_direct"])
    body = transaction("T-CAFE", "25.00", token="tok_direct")
    posted = post_transaction(client, body)
    assert posted.status_code == 201, posted.text
    answer = posted.json()
    assert answer["contact_id"] == contact["id"]
    assert "token" not in answer["card"]
    [route] = answer["routes"]
    assert route["merchant_id"] == "cafe-co"
    assert route["status"] == "recorded"
    event = client.get(f"/v1/events/{route['event_id']}").json()
    assert event["performed_by_unit"] == "mall-cafe"
    assert event["external_system"] == "acme-pay"
    assert event["external_reference"] == f"{body['transaction_id']}/cafe-co"
    assert [(p["sku"], p["total_amount"]) for p in event["products"]] == [("CARD-PURCHASE", 25.0)]
    assert event["payment_medium"]["brand"] == "visa"
    assert [(a["offer_id"], a["amount"]) for a in event["awards"]] == [("merchant-cashback", 2.5)]
    assert balance(client, contact["id"]) == Decimal("2.5")

    replay = post_transaction(client, body)
    assert replay.status_code == 200
    assert replay.json()["id"] == answer["id"]
    assert balance(client, contact["id"]) == Decimal("2.5")
    other = post_transaction(client, {**body, "amount": "26.00"})
    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_conflict"
    fetched = client.get(f"/v1/processor-transactions/{answer['id']}", headers=as_(PROCESSOR_KEY))
    assert fetched.json() == answer


def test_direct_an_unknown_card_is_unidentified_and_nothing_is_stored_for_unknown_terminals(
    client: Client,
) -> None:
    posted = post_transaction(client, transaction("T-CAFE"))
    assert posted.status_code == 201
    assert [r["status"] for r in posted.json()["routes"]] == ["unidentified"]
    assert posted.json()["contact_id"] is None
    no_rate = post_transaction(client, transaction("T-CAFE", currency="JPY"))
    assert no_rate.status_code == 422
    assert (no_rate.json()["code"], no_rate.json()["errors"][0]["path"]) == (
        "unknown_currency",
        "/currency",
    )
    unknown = post_transaction(client, transaction("T-NOWHERE"))
    assert unknown.status_code == 422
    assert unknown.json()["code"] == "unknown_terminal"
    assert unknown.json()["errors"][0]["path"] == "/terminal_id"
    listed = client.get("/v1/processor-transactions", headers=as_(PROCESSOR_KEY)).json()
    assert [item["terminal_id"] for item in listed["items"]] == ["T-CAFE"]
    missing = client.get("/v1/processor-transactions/nope", headers=as_(PROCESSOR_KEY))
    assert missing.status_code == 404
    assert missing.json()["code"] == "transaction_not_found"


def test_a_shared_terminal_routes_to_every_merchant_listing_it(
    client: Client, new_contact: Any
) -> None:
    contact = new_contact(payment_cards=["tok_shared"])
    posted = post_transaction(client, transaction("T-SHARED", "10.00", token="tok_shared"))
    routes = {r["merchant_id"]: r for r in posted.json()["routes"]}
    assert routes["cafe-co"]["status"] == "recorded"
    assert routes["books-co"]["status"] == "awaiting_match"
    assert routes["books-co"]["match_until"]
    assert balance(client, contact["id"]) == Decimal("1")  # the cafe's purchase only, so far
    by_merchant = client.get(
        "/v1/processor-transactions?merchant_id=books-co&status=awaiting_match",
        headers=as_(PROCESSOR_KEY),
    ).json()
    assert [t["id"] for t in by_merchant["items"]] == [posted.json()["id"]]
    none = client.get(
        "/v1/processor-transactions?merchant_id=fuel-co", headers=as_(PROCESSOR_KEY)
    ).json()
    assert none["items"] == []


# ---- matching --------------------------------------------------------------------------


def test_matching_a_transaction_after_its_pos_purchase_is_matched_and_not_rewarded_twice(
    client: Client, new_contact: Any
) -> None:
    contact = new_contact(payment_cards=["tok_books"])
    purchase = pos_purchase(client, contact, "40.00")
    assert purchase.status_code == 201, purchase.text
    assert balance(client, contact["id"]) == Decimal("4")
    posted = post_transaction(client, transaction("T-BOOKS", "40.00", token="tok_books"))
    [route] = posted.json()["routes"]
    assert route == {
        "merchant_id": "books-co",
        "processor_mode": "matching",
        "status": "matched",
        "event_id": purchase.json()["id"],
    }
    assert balance(client, contact["id"]) == Decimal("4")
    event = client.get(f"/v1/events/{purchase.json()['id']}").json()
    assert event["matched_transaction_id"] == posted.json()["id"]


def test_matching_a_pos_purchase_after_its_transaction_is_matched_on_intake_by_last4(
    client: Client, new_contact: Any
) -> None:
    contact = new_contact()  # the card is not registered: matched by its last 4 digits
    posted = post_transaction(client, transaction("T-BOOKS", "15.50", last4="9876"))
    assert [r["status"] for r in posted.json()["routes"]] == ["awaiting_match"]
    elsewhere = pos_purchase(
        client, contact, "15.50", payment_medium={"identifier": "4111111111111111"}
    )
    assert "matched_transaction_id" not in elsewhere.json()  # another card
    wrong_amount = pos_purchase(
        client, contact, "15.49", payment_medium={"identifier": "5555444433339876"}
    )
    assert "matched_transaction_id" not in wrong_amount.json()
    fits = pos_purchase(client, contact, "15.50", payment_medium={"identifier": "5555444433339876"})
    assert fits.status_code == 201
    assert fits.json()["matched_transaction_id"] == posted.json()["id"]
    route = client.get(
        f"/v1/processor-transactions/{posted.json()['id']}", headers=as_(PROCESSOR_KEY)
    ).json()["routes"][0]
    assert (route["status"], route["event_id"]) == ("matched", fits.json()["id"])
    again = pos_purchase(
        client, contact, "15.50", payment_medium={"identifier": "5555444433339876"}
    )
    assert "matched_transaction_id" not in again.json()  # matched once only


def test_matching_outside_the_window_waits_and_the_next_run_records_it(
    client: Client, new_contact: Any, app: Litestar
) -> None:
    contact = new_contact(payment_cards=["tok_late"])
    early = pos_purchase(client, contact, "12.00", at=moment(minutes=45))
    assert balance(client, contact["id"]) == Decimal("1.2")
    posted = post_transaction(client, transaction("T-BOOKS", "12.00", token="tok_late"))
    [route] = posted.json()["routes"]
    assert route["status"] == "awaiting_match"  # the POS purchase is 45 minutes away
    not_yet = client.post("/v1/evaluation-runs", json={}, headers=as_(ADMIN_KEY))
    assert not_yet.status_code == 202
    _wait_for_run(client, not_yet.json()["id"])
    assert _route(client, posted.json()["id"])["status"] == "awaiting_match"
    runtime = app.state.runtime
    real_clock = runtime.clock
    runtime.clock = lambda: real_clock() + timedelta(minutes=31)
    run = client.post("/v1/evaluation-runs", json={}, headers=as_(ADMIN_KEY))
    _wait_for_run(client, run.json()["id"])
    route = _route(client, posted.json()["id"])
    assert route["status"] == "recorded"
    recorded = client.get(f"/v1/events/{route['event_id']}").json()
    assert recorded["performed_by_unit"] == "mall-books"
    assert [p["sku"] for p in recorded["products"]] == ["BOOKS-CARD"]
    assert early.json()["id"] != route["event_id"]
    assert balance(client, contact["id"]) == Decimal("2.4")


def _route(client: Client, transaction_id: str) -> dict[str, Any]:
    answer = client.get(
        f"/v1/processor-transactions/{transaction_id}", headers=as_(PROCESSOR_KEY)
    ).json()
    route: dict[str, Any] = answer["routes"][0]
    return route


def _wait_for_run(client: Client, run_id: str) -> None:
    import time

    for _ in range(600):
        run = client.get(f"/v1/evaluation-runs/{run_id}", headers=as_(ADMIN_KEY)).json()
        if run["status"] != "running":
            assert run["status"] == "finished", run
            return
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish")


# ---- claims ----------------------------------------------------------------------------


def claim(
    client: Client, contact: dict[str, Any], amount: str, last4: str, on: str, **fields: Any
) -> Any:
    body = {
        "contact": {"contact_id": contact["id"]},
        "merchant_id": "fuel-co",
        "performed_on": on,
        "amount": amount,
        "last4": last4,
        **fields,
    }
    return client.post("/v1/transaction-claims", json=body, headers=as_(INTEGRATOR_KEY))


def test_claim_one_match_becomes_the_claimants_purchase_and_links_the_card(
    client: Client, new_contact: Any
) -> None:
    contact = new_contact()
    body = transaction("T-FUEL", "60.00", token="tok_fuel", last4="1111")
    posted = post_transaction(client, body)
    assert [r["status"] for r in posted.json()["routes"]] == ["unclaimed"]
    today = body["performed_on"][:10]
    missed = claim(client, contact, "59.00", "1111", today)
    assert missed.status_code == 422
    assert missed.json()["code"] == "no_matching_transaction"
    won = claim(client, contact, "60.00", "1111", today)
    assert won.status_code == 201, won.text
    answer = won.json()
    assert answer["transaction_id"] == posted.json()["id"]
    assert answer["card_linked"] is True
    assert answer["event"]["contact_id"] == contact["id"]
    assert answer["event"]["performed_by_unit"] == "fuel-1"
    assert [(a["offer_id"], a["amount"]) for a in answer["event"]["awards"]] == [
        ("merchant-cashback", 6.0)
    ]
    assert balance(client, contact["id"]) == Decimal("6")
    assert client.get(f"/v1/contacts/{contact['id']}").json()["payment_cards"] == ["tok_fuel"]
    route = _route(client, posted.json()["id"])
    assert (route["status"], route["event_id"]) == ("claimed", answer["event"]["id"])
    twice = claim(client, new_contact(), "60.00", "1111", today)
    assert twice.status_code == 409
    assert twice.json()["code"] == "already_claimed"
    # The card is now the contact's: its next transaction is recorded at once.
    next_one = post_transaction(client, transaction("T-FUEL", "10.00", token="tok_fuel"))
    assert [r["status"] for r in next_one.json()["routes"]] == ["recorded"]
    assert balance(client, contact["id"]) == Decimal("7")


def test_claim_ambiguous_unknown_merchant_old_and_unidentified_direct_routes(
    client: Client, new_contact: Any
) -> None:
    contact = new_contact()
    first = transaction("T-FUEL", "30.00", last4="2222", at=moment(hours=2))
    second = transaction("T-FUEL", "30.00", last4="2222", at=moment(hours=1))
    post_transaction(client, first)
    post_transaction(client, second)
    day = first["performed_on"][:10]
    several = claim(client, contact, "30.00", "2222", day)
    assert several.status_code == 409
    assert several.json()["code"] == "ambiguous_claim"
    exact = claim(client, contact, "30.00", "2222", moment(hours=2, minutes=-10))
    assert exact.status_code == 409  # both are within a day of that time too
    unknown = claim(client, contact, "30.00", "2222", day, merchant_id="no-such")
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["path"] == "/merchant_id"
    old = transaction("T-FUEL", "31.00", last4="3333", at=moment(61))
    assert post_transaction(client, old).status_code == 201
    too_old = claim(client, contact, "31.00", "3333", old["performed_on"][:10])
    assert too_old.status_code == 422
    # an unidentified direct-mode transaction is claimable at its merchant too
    cafe = post_transaction(client, transaction("T-CAFE", "8.00", last4="4444"))
    assert cafe.json()["routes"][0]["status"] == "unidentified"
    got = claim(client, contact, "8.00", "4444", moment(), merchant_id="cafe-co")
    assert got.status_code == 201, got.text
    assert got.json()["event"]["performed_by_unit"] == "mall-cafe"


def test_claim_failures_are_limited_per_contact_and_day(client: Client, new_contact: Any) -> None:
    contact = new_contact()
    post_transaction(client, transaction("T-FUEL", "5.00", last4="5555"))
    for _ in range(10):
        assert claim(client, contact, "4.00", "5555", moment()).status_code == 422
    limited = claim(client, contact, "5.00", "5555", moment())  # would have matched
    assert limited.status_code == 429
    assert limited.json()["code"] == "too_many_failed_claims"
    other = new_contact()
    assert claim(client, other, "5.00", "5555", moment()).status_code == 201


# ---- merchant filters ------------------------------------------------------------------


def test_events_and_analytics_filter_by_merchant(client: Client, new_contact: Any) -> None:
    contact = new_contact(payment_cards=["tok_filter"])
    cafe = post_transaction(client, transaction("T-CAFE", "50.00", token="tok_filter"))
    cafe_event = cafe.json()["routes"][0]["event_id"]
    elsewhere = pos_purchase(client, contact, "7.00", unit="store-001")
    assert elsewhere.status_code == 201
    listed = client.get("/v1/events?merchant_id=cafe-co").json()["items"]
    assert [e["id"] for e in listed] == [cafe_event]
    assert client.get("/v1/events?merchant_id=nobody").json()["items"] == []
    assert len(client.get("/v1/events").json()["items"]) == 2
    summary = client.get("/v1/analytics/summary?merchant_id=cafe-co").json()
    assert summary["merchant_id"] == "cafe-co"
    assert summary["events"] == [{"type": "purchase", "posted": 1, "cancelled": 0}]
    assert summary["awards"]["by_offer"] == [
        {"offer_id": "merchant-cashback", "count": 1, "amount": 5.0}
    ]
    assert client.get("/v1/analytics/summary?merchant_id=fuel-co").json()["events"] == []
    whole = client.get("/v1/analytics/summary").json()
    assert sum(row["posted"] for row in whole["events"]) == 2


def test_simulations_resolve_terminals_and_explain_the_merchants_condition(
    client: Client,
) -> None:
    event = {
        "performed_on": "2026-03-04T10:00:00+02:00",
        "performed_by_terminal": "T-FUEL",
        "products": [{"sku": "FUEL", "net_amount": "30.00"}],
    }
    at_terminal = client.post("/v1/simulations", json={"type": "purchase", "event": event})
    assert at_terminal.status_code == 200, at_terminal.text
    assert [(a["offer_id"], a["amount"]) for a in at_terminal.json()["awards"]] == [
        ("merchant-cashback", 3.0)
    ]
    del event["performed_by_terminal"]
    event["performed_by_unit"] = "store-002"
    outside = client.post("/v1/simulations", json={"type": "purchase", "event": event}).json()
    cashback = {o["offer_id"]: o for o in outside["offers"]}["merchant-cashback"]
    assert cashback["failed"] == [
        {
            "condition": "merchants",
            "message": "merchants: unit store-002 of no merchant, not cafe-co, books-co, fuel-co",
        }
    ]
    shared = {**event, "performed_by_terminal": "T-SHARED"}
    del shared["performed_by_unit"]
    refused = client.post("/v1/simulations", json={"type": "purchase", "event": shared})
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["path"] == "/event/performed_by_terminal"
