"""Processor transactions and claims under concurrency, on SQLite and PostgreSQL, against
``rewards serve --workers 2`` with proof that the requests overlapped (tests.serving):
one transaction posted 50 times routes once; two claims of one transaction: one wins; a
POS purchase and its card transaction arriving together are matched exactly once."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, BOTH, moment
from tests.serving import RewardsServer, api, assert_overlapped, json_of, post_together

pytestmark = pytest.mark.parametrize("database_url", BOTH, indirect=True)


def card_transaction(terminal: str, amount: str, token: str, last4: str) -> dict[str, Any]:
    return {
        "processor": "acme-pay",
        "transaction_id": f"TX-{uuid.uuid4().hex[:10]}",
        "terminal_id": terminal,
        "performed_on": moment(),
        "amount": amount,
        "card": {"token": token, "last4": last4},
    }


def get(server: RewardsServer, path: str, **params: Any) -> Any:
    with api(server, ADMIN_KEY) as client:
        return json_of(client.get(path, params=params), 200)


def new_contact(server: RewardsServer, **fields: Any) -> dict[str, Any]:
    with api(server, ADMIN_KEY) as client:
        contact: dict[str, Any] = json_of(client.post("/v1/contacts", json=fields), 201)
    return contact


def test_one_transaction_posted_fifty_times_at_once_routes_once(
    two_workers: RewardsServer,
) -> None:
    contact = new_contact(two_workers, payment_cards=["tok_fifty"])
    body = card_transaction("T-SHARED", "20.00", "tok_fifty", "4242")

    answers = post_together(two_workers, [("/v1/processor-transactions", body)] * 50, ADMIN_KEY)

    assert_overlapped(answers, two_workers)
    assert Counter(a.status for a in answers) == {201: 1, 200: 49}, [
        a.body for a in answers if a.status not in (200, 201)
    ]
    assert len({a.body["id"] for a in answers}) == 1
    listed = get(two_workers, "/v1/processor-transactions")["items"]
    assert [t["id"] for t in listed] == [answers[0].body["id"]]
    assert {(r["merchant_id"], r["status"]) for r in listed[0]["routes"]} == {
        ("cafe-co", "recorded"),
        ("books-co", "awaiting_match"),
    }
    purchases = get(two_workers, "/v1/events", contact_id=contact["id"])["items"]
    assert len(purchases) == 1  # the cafe's; books-co awaits its POS purchase
    wallet = get(two_workers, f"/v1/contacts/{contact['id']}")["wallet"]
    assert wallet["balance"] == 2  # 10% once


def test_two_claims_of_one_transaction_at_once_one_wins(two_workers: RewardsServer) -> None:
    with api(two_workers, ADMIN_KEY) as client:
        json_of(
            client.post(
                "/v1/processor-transactions",
                json=card_transaction("T-FUEL", "44.00", "tok_claimed", "7777"),
            ),
            201,
        )
    claimants = [new_contact(two_workers) for _ in range(8)]
    claim = {"merchant_id": "fuel-co", "performed_on": moment(), "amount": "44.00", "last4": "7777"}
    requests = [
        ("/v1/transaction-claims", {**claim, "contact": {"contact_id": c["id"]}}) for c in claimants
    ]

    answers = post_together(two_workers, requests, ADMIN_KEY)

    assert_overlapped(answers, two_workers)
    assert Counter(a.status for a in answers) == {201: 1, 409: 7}, [a.body for a in answers]
    assert {a.body["code"] for a in answers if a.status == 409} == {"already_claimed"}
    [winner] = [claimants[i] for i, a in enumerate(answers) if a.status == 201]
    for contact in claimants:
        events = get(two_workers, "/v1/events", contact_id=contact["id"])["items"]
        assert len(events) == (1 if contact is winner else 0)
    assert get(two_workers, f"/v1/contacts/{winner['id']}")["payment_cards"] == ["tok_claimed"]


def test_pos_purchases_and_their_transactions_arriving_together_match_exactly_once(
    two_workers: RewardsServer,
) -> None:
    contact = new_contact(two_workers, payment_cards=["tok_pair"])
    requests: list[tuple[str, dict[str, Any]]] = []
    for i in range(10):
        amount = f"{10 + i}.00"
        requests.append(
            (
                "/v1/events/purchases",
                {
                    "contact": {"contact_id": contact["id"]},
                    "performed_on": moment(),
                    "performed_by_unit": "mall-books",
                    "process_immediately": True,
                    "reference_number": f"POS-{i}",
                    "products": [{"sku": "NOVEL", "net_amount": amount}],
                },
            )
        )
        requests.append(
            ("/v1/processor-transactions", card_transaction("T-BOOKS", amount, "tok_pair", "1234"))
        )

    answers = post_together(two_workers, requests, ADMIN_KEY)

    assert_overlapped(answers, two_workers)
    assert {a.status for a in answers} == {201}, [a.body for a in answers if a.status != 201]
    purchases = {a.body["total_amount"]: a.body["id"] for a in answers if "type" in a.body}
    transactions = get(two_workers, "/v1/processor-transactions", limit=50)["items"]
    assert len(transactions) == 10
    for transaction in transactions:
        [route] = transaction["routes"]
        assert route["status"] == "matched", transaction
        assert route["event_id"] == purchases[transaction["amount"]]
    for event in get(two_workers, "/v1/events", contact_id=contact["id"])["items"]:
        assert event["matched_transaction_id"] is not None
    wallet = get(two_workers, f"/v1/contacts/{contact['id']}")["wallet"]
    assert wallet["balance"] == sum(10 + i for i in range(10)) / 10  # the POS purchases only
