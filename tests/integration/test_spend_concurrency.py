"""No interleaving overdraws a wallet, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from rewards.db.tables import Estimate, Wallet, WalletTransaction
from tests.conftest import ADMIN_KEY, BOTH, moment

pytestmark = pytest.mark.parametrize("database_url", BOTH, indirect=True)
HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def _funded_contact(client: AsyncTestClient[Litestar], amount: str) -> dict[str, Any]:
    contact: dict[str, Any] = (await client.post("/v1/contacts", json={}, headers=HEADERS)).json()
    load = await client.post(
        "/v1/events/financial-achievements",
        headers=HEADERS,
        json={
            "contact": {"contact_id": contact["id"]},
            "performed_on": moment(),
            "classification": "top-up",
            "amount": amount,
            "payment_medium": {"brand": "loader"},
            "process_immediately": True,
        },
    )
    assert load.status_code == 201
    return contact


def _ledger_sum_and_balance(app: Litestar, wallet_code: str) -> tuple[int, int]:
    with app.state.database.session(write=False) as session:
        wallet = session.scalars(select(Wallet).where(Wallet.code == wallet_code)).one()
        total = session.scalar(
            select(func.sum(WalletTransaction.amount_cents)).where(
                WalletTransaction.wallet_id == wallet.id
            )
        )
        return int(total or 0), wallet.balance_cents


def test_200_concurrent_spends_of_1_against_100(app: Litestar) -> None:
    async def scenario() -> tuple[list[int], list[str], dict[str, Any]]:
        async with AsyncTestClient(app) as client:
            contact = await _funded_contact(client, "100.00")
            purchase = (
                await client.post(
                    "/v1/events/purchases",
                    headers=HEADERS,
                    json={
                        "contact": {"contact_id": contact["id"]},
                        "performed_on": moment(),
                        "performed_by_unit": "store-001",
                        "reference_number": "BIG",
                        "products": [{"sku": "THING", "net_amount": "1000.00"}],
                    },
                )
            ).json()
            responses = await asyncio.gather(
                *(
                    client.post(
                        "/v1/events/spend-requests",
                        headers=HEADERS,
                        json={
                            "contact": {"contact_id": contact["id"]},
                            "performed_on": moment(),
                            "purchase_event_id": purchase["id"],
                            "requested_amount": "1.00",
                        },
                    )
                    for _ in range(200)
                )
            )
            return [r.status_code for r in responses], [r.text for r in responses], contact

    statuses, texts, contact = asyncio.run(scenario())
    assert statuses.count(201) == 100 and statuses.count(422) == 100, sorted(set(statuses))
    assert not any("database is locked" in text for text in texts)
    assert all(
        '"insufficient_funds"' in text
        for status, text in zip(statuses, texts, strict=True)
        if status == 422
    )
    assert _ledger_sum_and_balance(app, contact["wallet"]["code"]) == (0, 0)


def test_100_concurrent_reservations_never_reserve_more_than_the_balance(app: Litestar) -> None:
    async def scenario() -> list[int]:
        async with AsyncTestClient(app) as client:
            contact = await _funded_contact(client, "50.00")
            responses = await asyncio.gather(
                *(
                    client.post(
                        "/v1/purchase-estimates",
                        headers=HEADERS,
                        json={
                            "contact": {"contact_id": contact["id"]},
                            "performed_by_unit": "store-001",
                            "products": [{"sku": "THING", "net_amount": "3.00"}],
                            "reserve": True,
                        },
                    )
                    for _ in range(100)
                )
            )
            return [r.status_code for r in responses]

    statuses = asyncio.run(scenario())
    assert set(statuses) == {201}
    with app.state.database.session(write=False) as session:
        reserved = session.scalar(select(func.sum(Estimate.reserved_cents)))
        holding = session.scalar(
            select(func.count()).select_from(Estimate).where(Estimate.reserved_cents > 0)
        )
    # 16 estimates hold 3.00 each, the 17th the 2.00 left, the rest nothing: never over 50.00
    assert reserved == 5000 and holding == 17
