"""Invoices under concurrency, on SQLite and PostgreSQL: the same invoice (and the same
credit note) posted 20 times at once to ``rewards serve --workers 2``, released together
at a barrier with proof that the requests overlapped (tests.serving). The invoice row is
claimed first (INSERT ... ON CONFLICT DO NOTHING on (number, invoice_type)), so one
request writes the purchase (or the return) and the others answer it."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.conftest import ADMIN_KEY, ROOT, moment
from tests.serving import api, assert_overlapped, json_of, post_together, rewards_serve

RULESETS = ROOT / "tests" / "api" / "invoice_rulesets"  # beans-tenth and basket-bonus
BURST = 20


def test_the_same_invoice_posted_at_once_makes_one_purchase(
    own_database_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    with (
        rewards_serve(
            own_database_url, log, api_key=ADMIN_KEY, workers=2, rulesets_dir=RULESETS
        ) as server,
        api(server, ADMIN_KEY) as client,
    ):
        contact = json_of(client.post("/v1/contacts", json={"code": "ANN"}), 201)
        wallet = contact["wallet"]["code"]
        invoice: dict[str, Any] = {
            "invoice_type": "pos-receipt",
            "number": "INV-1",
            "contact": {"wallet_code": wallet},
            "issued_on": moment(),
            "performed_by_unit": "store-001",
            "lines": [
                {"sku": "BEANS-DARK", "quantity": 2, "unit_price": "20.00", "vat_amount": "3.00"},
                {"sku": "MUG", "unit_price": "17.00"},
            ],
        }

        answers = post_together(server, [("/v1/invoices", invoice)] * BURST, ADMIN_KEY)

        assert_overlapped(answers, server)
        assert Counter(a.status for a in answers) == {201: 1, 200: BURST - 1}, [
            a.body for a in answers if a.status not in (200, 201)
        ]
        [created] = [a.body for a in answers if a.status == 201]
        assert all(a.body == created for a in answers)  # the replays answer the original
        page = json_of(client.get("/v1/events", params={"contact_id": contact["id"]}), 200)
        assert [event["id"] for event in page["items"]] == [created["purchase_event_id"]]
        assert page["items"][0]["external_reference"] == "pos-receipt/INV-1"
        wallet_now = json_of(client.get(f"/v1/wallets/{wallet}"), 200)
        assert wallet_now["balance"] == Decimal("8.30")  # 4.30 + 4.00, awarded once

        credit_note = {
            **invoice,
            "invoice_type": "credit-note",
            "number": "CN-1",
            "credits_invoice": "INV-1",
            "lines": [{"sku": "BEANS-DARK", "quantity": 1, "unit_price": "20.00"}],
        }

        answers = post_together(server, [("/v1/invoices", credit_note)] * BURST, ADMIN_KEY)

        assert_overlapped(answers, server)
        assert Counter(a.status for a in answers) == {201: 1, 200: BURST - 1}, [
            a.body for a in answers if a.status not in (200, 201)
        ]
        [credited] = [a.body for a in answers if a.status == 201]
        assert all(a.body == credited for a in answers)
        assert [r["amount"] for r in credited["reversals"]] == [Decimal("-2.15"), Decimal("-1.43")]
        wallet_now = json_of(client.get(f"/v1/wallets/{wallet}"), 200)
        assert wallet_now["balance"] == Decimal("4.72")  # reversed once
        ledger = json_of(client.get(f"/v1/wallets/{wallet}/transactions"), 200)["items"]
        assert Counter(entry["kind"] for entry in ledger) == {"award": 2, "award_reversal": 2}
