"""Money leaves with exactly two decimals in every answer, whatever produced it: the
definition's spend limits (``min_amount: 1``), a request's ``1``, cents from the ledger.
The OpenAPI document marks the money fields; every one of them in the answers below is
checked in the raw JSON text, where ``1`` and ``1.00`` differ."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from tests.conftest import BOTH, fund, moment, purchase_body

Client = TestClient[Litestar]
pytestmark = pytest.mark.parametrize("database_url", BOTH, indirect=True)
TWO_DECIMALS = re.compile(r"-?[0-9]+\.[0-9]{2}")


def money_fields(client: Client) -> set[str]:
    """Names of the answer properties the OpenAPI document describes as money."""
    schemas = client.get("/schema/openapi.json").json()["components"]["schemas"]
    return {
        name
        for schema in schemas.values()
        for name, field in schema.get("properties", {}).items()
        if "with two decimals" in field.get("description", "")
    }


def raw_numbers(text: str) -> Any:
    """The answer with every JSON number kept as its text."""
    return json.loads(text, parse_float=str, parse_int=str)


def money_in(answer: Any, names: set[str], where: str = "") -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if isinstance(answer, dict):
        for key, value in answer.items():
            if key in names and isinstance(value, str):
                found.append((f"{where}/{key}", value))
            found += money_in(value, names, f"{where}/{key}")
    elif isinstance(answer, list):
        for index, item in enumerate(answer):
            found += money_in(item, names, f"{where}/{index}")
    return found


def test_estimate_spend_limits_and_otp_amounts_have_two_decimals(
    client: Client, new_contact: Any
) -> None:
    ann = new_contact()
    fund(client, ann, "30")
    estimate = client.post(
        "/v1/purchase-estimates",
        json={
            "contact": {"contact_id": ann["id"]},
            "performed_by_unit": "store-001",
            "products": [{"sku": "CAKE-CHOC", "net_amount": 5}],
            "spend": {"amount": 2},
            "reserve": True,
        },
    )
    assert estimate.status_code == 201, estimate.text
    # the test definition: spend_requests {min_amount: 1, max_amount: 50}
    assert '"min_spend":1.00,"max_spend":50.00' in estimate.text
    again = client.get(f"/v1/purchase-estimates/{estimate.json()['id']}")
    assert '"min_spend":1.00,"max_spend":50.00' in again.text
    otp = client.post(f"/v1/contacts/{ann['id']}/otp", json={"spend_amount": 1})
    assert otp.status_code == 201 and '"spend_amount":1.00' in otp.text


def test_every_money_field_of_the_answers_has_two_decimals(
    client: Client, new_contact: Any
) -> None:
    names = money_fields(client)
    assert {"balance", "amount", "min_spend", "max_spend", "spend_amount"} <= names
    assert "quantity" not in names  # quantities are not money: 2 stays 2
    ann = new_contact(segments=["gold"])
    fund(client, ann, "30")
    wallet = ann["wallet"]["code"]
    purchase = client.post(
        "/v1/events/purchases",
        json=purchase_body(
            wallet,  # gold-basket: 5% of 100, 5.00, returned in half
            performed_by_unit="store-003",
            payment_medium={"brand": "visa", "type": "credit"},
            process_immediately=True,
            products=[{"sku": "BASKET", "quantity": 2, "net_amount": 50, "vat_amount": 0}],
            spend={"amount": 1},
        ),
    )
    assert purchase.status_code == 201, purchase.text
    event_id = purchase.json()["id"]
    spend = client.post(
        "/v1/events/spend-requests",
        json={
            "contact": {"contact_id": ann["id"]},
            "performed_on": moment(),
            "purchase_event_id": event_id,
            "requested_amount": 2,
        },
    )
    assert spend.status_code == 201, spend.text
    answers = [
        purchase,
        spend,
        client.post(
            f"/v1/events/{event_id}/returns", json={"products": [{"sku": "BASKET", "quantity": 1}]}
        ),
        client.post(f"/v1/events/{spend.json()['id']}/cancel"),
        client.get(f"/v1/contacts/{ann['id']}"),
        client.get(f"/v1/wallets/{wallet}"),
        client.get(f"/v1/wallets/{wallet}/transactions"),
        client.get("/v1/events"),
        client.get("/v1/analytics/summary"),
        client.post("/v1/evaluation-runs", json={}),
    ]
    checked = 0
    for answer in answers:
        assert answer.status_code < 300, (answer.request.url, answer.text)
        for where, value in money_in(raw_numbers(answer.text), names):
            assert TWO_DECIMALS.fullmatch(value), (answer.request.url.path, where, value)
            checked += 1
    assert checked > 50
    assert '"quantity":2,' in purchase.text
    assert [a["amount"] for a in purchase.json()["awards"]] == [5.0]
