"""Invoices (PLATFORM.md, purchase automation) through HTTP, on SQLite and PostgreSQL:
an invoice of a listed type is a purchase with its awards, a credit note returns lines
of the credited invoice's purchase in proportion, any other type is stored; idempotency
by (invoice_type, number); refusals point at the invoice's fields.

The offers (tests/api/invoice_rulesets): ``beans-tenth`` 10% of each BEANS-* line,
``basket-bonus`` 4.00 for a purchase of 50.00 or more; purchases are evaluated on
intake. The standard invoice: 2 x BEANS-DARK at 20.00 + 3.00 VAT (43.00) and a MUG
at 17.00: 60.00, awarded 4.30 + 4.00."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from tests.conftest import BOTH, INTEGRATOR_KEY, ROOT, moment

Client = TestClient[Litestar]
pytestmark = pytest.mark.parametrize("database_url", BOTH, indirect=True)

LINES = [
    {"sku": "BEANS-DARK", "quantity": 2, "unit_price": "20.00", "vat_amount": "3.00"},
    {"sku": "MUG", "unit_price": 17},
]


@pytest.fixture
def rulesets_dir() -> Path:
    return ROOT / "tests" / "api" / "invoice_rulesets"


@pytest.fixture
def ann(new_contact: Any) -> dict[str, Any]:
    contact: dict[str, Any] = new_contact(code="ANN", cim="CIM-ANN")
    return contact


def invoice(who: dict[str, Any], number: str = "INV-1", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "invoice_type": "pos-receipt",
        "number": number,
        "contact": {"wallet_code": who["wallet"]["code"]},
        "issued_on": moment(),
        "performed_by_unit": "store-001",
        "lines": LINES,
    }
    body.update(fields)
    return body


def credit_note(
    who: dict[str, Any], number: str, credits: str, quantity: float = 1, **fields: Any
) -> dict[str, Any]:
    lines = [{"sku": "BEANS-DARK", "quantity": quantity, "unit_price": "20.00"}]
    return invoice(
        who, number, invoice_type="credit-note", credits_invoice=credits, lines=lines, **fields
    )


def post(client: Client, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    response = client.post("/v1/invoices", json=body)
    assert response.status_code == status, response.text
    answer: dict[str, Any] = response.json()
    return answer


def balance(client: Client, contact: dict[str, Any]) -> float:
    wallet = client.get(f"/v1/wallets/{contact['wallet']['code']}").json()
    amount: float = wallet["balance"]
    return amount


def purchases_of(client: Client, contact: dict[str, Any]) -> list[dict[str, Any]]:
    page = client.get("/v1/events", params={"contact_id": contact["id"], "type": "purchase"})
    items: list[dict[str, Any]] = page.json()["items"]
    return items


def refusal(response: Any, status: int, code: str, path: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    assert problem["code"] == code, problem
    assert [error["path"] for error in problem["errors"]] == [path], problem
    return problem


# ---- an invoice of a listed type is a purchase -----------------------------------------


def test_an_invoice_of_a_listed_type_makes_a_purchase_with_its_awards(
    client: Client, ann: Any
) -> None:
    issued_on = "2026-11-02T10:00:00+02:00"
    response = client.post(
        "/v1/invoices",
        json=invoice(ann, issued_on=issued_on, description="November"),
        headers={"Authorization": f"Bearer {INTEGRATOR_KEY}"},  # integrators post invoices
    )
    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["processed_as"] == "purchase" and answer["purchase_event_id"]
    assert (answer["invoice_type"], answer["number"], answer["contact_id"]) == (
        "pos-receipt",
        "INV-1",
        ann["id"],
    )
    assert answer["issued_on"] == "2026-11-02T08:00:00Z"
    assert answer["lines"] == [
        {"sku": "BEANS-DARK", "quantity": 2, "unit_price": 20.0, "vat_amount": 3.0},
        {"sku": "MUG", "quantity": 1, "unit_price": 17.0, "vat_amount": 0.0},
    ]
    assert answer["returned"] is None and answer["reversals"] is None
    assert answer["credited_invoice_id"] is None and answer["currency"] is None

    event = client.get(f"/v1/events/{answer['purchase_event_id']}").json()
    assert (event["type"], event["state"], event["contact_id"]) == ("purchase", "posted", ann["id"])
    assert (event["reference_number"], event["external_system"], event["external_reference"]) == (
        "INV-1",
        "invoice",
        "pos-receipt/INV-1",
    )
    assert event["performed_on"] == "2026-11-02T08:00:00Z"
    assert event["performed_by_unit"] == "store-001" and event["description"] == "November"
    assert [
        (p["sku"], p["quantity"], p["net_amount"], p["total_amount"]) for p in event["products"]
    ] == [
        ("BEANS-DARK", 2, 40.0, 43.0),  # a stored line's net is quantity x unit net
        ("MUG", 1, 17.0, 17.0),
    ]
    assert event["total_amount"] == 60.0 and event["evaluated"] is True
    assert [(a["offer_id"], a["amount"]) for a in event["awards"]] == [
        ("beans-tenth", 4.3),
        ("basket-bonus", 4.0),
    ]
    assert balance(client, ann) == 8.3
    ledger = client.get(f"/v1/wallets/{ann['wallet']['code']}/transactions").json()["items"]
    assert {(entry["kind"], entry["event_id"]) for entry in ledger} == {
        ("award", answer["purchase_event_id"])
    }
    assert client.get(f"/v1/invoices/{answer['id']}").json() == answer


def test_a_foreign_currency_invoice_is_converted_like_a_purchase(client: Client, ann: Any) -> None:
    answer = post(client, invoice(ann, currency="USD", invoice_type="monthly-bill"))
    assert answer["currency"] == "USD"
    event = client.get(f"/v1/events/{answer['purchase_event_id']}").json()
    assert (event["original_currency"], event["original_total_amount"]) == ("USD", 60.0)
    assert (event["currency"], event["total_amount"]) == ("EUR", 55.2)  # 39.56 + 15.64


def test_the_same_invoice_again_is_a_replay_and_another_body_a_409(
    client: Client, ann: Any
) -> None:
    body = invoice(ann)
    first = post(client, body)
    assert post(client, body, 200) == first
    other = client.post("/v1/invoices", json={**body, "lines": LINES[:1]})
    problem = refusal(other, 409, "idempotency_conflict", "/number")
    assert first["id"] in problem["detail"]
    # one purchase, awarded once
    assert [event["id"] for event in purchases_of(client, ann)] == [first["purchase_event_id"]]
    assert balance(client, ann) == 8.3
    # the key is the pair: the same number under another listed type is another invoice
    bill = post(client, {**body, "invoice_type": "monthly-bill"})
    assert bill["id"] != first["id"] and bill["purchase_event_id"] != first["purchase_event_id"]
    assert balance(client, ann) == 16.6


def test_a_purchase_already_under_the_invoice_reference_is_a_409(client: Client, ann: Any) -> None:
    posted = client.post(
        "/v1/events/purchases",
        json={
            "contact": {"contact_id": ann["id"]},
            "performed_on": moment(),
            "performed_by_unit": "store-001",
            "reference_number": "INV-9",
            "external_system": "invoice",
            "external_reference": "pos-receipt/INV-9",
            "products": [{"sku": "MUG", "net_amount": 17}],
        },
    )
    assert posted.status_code == 201, posted.text
    refusal(
        client.post("/v1/invoices", json=invoice(ann, "INV-9")),
        409,
        "idempotency_conflict",
        "/number",
    )
    assert len(purchases_of(client, ann)) == 1


def test_an_otp_identifies_an_invoice_contact_once(client: Client, ann: Any) -> None:
    for invoice_type in ("pos-receipt", "quote"):  # through the purchase path, and stored
        otp = client.post(f"/v1/contacts/{ann['id']}/otp", json={}).json()["otp"]
        body = invoice(ann, f"OTP-{invoice_type}", invoice_type=invoice_type, contact={"otp": otp})
        assert post(client, body)["contact_id"] == ann["id"]
        again = invoice(
            ann, f"OTP2-{invoice_type}", invoice_type=invoice_type, contact={"otp": otp}
        )
        refusal(client.post("/v1/invoices", json=again), 422, "otp_invalid", "/contact/otp")


# ---- refusals point at the invoice's fields --------------------------------------------


def test_refusals_of_the_purchase_point_at_the_invoice_fields(client: Client, ann: Any) -> None:
    unknown = invoice(ann, contact={"cim": "CIM-NOBODY"})
    refusal(client.post("/v1/invoices", json=unknown), 422, "contact_not_found", "/contact/cim")
    currency = invoice(ann, currency="JPY")
    refusal(client.post("/v1/invoices", json=currency), 422, "unknown_currency", "/currency")
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    problem = refusal(
        client.post("/v1/invoices", json=invoice(ann, issued_on=future)),
        422,
        "performed_on_in_future",
        "/issued_on",
    )
    assert problem["detail"] == "issued_on is more than 5 minutes in the future."
    # the body's own checks (the schema) point at the invoice's fields too
    for change, path in [
        ({"lines": [{"sku": "MUG", "unit_price": "1.234"}]}, "/lines/0/unit_price"),
        ({"lines": [{"sku": "MUG", "unit_price": 1, "quantity": 1.0005}]}, "/lines/0/quantity"),
        ({"lines": [{"sku": "MUG", "unit_price": 1, "net_amount": 1}]}, "/lines/0/net_amount"),
        ({"lines": []}, "/lines"),
        ({"invoice_type": "pos/receipt"}, "/invoice_type"),
        ({"number": "INV\u0000"}, "/number"),
        ({"issued_on": "2026-02-30T10:00:00Z"}, "/issued_on"),
        ({"performed_by_unit": None}, "/performed_by_unit"),
        ({"contact": {"cim": "A", "wallet_code": "B"}}, "/contact"),
    ]:
        refusal(
            client.post("/v1/invoices", json=invoice(ann, **change)), 422, "validation_failed", path
        )
    # nothing of a refused invoice stays: the same number is free
    assert purchases_of(client, ann) == []
    assert post(client, invoice(ann))["number"] == "INV-1"


# ---- credit notes -----------------------------------------------------------------------


def test_a_credit_note_returns_its_lines_and_reverses_awards_in_proportion(
    client: Client, ann: Any
) -> None:
    bought = post(client, invoice(ann))
    assert balance(client, ann) == 8.3
    body = credit_note(ann, "CN-1", "INV-1", description="one bag back")
    credited = post(client, body)
    assert credited["processed_as"] == "credit_note"
    assert credited["credits_invoice"] == "INV-1"
    assert credited["credited_invoice_id"] == bought["id"]
    assert credited["purchase_event_id"] == bought["purchase_event_id"]
    # half of the 43.00 line; 10% of it back from beans-tenth, 21.50/60.00 of basket-bonus
    assert credited["returned"] == [
        {"index": 0, "sku": "BEANS-DARK", "quantity": 1, "amount": 21.5}
    ]
    assert [(r["kind"], r["amount"], r["offer_id"]) for r in credited["reversals"]] == [
        ("award_reversal", -2.15, "beans-tenth"),
        ("award_reversal", -1.43, "basket-bonus"),
    ]
    assert balance(client, ann) == 4.72
    assert credited["reversals"][-1]["balance_after"] == 4.72
    # a replay reverses nothing more
    assert post(client, body, 200) == credited
    assert balance(client, ann) == 4.72
    assert client.get(f"/v1/invoices/{credited['id']}").json() == credited
    # more than is left to return: the returns path's refusal, at the credit note's line
    over = credit_note(ann, "CN-2", "INV-1", quantity=2)
    problem = refusal(
        client.post("/v1/invoices", json=over), 422, "return_exceeds_purchase", "/lines/0/quantity"
    )
    assert "more than bought" in problem["errors"][0]["message"]
    assert balance(client, ann) == 4.72
    # the rest comes back: everything the bag earned goes, exactly
    rest = post(client, credit_note(ann, "CN-2", "INV-1"))
    assert [r["amount"] for r in rest["reversals"]] == [-2.15, -1.44]
    assert balance(client, ann) == 1.13  # 4.72 - 3.59
    purchase = client.get(f"/v1/events/{bought['purchase_event_id']}").json()
    assert purchase["state"] == "posted"  # a return, not a cancellation


def test_credit_note_refusals_point_at_the_credit_note_fields(
    client: Client, ann: Any, new_contact: Any
) -> None:
    post(client, invoice(ann))
    post(client, invoice(ann, "Q-1", invoice_type="quote"))
    bob = new_contact(code="BOB")
    post(client, invoice(bob, "BOB-1"))
    for credits in ("INV-404", "Q-1", "BOB-1"):  # unknown, stored only, another contact's
        refusal(
            client.post("/v1/invoices", json=credit_note(ann, f"CN-{credits}", credits)),
            422,
            "credited_invoice_not_found",
            "/credits_invoice",
        )
    missing = credit_note(ann, "CN-X", "INV-1")
    del missing["credits_invoice"]
    refusal(
        client.post("/v1/invoices", json=missing),
        422,
        "credits_invoice_required",
        "/credits_invoice",
    )
    # the same number under two listed types: the credit note names the type
    post(client, invoice(ann, invoice_type="monthly-bill"))
    both = credit_note(ann, "CN-2", "INV-1")
    problem = refusal(
        client.post("/v1/invoices", json=both),
        409,
        "ambiguous_credited_invoice",
        "/credits_invoice_type",
    )
    assert "monthly-bill, pos-receipt" in problem["detail"]
    named = post(client, {**both, "credits_invoice_type": "monthly-bill"})
    bill = client.get("/v1/events", params={"contact_id": ann["id"]}).json()["items"][0]
    assert named["purchase_event_id"] == bill["id"]
    assert bill["external_reference"] == "monthly-bill/INV-1"
    assert balance(client, ann) == 13.02  # 2 x 8.30 - 3.58; bob's awards are bob's
    assert balance(client, bob) == 8.3


# ---- any other type is stored ----------------------------------------------------------


def test_an_unlisted_type_is_stored_and_makes_nothing(client: Client, ann: Any) -> None:
    stored = post(client, invoice(ann, "Q-1", invoice_type="quote", credits_invoice="INV-0"))
    assert stored["processed_as"] == "stored"
    assert stored["purchase_event_id"] is None and stored["returned"] is None
    assert stored["credits_invoice"] == "INV-0" and stored["credited_invoice_id"] is None
    assert stored["contact_id"] == ann["id"]
    assert purchases_of(client, ann) == [] and balance(client, ann) == 0
    assert client.get(f"/v1/invoices/{stored['id']}").json() == stored
    nobody = invoice(ann, "Q-2", invoice_type="quote", contact={"contact_code": "NOBODY"})
    refusal(
        client.post("/v1/invoices", json=nobody), 422, "contact_not_found", "/contact/contact_code"
    )


def test_every_type_keeps_the_business_time_bounds(client: Client, ann: Any) -> None:
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    for n, invoice_type in enumerate(["quote", "credit-note"]):
        body = invoice(ann, f"T-{n}", invoice_type=invoice_type, issued_on=future)
        body["credits_invoice"] = "INV-1"
        refusal(client.post("/v1/invoices", json=body), 422, "performed_on_in_future", "/issued_on")
        early = {**body, "issued_on": "1999-12-31T23:59:59Z"}
        refusal(client.post("/v1/invoices", json=early), 422, "validation_failed", "/issued_on")
    earliest = invoice(ann, "T-2", invoice_type="quote", issued_on="2000-01-01T00:30:00+23:59")
    assert post(client, earliest)["issued_on"] == "1999-12-31T00:31:00Z"


def test_an_unknown_invoice_id_is_a_404(client: Client) -> None:
    for invoice_id in ("0190a1b2-0000-7000-8000-000000000000", "abc%00def"):
        response = client.get(f"/v1/invoices/{invoice_id}")
        assert response.status_code == 404, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] != "invoice_not_found"  # a control character: no such path
    known = client.get("/v1/invoices/0190a1b2-0000-7000-8000-000000000000").json()
    assert known["code"] == "invoice_not_found"


# ---- cancelling the purchase leaves the invoice ----------------------------------------


def test_cancelling_the_purchase_leaves_the_invoice(client: Client, ann: Any) -> None:
    body = invoice(ann)
    posted = post(client, body)
    cancelled = client.post(f"/v1/events/{posted['purchase_event_id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert balance(client, ann) == 0
    assert client.get(f"/v1/invoices/{posted['id']}").json() == posted
    assert post(client, body, 200) == posted  # still its replay
    # a credit note of it meets the returns path's refusal, pointing at what it credits
    refusal(
        client.post("/v1/invoices", json=credit_note(ann, "CN-1", "INV-1")),
        409,
        "event_cancelled",
        "/credits_invoice",
    )


def test_an_invoice_names_its_terminal_and_its_contact_by_payment_card(
    client: Client, new_contact: Any
) -> None:
    card_holder = new_contact(payment_cards=["tok_invoice"])
    body = invoice(card_holder, "INV-T1", contact={"payment_card": "tok_invoice"})
    del body["performed_by_unit"]
    body["performed_by_terminal"] = "T-A"
    made = post(client, body)
    assert made["performed_by_unit"] == "store-002"
    purchase = client.get(f"/v1/events/{made['purchase_event_id']}").json()
    assert (purchase["contact_id"], purchase["performed_by_unit"]) == (
        card_holder["id"],
        "store-002",
    )
    for terminal, code in (("T-AB", "ambiguous_terminal"), ("T-NONE", "unknown_terminal")):
        refused = client.post(
            "/v1/invoices",
            json={**body, "number": f"INV-{terminal}", "performed_by_terminal": terminal},
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == code
        assert refused.json()["errors"][0]["path"] == "/performed_by_terminal"
        events = client.get("/v1/events", params={"contact_id": card_holder["id"]}).json()
        assert [e["id"] for e in events["items"]] == [purchase["id"]]  # nothing made
