"""An offer's budget under concurrency, on SQLite and PostgreSQL: 200 purchases sent at
once to ``rewards serve --workers 2`` (overlap proven, tests.serving) award exactly the
budget, never more (offer budget-capped: 3.00 each, 10.00 in total)."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, BOTH, moment
from tests.serving import RewardsServer, api, assert_overlapped, json_of, post_together

pytestmark = pytest.mark.parametrize("database_url", BOTH, indirect=True)


def test_two_hundred_purchases_at_once_never_overspend_a_budget(
    two_workers: RewardsServer,
) -> None:
    with api(two_workers, ADMIN_KEY) as client:
        contacts = [json_of(client.post("/v1/contacts", json={}), 201) for _ in range(20)]
    bodies: list[tuple[str, dict[str, Any]]] = [
        (
            "/v1/events/purchases",
            {
                "contact": {"contact_id": contacts[i % 20]["id"]},
                "performed_on": moment(),
                "performed_by_unit": "budget-shop",
                "process_immediately": True,
                "reference_number": f"R-{i}",
                "products": [{"sku": "THING", "net_amount": "20.00"}],
            },
        )
        for i in range(200)
    ]

    answers = post_together(two_workers, bodies, ADMIN_KEY)

    assert_overlapped(answers, two_workers)
    assert Counter(a.status for a in answers) == {201: 200}
    paid = sorted(
        (Decimal(award["amount"]) for a in answers for award in a.body["awards"]
         if award["offer_id"] == "budget-capped"),
        reverse=True,
    )  # fmt: skip
    assert paid == [Decimal(3), Decimal(3), Decimal(3), Decimal(1)]
    with api(two_workers, ADMIN_KEY) as client:
        summary = json_of(client.get("/v1/analytics/summary"), 200)
        balances = [
            Decimal(str(json_of(client.get(f"/v1/contacts/{c['id']}"), 200)["wallet"]["balance"]))
            for c in contacts
        ]
    [budget] = [b for b in summary["budgets"] if b["offer_id"] == "budget-capped"]
    assert (Decimal(str(budget["used"])), Decimal(str(budget["left"]))) == (10, 0)
    assert sum(balances) == 10  # the ledger agrees
