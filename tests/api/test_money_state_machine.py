"""A hypothesis state machine drives awards, spends, estimates with reservations,
purchases consuming estimates, cancellations and returns through the HTTP API, on SQLite
and PostgreSQL, against a model of the wallet that predicts every step: its status (and
refusal code) and the balance, reserved and available amounts after it. After every step
it also checks:

- balance = sum of the wallet's ledger entries, each ``balance_after`` the running sum;
- nothing is reversed twice, and no award is reversed by more than it was.

The offers (tests/api/offer_rulesets): a top-up paid by the "loader" brand earns 100%
of its amount; at store-004 each TEA-* line of 2.00 or more earns 10% of the line. The
spend rules: 1.00 to 50.00, refused when not covered, against at most the purchase's
total. Amounts are integer cents here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import func, select

from rewards.db.tables import Award, Wallet, WalletTransaction
from tests.conftest import BOTH, moment

AMOUNTS = st.decimals(min_value=Decimal("0.50"), max_value=Decimal("60.00"), places=2)
TEA_CENTS, TEA_AWARD = 250, 25  # a TEA-X costs 2.50 and earns 10% of it at store-004
SPEND_MIN, SPEND_MAX = 100, 5000  # the definition's spend_requests
ESTIMATED_PURCHASE = 6000  # the purchase that uses an estimate: 60.00, no offer


def cents(amount: Decimal | int) -> int:
    exact = Decimal(amount) * 100
    assert exact == exact.to_integral_value(), amount
    return int(exact)


def from_cents(amount: int) -> Decimal:
    return Decimal(amount) / 100


def answer(response: Any, status: int, code: str | None = None) -> Any:
    """The answer's JSON (numbers as Decimal), once its status (and, for a refusal, its
    problem code) is the one predicted."""
    body = response.json(parse_float=Decimal)
    assert response.status_code == status, response.text
    assert code is None or body["code"] == code, response.text
    return body


@dataclass
class TopUp:
    award: int
    cancelled: bool = False


@dataclass
class Purchase:
    total: int
    tea: int  # TEA-X bought
    own_spend: int = 0  # what it spent itself (an estimate's reservation)
    tea_returned: int = 0
    spent: int = 0  # spends against it not reversed, its own included
    spend_requests: list[str] = field(default_factory=list)
    cancelled: bool = False

    @property
    def award_left(self) -> int:
        return TEA_AWARD * (self.tea - self.tea_returned)


@dataclass
class SpendRequest:
    purchase: str
    amount: int
    cancelled: bool = False


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
@pytest.mark.timeout(600)  # a failing run shrinks for up to 300 s before it is reported
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
            self.contact = answer(client.post("/v1/contacts", json={}), 201)
            self.code = self.contact["wallet"]["code"]
            with database.session(write=False) as session:
                self.wallet_id = session.scalars(
                    select(Wallet.id).where(Wallet.code == self.code)
                ).one()
            # The model: the balance, the open reservations and what each event did.
            self.balance = 0
            self.reservations: dict[str, int] = {}
            self.events: dict[str, TopUp | Purchase | SpendRequest] = {}

        @property
        def available(self) -> int:
            return self.balance - sum(self.reservations.values())

        def _who(self) -> dict[str, str]:
            return {"contact_id": self.contact["id"]}

        def _same_wallet(self, wallet: dict[str, Any]) -> None:
            """An answer's wallet is the model's."""
            assert cents(wallet["balance"]) == self.balance, wallet
            assert cents(wallet["available"]) == self.available, wallet

        # Every run opens with a top-up and a purchase, so its first steps have money and
        # something to spend it on.
        @initialize(target=cancellable, amount=AMOUNTS)
        def opening_top_up(self, amount: Decimal) -> str:
            return self._top_up(amount)

        @initialize(
            targets=(purchases, cancellable),
            amount=AMOUNTS,
            tea=st.integers(min_value=1, max_value=3),
        )
        def opening_purchase(self, amount: Decimal, tea: int) -> str:
            return self._purchase(amount, tea)

        @rule(target=cancellable, amount=AMOUNTS)
        def top_up(self, amount: Decimal) -> str:
            return self._top_up(amount)

        @rule(
            targets=(purchases, cancellable),
            amount=AMOUNTS,
            tea=st.integers(min_value=1, max_value=3),
        )
        def purchase(self, amount: Decimal, tea: int) -> str:
            return self._purchase(amount, tea)

        def _top_up(self, amount: Decimal) -> str:
            event = answer(
                client.post(
                    "/v1/events/financial-achievements",
                    json={
                        "contact": self._who(),
                        "performed_on": moment(),
                        "classification": "top-up",
                        "amount": str(amount),
                        "payment_medium": {"brand": "loader"},
                        "process_immediately": True,
                    },
                ),
                201,
            )
            assert [(a["offer_id"], a["amount"]) for a in event["awards"]] == [
                ("wallet-load", amount)
            ]
            self.balance += cents(amount)
            self.events[event["id"]] = TopUp(award=cents(amount))
            self._same_wallet(event["wallet"])
            return str(event["id"])

        def _purchase(self, amount: Decimal, tea: int) -> str:
            event = answer(
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
                ),
                201,
            )
            bought = Purchase(total=TEA_CENTS * tea + cents(amount), tea=tea)
            assert [(a["offer_id"], cents(a["amount"])) for a in event["awards"]] == [
                ("tea-tenth", bought.award_left)
            ]
            self.balance += bought.award_left
            self.events[event["id"]] = bought
            self._same_wallet(event["wallet"])
            return str(event["id"])

        @rule(target=cancellable, purchase=purchases, data=st.data())
        def spend(self, purchase: str, data: st.DataObject) -> Any:
            bought = self.events[purchase]
            assert isinstance(bought, Purchase)
            # Any amount, or one the wallet and the purchase can cover (when they can).
            coverable = min(self.available, bought.total - bought.spent, SPEND_MAX)
            amount = data.draw(
                AMOUNTS
                if coverable < SPEND_MIN
                else st.one_of(AMOUNTS, st.integers(SPEND_MIN, coverable).map(from_cents))
            )
            requested = cents(amount)
            response = client.post(
                "/v1/events/spend-requests",
                json={
                    "contact": self._who(),
                    "performed_on": moment(),
                    "purchase_event_id": purchase,
                    "requested_amount": str(amount),
                },
            )
            if bought.cancelled:
                answer(response, 422, "purchase_not_posted")
            elif requested > bought.total - bought.spent:
                answer(response, 422, "spend_exceeds_purchase")
            elif not SPEND_MIN <= requested <= SPEND_MAX:
                answer(response, 422, "spend_amount_out_of_range")
            elif requested > self.available:
                answer(response, 422, "insufficient_funds")
            else:
                event = answer(response, 201)
                assert [cents(s["amount"]) for s in event["spends"]] == [requested]
                self.balance -= requested
                bought.spent += requested
                bought.spend_requests.append(event["id"])
                self.events[event["id"]] = SpendRequest(purchase=purchase, amount=requested)
                self._same_wallet(event["wallet"])
                return str(event["id"])
            return multiple()  # refused: no event

        @rule(target=estimates, amount=AMOUNTS)
        def estimate(self, amount: Decimal) -> str:
            found = answer(
                client.post(
                    "/v1/purchase-estimates",
                    json={
                        "contact": self._who(),
                        "performed_by_unit": "store-001",
                        "reserve": True,
                        "products": [{"sku": "THING", "net_amount": str(amount)}],
                    },
                ),
                201,
            )
            spendable = max(0, min(self.available, cents(amount), SPEND_MAX))
            held = spendable if spendable >= SPEND_MIN else 0
            assert cents(found["spendable"]["amount"]) == spendable
            reservation = found["reservation"]
            assert (cents(reservation["amount"]) if reservation else 0) == held
            self.reservations[found["id"]] = held
            assert cents(found["wallet"]["available"]) == self.available
            return str(found["id"])

        @rule(targets=(purchases, cancellable), estimate=consumes(estimates))
        def purchase_with_estimate(self, estimate: str) -> Any:
            held = self.reservations[estimate]
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
            # The reservation is spent if the balance less the other reservations covers
            # it (a top-up cancelled since may have taken what it held).
            covering = self.available + held
            if held and covering < held:
                answer(response, 422, "insufficient_funds")
                return multiple()  # the estimate stays open, its reservation held
            event = answer(response, 201)
            assert [cents(s["amount"]) for s in event["spends"]] == ([held] if held else [])
            del self.reservations[estimate]
            self.balance -= held
            self.events[event["id"]] = Purchase(
                total=ESTIMATED_PURCHASE, tea=0, own_spend=held, spent=held
            )
            self._same_wallet(event["wallet"])
            return str(event["id"])

        @rule(event=consumes(cancellable))
        def cancel(self, event: str) -> None:
            done = self.events[event]
            response = client.post(f"/v1/events/{event}/cancel")
            if done.cancelled:
                answer(response, 409, "already_cancelled")
                return
            done.cancelled = True
            if isinstance(done, TopUp):
                self.balance -= done.award  # may go below zero: the award was spent
            elif isinstance(done, SpendRequest):
                self.balance += done.amount
                bought = self.events[done.purchase]
                assert isinstance(bought, Purchase)
                bought.spent -= done.amount
            else:  # a purchase: what is left of its award, its spend and its spend requests
                self.balance += done.own_spend - done.award_left
                for request_id in done.spend_requests:
                    request = self.events[request_id]
                    assert isinstance(request, SpendRequest)
                    if not request.cancelled:
                        request.cancelled = True
                        self.balance += request.amount
                done.spent = 0
            cancelled = answer(response, 200)
            assert cancelled["state"] == "cancelled"
            self._same_wallet(cancelled["wallet"])

        @rule(purchase=purchases, quantity=st.integers(min_value=1, max_value=3))
        def give_back(self, purchase: str, quantity: int) -> None:
            bought = self.events[purchase]
            assert isinstance(bought, Purchase)
            response = client.post(
                f"/v1/events/{purchase}/returns",
                json={"products": [{"sku": "TEA-X", "quantity": quantity}]},
            )
            if bought.cancelled:
                answer(response, 409, "event_cancelled")
            elif quantity > bought.tea - bought.tea_returned:
                answer(response, 422, "return_exceeds_purchase")
            else:
                returned = answer(response, 200)
                reversed_cents = TEA_AWARD * quantity  # the award of those teas
                assert [cents(r["amount"]) for r in returned["reversals"]] == [-reversed_cents]
                bought.tea_returned += quantity
                self.balance -= reversed_cents
                self._same_wallet(returned["wallet"])

        @invariant()
        def the_wallet_is_the_model_and_its_ledger(self) -> None:
            wallet = answer(client.get(f"/v1/wallets/{self.code}"), 200)
            assert cents(wallet["balance"]) == self.balance
            assert cents(wallet["reserved"]) == sum(self.reservations.values())
            assert cents(wallet["available"]) == self.available
            entries = answer(
                client.get(f"/v1/wallets/{self.code}/transactions", params={"limit": 500}), 200
            )
            assert entries["next_cursor"] is None
            running = 0
            for entry in reversed(entries["items"]):  # newest first
                running += cents(entry["amount"])
                assert cents(entry["balance_after"]) == running, entry
            assert running == self.balance

        @invariant()
        def nothing_is_reversed_twice_or_beyond_its_award(self) -> None:
            with database.session(write=False) as session:
                reversed_ids = session.scalars(
                    select(WalletTransaction.reverses_id).where(
                        WalletTransaction.wallet_id == self.wallet_id,
                        WalletTransaction.reverses_id.is_not(None),  # type: ignore[union-attr]
                    )
                ).all()
                over_reversed = session.execute(
                    select(Award.id)
                    .join(WalletTransaction, WalletTransaction.award_id == Award.id)
                    .where(
                        WalletTransaction.wallet_id == self.wallet_id,
                        WalletTransaction.kind == "award_reversal",
                    )
                    .group_by(Award.id, Award.amount_cents)
                    .having(-func.sum(WalletTransaction.amount_cents) > Award.amount_cents)
                ).all()
            assert len(reversed_ids) == len(set(reversed_ids))
            assert over_reversed == []

    run_state_machine_as_test(
        Wallets,
        settings=settings(
            # Fresh sequences each run (the model predicts every outcome, so a failure is a
            # real discrepancy, printed with its steps); 30-45 s per database.
            max_examples=30,
            stateful_step_count=30,
            derandomize=False,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
