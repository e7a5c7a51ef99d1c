"""The ledger: append-only entries, balance in lock-step, reversals at most once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import func, select

from rewards.db.tables import Wallet, WalletTransaction
from rewards.money.ledger import InsufficientBalance, post_entry, reverse_event_entries
from tests.conftest import BOTH, purchase_body

pytestmark = pytest.mark.parametrize("database_url", BOTH, indirect=True)


def _wallet_id(app: Litestar, code: str) -> int:
    with app.state.database.session(write=False) as session:
        wallet_id: int = session.scalars(select(Wallet.id).where(Wallet.code == code)).one()
        return wallet_id


def test_entries_keep_balance_equal_to_the_sum_and_cancel_reverses_once(
    client: TestClient[Litestar], app: Litestar, new_contact: Any
) -> None:
    contact = new_contact()
    code = contact["wallet"]["code"]
    event = client.post("/v1/events/purchases", json=purchase_body(code)).json()
    wallet_id = _wallet_id(app, code)
    with app.state.database.transaction() as session:
        post_entry(
            session,
            wallet_id=wallet_id,
            kind="award",
            amount_cents=500,
            event_id=event["id"],
            offer_id="o-1",
        )
        post_entry(
            session,
            wallet_id=wallet_id,
            kind="spend",
            amount_cents=-200,
            event_id=event["id"],
            funds_checked_at=datetime.now(UTC),
        )
        with pytest.raises(InsufficientBalance):
            post_entry(
                session,
                wallet_id=wallet_id,
                kind="spend",
                amount_cents=-301,
                event_id=event["id"],
                funds_checked_at=datetime.now(UTC),
            )
    assert client.get(f"/v1/wallets/{code}").json()["balance"] == 3.0
    cancelled = client.post(f"/v1/events/{event['id']}/cancel").json()
    assert [(r["kind"], r["amount"]) for r in cancelled["reversals"]] == [
        ("award_reversal", -5.0),
        ("spend_reversal", 2.0),
    ]
    assert cancelled["wallet"]["balance"] == 0
    ledger = client.get(f"/v1/wallets/{code}/transactions").json()["items"]
    assert [entry["kind"] for entry in ledger] == [
        "spend_reversal",
        "award_reversal",
        "spend",
        "award",
    ]
    assert [entry["balance_after"] for entry in ledger] == [0.0, -2.0, 3.0, 5.0]
    with app.state.database.transaction() as session:
        assert reverse_event_entries(session, event["id"]) == []  # nothing is reversed twice
        total = session.scalar(
            select(func.sum(WalletTransaction.amount_cents)).where(
                WalletTransaction.wallet_id == wallet_id
            )
        )
        balance = session.scalars(select(Wallet.balance_cents).where(Wallet.id == wallet_id)).one()
    assert total == balance == 0


def test_ledger_pages_with_a_cursor(
    client: TestClient[Litestar], app: Litestar, new_contact: Any
) -> None:
    code = new_contact()["wallet"]["code"]
    event = client.post("/v1/events/purchases", json=purchase_body(code)).json()
    with app.state.database.transaction() as session:
        for cents in range(1, 8):
            post_entry(
                session,
                wallet_id=_wallet_id(app, code),
                kind="award",
                amount_cents=cents,
                event_id=event["id"],
            )
    amounts, cursor = [], None
    while True:
        page = client.get(
            f"/v1/wallets/{code}/transactions",
            params={"limit": 3, **({"cursor": cursor} if cursor else {})},
        ).json()
        amounts += [entry["amount"] for entry in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert amounts == [0.07, 0.06, 0.05, 0.04, 0.03, 0.02, 0.01]
