"""No interleaving overdraws a wallet, on SQLite and PostgreSQL: spends and reservations
sent together to ``rewards serve --workers 2`` (two processes), with proof that they
overlapped (tests.serving)."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY, BOTH, fund, moment
from tests.serving import RewardsServer, api, assert_overlapped, json_of, post_together

pytestmark = pytest.mark.parametrize("database_url", BOTH, indirect=True)


def funded_contact(client: httpx.Client, amount: str) -> dict[str, Any]:
    """A new contact whose wallet holds ``amount``."""
    contact: dict[str, Any] = json_of(client.post("/v1/contacts", json={}), 201)
    fund(client, contact, amount)  # conftest.fund takes any httpx client
    return contact


def ledger(client: httpx.Client, wallet_code: str) -> list[dict[str, Any]]:
    """Every entry of the wallet's ledger (one page: the tests write fewer than 500)."""
    page = json_of(
        client.get(f"/v1/wallets/{wallet_code}/transactions", params={"limit": 500}), 200
    )
    assert page["next_cursor"] is None
    entries: list[dict[str, Any]] = page["items"]
    return entries


def test_200_concurrent_spends_of_1_against_100(two_workers: RewardsServer) -> None:
    with api(two_workers, ADMIN_KEY) as client:
        contact = funded_contact(client, "100.00")
        purchase = client.post(
            "/v1/events/purchases",
            json={
                "contact": {"contact_id": contact["id"]},
                "performed_on": moment(),
                "performed_by_unit": "store-001",
                "reference_number": "BIG",
                "products": [{"sku": "THING", "net_amount": "1000.00"}],
            },
        )
        spend = {
            "contact": {"contact_id": contact["id"]},
            "performed_on": moment(),
            "purchase_event_id": json_of(purchase, 201)["id"],
            "requested_amount": "1.00",
        }

        answers = post_together(
            two_workers, [("/v1/events/spend-requests", spend)] * 200, ADMIN_KEY
        )

        assert_overlapped(answers, two_workers)
        assert Counter(a.status for a in answers) == {201: 100, 422: 100}
        for answer in answers:
            if answer.status == 201:
                assert [s["amount"] for s in answer.body["spends"]] == [Decimal("1.00")]
            else:
                assert answer.body["code"] == "insufficient_funds", answer.body
        wallet = json_of(client.get(f"/v1/wallets/{contact['wallet']['code']}"), 200)
        assert (wallet["balance"], wallet["reserved"], wallet["available"]) == (0, 0, 0)
        entries = ledger(client, contact["wallet"]["code"])
    assert sum(entry["amount"] for entry in entries) == wallet["balance"]
    spends = [entry for entry in entries if entry["kind"] == "spend"]
    assert [entry["amount"] for entry in spends] == [Decimal("-1.00")] * 100
    # One debit after the other: each left the balance a cent-exact step lower.
    assert sorted(entry["balance_after"] for entry in spends) == [Decimal(n) for n in range(100)]


def test_100_concurrent_reservations_never_reserve_more_than_the_balance(
    two_workers: RewardsServer,
) -> None:
    with api(two_workers, ADMIN_KEY) as client:
        contact = funded_contact(client, "50.00")
        estimate = {
            "contact": {"contact_id": contact["id"]},
            "performed_by_unit": "store-001",
            "products": [{"sku": "THING", "net_amount": "3.00"}],
            "reserve": True,
        }

        answers = post_together(
            two_workers, [("/v1/purchase-estimates", estimate)] * 100, ADMIN_KEY
        )

        assert_overlapped(answers, two_workers)
        assert {a.status for a in answers} == {201}
        held = Counter(
            a.body["reservation"]["amount"] if a.body["reservation"] else None for a in answers
        )
        # 16 estimates hold 3.00 each, one the 2.00 left, the rest nothing: never over 50.00
        assert held == {Decimal("3.00"): 16, Decimal("2.00"): 1, None: 83}
        wallet = json_of(client.get(f"/v1/wallets/{contact['wallet']['code']}"), 200)
    assert (wallet["balance"], wallet["reserved"], wallet["available"]) == (50, 50, 0)
