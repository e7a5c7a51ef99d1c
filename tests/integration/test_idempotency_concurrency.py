"""Idempotency under concurrency, on SQLite and PostgreSQL: the unique constraint on
(external_system, external_reference) decides, not a read-then-insert."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from rewards.db.tables import Event
from tests.conftest import ADMIN_KEY, BOTH, purchase_body

HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def _fire(app: Litestar, count: int, body_for: Any) -> tuple[list[int], list[dict[str, Any]]]:
    async with AsyncTestClient(app) as client:
        contact = (await client.post("/v1/contacts", json={}, headers=HEADERS)).json()
        responses = await asyncio.gather(
            *(
                client.post("/v1/events/purchases", json=body_for(contact, i), headers=HEADERS)
                for i in range(count)
            )
        )
    return [r.status_code for r in responses], [r.json() for r in responses]


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_fifty_concurrent_identical_requests_make_one_event(app: Litestar) -> None:
    shared: dict[str, Any] = {}

    def body_for(contact: dict[str, Any], _: int) -> dict[str, Any]:
        if not shared:
            shared.update(
                purchase_body(
                    contact["wallet"]["code"], external_system="pos", external_reference="SAME-1"
                )
            )
        return shared

    statuses, answers = asyncio.run(_fire(app, 50, body_for))
    assert sorted(statuses) == [200] * 49 + [201]
    assert len({answer["id"] for answer in answers}) == 1
    database = app.state.database
    with database.session(write=False) as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 1


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_concurrent_twins_with_different_bodies_get_one_201_and_409s(app: Litestar) -> None:
    def body_for(contact: dict[str, Any], i: int) -> dict[str, Any]:
        return purchase_body(
            contact["wallet"]["code"],
            external_system="pos",
            external_reference="SAME-2",
            reference_number=f"R{i}",
        )

    statuses, _ = asyncio.run(_fire(app, 20, body_for))
    assert sorted(statuses) == [201] + [409] * 19
