"""Offer budgets through HTTP, on both databases: an award past the budget is cut to what
remains, then the offer stops awarding; on intake and in evaluation runs; GET
/v1/offers and the analytics summary show what is used and left; explanations say
"budget exhausted". Test offers: budget-capped (3.00 a purchase, 10.00 in total, on
intake, unit budget-shop), budget-monthly-run (4.00, 10.00 a month, batch, unit
budget-run-shop)."""

from __future__ import annotations

import time
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from tests.conftest import BOTH, moment

Client = TestClient[Litestar]
pytestmark = pytest.mark.parametrize("database_url", BOTH, indirect=True)


def purchase(client: Client, contact: dict[str, Any], unit: str, *, immediate: bool) -> Any:
    body = {
        "contact": {"contact_id": contact["id"]},
        "performed_on": moment(),
        "performed_by_unit": unit,
        "process_immediately": immediate,
        "reference_number": "R-1",
        "products": [{"sku": "THING", "net_amount": "20.00"}],
    }
    response = client.post("/v1/events/purchases", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def awarded(event: dict[str, Any], offer_id: str) -> list[Decimal]:
    return [Decimal(str(a["amount"])) for a in event["awards"] if a["offer_id"] == offer_id]


def budget_of(client: Client, offer_id: str) -> dict[str, Any]:
    offers = client.get("/v1/offers", params={"limit": 500}).json()["items"]
    [offer] = [o for o in offers if o["id"] == offer_id]
    budget: dict[str, Any] = offer["budget"]
    return budget


def test_intake_cuts_the_award_that_passes_the_budget_then_stops(
    client: Client, new_contact: Any
) -> None:
    contact = new_contact()
    fresh = budget_of(client, "budget-capped")
    assert fresh == {
        "amount": 10.0,
        "period": "total",
        "current_period": "total",
        "used": 0.0,
        "left": 10.0,
    }
    got = [awarded(purchase(client, contact, "budget-shop", immediate=True), "budget-capped")]
    got += [
        awarded(purchase(client, contact, "budget-shop", immediate=True), "budget-capped")
        for _ in range(4)
    ]
    assert got == [[Decimal(3)], [Decimal(3)], [Decimal(3)], [Decimal(1)], []]
    wallet = client.get(f"/v1/contacts/{contact['id']}").json()["wallet"]
    assert Decimal(str(wallet["balance"])) == 10
    assert budget_of(client, "budget-capped")["used"] == 10.0
    assert budget_of(client, "budget-capped")["left"] == 0.0
    summary = client.get("/v1/analytics/summary").json()
    [capped] = [b for b in summary["budgets"] if b["offer_id"] == "budget-capped"]
    assert (capped["used"], capped["left"]) == (10.0, 0.0)
    [other] = [o for o in summary["awards"]["by_offer"] if o["offer_id"] == "budget-capped"]
    assert (other["count"], other["amount"]) == (4, 10.0)
    # an offer without a budget shows none
    assert client.get("/v1/offers").json()["items"][0]["budget"] is None


def test_runs_charge_the_budget_of_the_period(client: Client, new_contact: Any) -> None:
    contact = new_contact()
    events = [purchase(client, contact, "budget-run-shop", immediate=False) for _ in range(4)]
    assert all(e["awards"] == [] for e in events)  # batch: decided by the run
    run = client.post("/v1/evaluation-runs", json={})
    assert run.status_code == 202, run.text
    for _ in range(600):
        state = client.get(f"/v1/evaluation-runs/{run.json()['id']}").json()
        if state["status"] != "running":
            break
        time.sleep(0.05)
    assert state["status"] == "finished", state
    amounts = sorted(
        (
            a
            for e in events
            for a in awarded(client.get(f"/v1/events/{e['id']}").json(), "budget-monthly-run")
        ),
        reverse=True,
    )
    assert amounts == [Decimal(4), Decimal(4), Decimal(2)]
    budget = budget_of(client, "budget-monthly-run")
    assert (budget["used"], budget["left"], budget["period"]) == (10.0, 0.0, "month")
    nicosia = datetime.now(ZoneInfo("Europe/Nicosia"))  # the test definition's zone
    assert budget["current_period"] == f"{nicosia.year:04d}-{nicosia.month:02d}"


def test_explanations_say_budget_exhausted(client: Client, new_contact: Any) -> None:
    contact = new_contact()
    events = [purchase(client, contact, "budget-shop", immediate=True) for _ in range(5)]
    assert awarded(events[4], "budget-capped") == []
    why = client.get(f"/v1/events/{events[4]['id']}", params={"explain": "true"}).json()
    [outcome] = [o for o in why["explanation"]["offers"] if o["offer_id"] == "budget-capped"]
    assert outcome["status"] == "not_applied"
    assert outcome["failed"] == [
        {"condition": "budget", "message": "budget exhausted: 10.00 of 10.00 awarded in total"}
    ]
    first = client.get(f"/v1/events/{events[0]['id']}", params={"explain": "true"}).json()
    [applied] = [o for o in first["explanation"]["offers"] if o["offer_id"] == "budget-capped"]
    assert applied["status"] == "applied"  # it did award that purchase
    simulated = client.post(
        "/v1/simulations",
        json={
            "type": "purchase",
            "event": {
                "performed_on": moment(),
                "performed_by_unit": "budget-shop",
                "products": [{"sku": "THING", "net_amount": "20.00"}],
            },
        },
    ).json()
    [sim] = [o for o in simulated["offers"] if o["offer_id"] == "budget-capped"]
    assert sim["status"] == "not_applied"
    assert sim["failed"][0]["condition"] == "budget"
    assert all(a["offer_id"] != "budget-capped" for a in simulated["awards"])
