"""Group commit (intake.group_commit), on SQLite and PostgreSQL: purchases that arrive
together are written in one transaction, and one that fails (a spend not covered, an
external reference taken with another body) fails alone while its batch-mates are
recorded, with their awards and ledger entries."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from litestar import Litestar
from sqlalchemy import func, select

from rewards.db.tables import Event, Wallet, WalletTransaction
from tests.conftest import ADMIN_KEY, BOTH, ROOT, purchase_body
from tests.serving import free_port, until

HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def rulesets_dir() -> Path:
    """The shipped offers: a gold contact's 80.00 visa basket at store-001 earns 4.00."""
    return ROOT / "rulesets"


def basket(wallet_code: str, **fields: Any) -> dict[str, Any]:
    return purchase_body(
        wallet_code,
        performed_on="2026-03-02T11:00:00+02:00",
        payment_medium={"brand": "visa", "type": "credit"},
        products=[{"sku": "GROCERY-BASKET", "net_amount": "67.23", "vat_amount": "12.77"}],
        **fields,
    )


@contextmanager
def writes_held(app: Litestar) -> Iterator[None]:
    """The database's write lock held by another connection until the block ends: on
    SQLite a write transaction (the writer gate and BEGIN IMMEDIATE), on PostgreSQL a
    lock on ``events`` that lets reads through but no insert."""
    database = app.state.database
    ready, release = threading.Event(), threading.Event()

    def hold() -> None:
        with database.write_engine.connect() as connection, connection.begin():
            if not database.is_sqlite:
                connection.exec_driver_sql("LOCK TABLE events IN EXCLUSIVE MODE")
            ready.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    assert ready.wait(10)
    try:
        yield
    finally:
        release.set()
        holder.join()


@contextmanager
def serving(app: Litestar) -> Iterator[str]:
    """``app`` served by uvicorn on a free port in a thread of this process (the test
    reads ``app.state``): requests really run at the same time."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    until(lambda: server.started, "the server started")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_a_failing_request_of_a_batch_fails_alone(app: Litestar) -> None:
    intake = app.state.intake
    with serving(app) as url, httpx.Client(base_url=url, headers=HEADERS, timeout=60) as client:
        wallets = [
            client.post("/v1/contacts", json={"segments": ["gold"]}).json()["wallet"]["code"]
            for _ in range(5)
        ]
        wave = [
            basket(wallets[0]),
            basket(wallets[1]),
            basket(wallets[2]),
            basket(wallets[0]),  # a second purchase of one contact in the same batch
            basket(wallets[3], spend={"amount": "50.00"}),  # nothing to spend yet: 422
            # twins with different bodies: one is recorded, the other is a 409
            basket(wallets[4], external_system="pos", external_reference="T-1"),
            basket(
                wallets[4], external_system="pos", external_reference="T-1", reference_number="x"
            ),
        ]
        answers: dict[int, httpx.Response] = {}
        start = threading.Barrier(len(wave))

        def send(i: int, body: dict[str, Any], barrier: threading.Barrier | None) -> None:
            with httpx.Client(base_url=url, headers=HEADERS, timeout=60) as own:
                if barrier is not None:
                    barrier.wait()
                answers[i] = own.post("/v1/events/purchases", json=body)

        with writes_held(app):
            # A first purchase takes the writer, which waits for the lock...
            first = threading.Thread(target=send, args=(-1, basket(wallets[1]), None))
            first.start()
            until(lambda: intake.planned_count >= 1, "the first purchase planned")
            time.sleep(0.2)  # ... at BEGIN (SQLite) or at its insert (PostgreSQL)
            senders = [
                threading.Thread(target=send, args=(i, body, start)) for i, body in enumerate(wave)
            ]
            for sender in senders:
                sender.start()
            # ... while the wave, sent at once, is planned and waits: written together.
            until(lambda: intake.planned_count >= 1 + len(wave), "the wave planned")
        for thread in [first, *senders]:
            thread.join(60)

    assert answers[-1].status_code == 201, answers[-1].text
    statuses = [answers[i].status_code for i in range(len(wave))]
    assert statuses[:4] == [201, 201, 201, 201], [answers[i].text for i in range(4)]
    assert statuses[4] == 422 and answers[4].json()["code"] == "insufficient_funds"
    assert sorted(statuses[5:]) == [201, 409]
    assert {answers[5].json().get("code"), answers[6].json().get("code")} >= {
        "idempotency_conflict"
    }
    assert intake.largest_batch >= len(wave)  # written in one transaction: they overlapped
    for i in (-1, 0, 1, 2, 3):
        assert [award["amount"] for award in answers[i].json()["awards"]] == [4.0]
    # Contact 0 bought twice in the batch: the later answer shows both awards.
    assert sorted(answers[i].json()["wallet"]["balance"] for i in (0, 3)) == [4.0, 8.0]

    with app.state.database.session(write=False) as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 6
        balances = dict(session.execute(select(Wallet.id, Wallet.balance_cents)).all())
        sums = dict(
            session.execute(
                select(
                    WalletTransaction.wallet_id, func.sum(WalletTransaction.amount_cents)
                ).group_by(WalletTransaction.wallet_id)
            ).all()
        )
    assert {w: b for w, b in balances.items() if b} == {w: int(s) for w, s in sums.items()}
    assert sorted(b for b in balances.values() if b) == [400, 400, 800, 800]
