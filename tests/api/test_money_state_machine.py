"""A hypothesis state machine drives awards, spends, estimates with reservations,
purchases consuming estimates, cancellations and returns through the HTTP API, against a
simple model of the wallet, and checks after every step:

- balance = sum of the wallet's ledger entries;
- available = balance - open reservations (and reserved = the model's open reservations);
- no spend ever made available negative;
- nothing is reversed twice, and no award is reversed by more than it was.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import func, select

from rewards.db.tables import Award, Wallet, WalletTransaction
from tests.conftest import moment


def _json(response: Any) -> Any:
    assert response.headers.get("content-type", "").startswith(
        ("application/json", "application/problem+json")
    ), (
        response.status_code,
        response.text[:500],
    )
    return response.json()


AMOUNTS = st.decimals(min_value=Decimal("0.50"), max_value=Decimal("60.00"), places=2)


def test_money_paths_keep_the_ledger_invariants(
    client: TestClient[Litestar], app: Litestar
) -> None:
    database = app.state.database

    class Wallets(RuleBasedStateMachine):
        purchases = Bundle("purchases")
        estimates = Bundle("estimates")
        cancellable = Bundle("cancellable")

        def __init__(self) -> None:
            super().__init__()
            self.contact = client.post("/v1/contacts", json={}).json()
            self.code = self.contact["wallet"]["code"]
            self.reserved: dict[str, int] = {}  # model: open reservations, cents

        def _who(self) -> dict[str, str]:
            return {"contact_id": self.contact["id"]}

        def _wallet(self) -> dict[str, Any]:
            wallet: dict[str, Any] = client.get(f"/v1/wallets/{self.code}").json()
            return wallet

        @rule(target=cancellable, amount=AMOUNTS)
        def award(self, amount: Decimal) -> str:
            event = client.post(
                "/v1/events/financial-achievements",
                json={
                    "contact": self._who(),
                    "performed_on": moment(),
                    "classification": "top-up",
                    "amount": str(amount),
                    "payment_medium": {"brand": "loader"},
                    "process_immediately": True,
                },
            ).json()
            assert [a["amount"] for a in event["awards"]] == [float(amount)]
            return str(event["id"])

        @rule(target=purchases, amount=AMOUNTS, tea=st.integers(min_value=1, max_value=3))
        def purchase(self, amount: Decimal, tea: int) -> dict[str, Any]:
            event = _json(
                client.post(
                    "/v1/events/purchases",
                    json={
                        "contact": self._who(),
                        "performed_on": moment(),
                        "performed_by_unit": "store-004",
                        "reference_number": "P",
                        "process_immediately": True,
                        "products": [
                            {"sku": "TEA-X", "net_amount": "2.50", "quantity": tea},
                            {"sku": "OTHER", "net_amount": str(amount)},
                        ],
                    },
                )
            )
            return {"id": event["id"], "tea": tea}

        @rule(target=cancellable, purchase=purchases, amount=AMOUNTS)
        def spend(self, purchase: dict[str, Any], amount: Decimal) -> str:
            available_before = self._wallet()["available"]
            response = client.post(
                "/v1/events/spend-requests",
                json={
                    "contact": self._who(),
                    "performed_on": moment(),
                    "purchase_event_id": purchase["id"],
                    "requested_amount": str(amount),
                },
            )
            if response.status_code == 201:
                assert float(amount) <= available_before
                assert self._wallet()["available"] >= 0
                return str(response.json()["id"])
            assert response.status_code in (409, 422), response.text
            assert response.json()["code"] in {
                "insufficient_funds",
                "spend_amount_out_of_range",
                "spend_exceeds_purchase",
                "purchase_not_posted",
            }
            return purchase["id"]

        @rule(target=estimates, amount=AMOUNTS)
        def estimate(self, amount: Decimal) -> str:
            available = self._wallet()["available"]
            found = client.post(
                "/v1/purchase-estimates",
                json={
                    "contact": self._who(),
                    "performed_by_unit": "store-001",
                    "reserve": True,
                    "products": [{"sku": "THING", "net_amount": str(amount)}],
                },
            ).json()
            held = found["reservation"]["amount"] if found["reservation"] else 0
            assert held <= max(available, 0)
            self.reserved[found["id"]] = round(held * 100)
            return str(found["id"])

        @rule(target=purchases, estimate=consumes(estimates))
        def purchase_with_estimate(self, estimate: str) -> dict[str, Any]:
            response = client.post(
                "/v1/events/purchases",
                json={
                    "contact": self._who(),
                    "performed_on": moment(),
                    "performed_by_unit": "store-001",
                    "reference_number": "E",
                    "estimate_id": estimate,
                    "products": [{"sku": "THING", "net_amount": "60.00"}],
                },
            )
            assert response.status_code == 201, response.text
            held = self.reserved.pop(estimate)
            assert sum(s["amount"] for s in response.json()["spends"]) * 100 == held
            return {"id": response.json()["id"], "tea": 0}

        @rule(event=consumes(cancellable))
        def cancel(self, event: str) -> None:
            response = client.post(f"/v1/events/{event}/cancel")
            assert response.status_code in (200, 409), response.text

        @rule(purchase=purchases, quantity=st.integers(min_value=1, max_value=3))
        def give_back(self, purchase: dict[str, Any], quantity: int) -> None:
            response = client.post(
                f"/v1/events/{purchase['id']}/returns",
                json={"products": [{"sku": "TEA-X", "quantity": quantity}]},
            )
            assert response.status_code in (200, 409, 422), response.text

        @invariant()
        def ledger_matches_balance_and_reservations(self) -> None:
            wallet = self._wallet()
            with database.session(write=False) as session:
                row = session.scalars(select(Wallet).where(Wallet.code == self.code)).one()
                ledger = session.scalar(
                    select(func.coalesce(func.sum(WalletTransaction.amount_cents), 0)).where(
                        WalletTransaction.wallet_id == row.id
                    )
                )
                reversed_ids = session.scalars(
                    select(WalletTransaction.reverses_id).where(
                        WalletTransaction.reverses_id.is_not(None)
                    )
                ).all()  # type: ignore[union-attr]
                over_reversed = session.execute(
                    select(Award.id)
                    .join(WalletTransaction, WalletTransaction.award_id == Award.id)
                    .where(WalletTransaction.kind == "award_reversal")
                    .group_by(Award.id, Award.amount_cents)
                    .having(-func.sum(WalletTransaction.amount_cents) > Award.amount_cents)
                ).all()
            assert row.balance_cents == ledger
            assert round(wallet["balance"] * 100) == row.balance_cents
            assert round(wallet["reserved"] * 100) == sum(self.reserved.values())
            assert round(wallet["available"] * 100) == row.balance_cents - sum(
                self.reserved.values()
            )
            assert len(reversed_ids) == len(set(reversed_ids))
            assert over_reversed == []

    run_state_machine_as_test(
        Wallets,
        settings=settings(
            max_examples=20,
            stateful_step_count=12,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
