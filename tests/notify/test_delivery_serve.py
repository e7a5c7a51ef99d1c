"""Notifications from a real ``rewards serve`` (the dispatcher runs in its supervisor):
kill -9 between commit and delivery loses nothing and invents nothing; 1,000 awards made
under load arrive exactly once after dedupe by id, in order per contact."""

from __future__ import annotations

import random
import threading
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlmodel import col

from rewards.db.database import Database
from rewards.db.notify_tables import Delivery, OutboxRow, WebhookSubscription
from rewards.db.tables import WalletTransaction
from rewards.notify import signing
from tests.conftest import ADMIN_KEY, moment, purchase_body
from tests.notify.receiving import receiving
from tests.serving import RewardsServer, api, json_of, until

FAST_RETRIES = {
    "REWARDS_WEBHOOK_RETRY_BASE": "0.05",
    "REWARDS_WEBHOOK_RETRY_CAP": "0.5",
    "REWARDS_DISPATCH_LEASE": "3",  # the killed server's lease lapses in 3 s, not 30
    "REWARDS_DISPATCH_SHARE": "1",  # no rest between rounds: the test waits for every delivery
}
BEANS = [{"sku": "BEANS-PREMIUM-KENYA", "quantity": 2, "net_amount": "12.00", "vat_amount": "2.28"}]


def subscribe(database: Database, url: str) -> tuple[str, str]:
    secret = signing.new_secret()
    subscription_id = str(uuid.uuid4())
    with database.transaction() as session:
        session.add(
            WebhookSubscription(
                id=subscription_id,
                url=url,
                event_types=["award.created", "award.reversed", "spend.created", "spend.reversed"],
                secret=secret,
            )
        )
    return subscription_id, secret


def count(database: Database, statement: Any) -> int:
    with database.transaction(write=False) as session:
        return int(session.scalar(statement) or 0)


def test_kill_9_between_commit_and_delivery(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    log = tmp_path / "server.log"
    refusing = True
    with receiving(lambda _m, _n: 503 if refusing else 200) as receiver:
        server = RewardsServer.start(url, log, api_key=ADMIN_KEY, environment=FAST_RETRIES)
        database = Database(url)
        try:
            subscription_id, secret = subscribe(database, receiver.url)
            with api(server, ADMIN_KEY) as client:
                contacts = [json_of(client.post("/v1/contacts", json={}), 201) for _ in range(3)]
                for i in range(12):
                    body = purchase_body(contacts[i % 3]["wallet"]["code"], products=BEANS)
                    assert json_of(client.post("/v1/events/purchases", json=body), 201)["awards"]
            d = Delivery.__table__.c  # type: ignore[attr-defined]
            # Committed and tried (the receiver refuses): then the server dies.
            until(
                lambda: count(database, select(func.count()).where(d.attempts > 0)) >= 3, "attempts"
            )
            server.kill()
        finally:
            server.kill()
        committed = count(database, select(func.count()).select_from(OutboxRow))
        ledger_awards = count(
            database, select(func.count()).where(col(WalletTransaction.kind) == "award")
        )
        assert count(database, select(func.count()).where(d.status == "delivered")) == 0
        refusing = False
        server = RewardsServer.start(url, log, api_key=ADMIN_KEY, environment=FAST_RETRIES)
        try:
            pending = select(func.count()).where(d.status != "delivered")
            until(lambda: count(database, pending) == 0, "every delivery delivered", timeout=60)
        finally:
            server.stop()
        ids = {
            str(i)
            for i in database.session(write=False).scalars(
                select(col(Delivery.outbox_id)).where(
                    col(Delivery.subscription_id) == subscription_id
                )
            )
        }
        database.dispose()
    accepted = receiver.accepted()
    assert {m["id"] for m in accepted} == ids  # every committed one, and nothing else
    assert committed >= len(ids) >= 12
    awards = [m for m in accepted if m["type"] == "award.created"]
    assert len(awards) == ledger_awards >= 12  # every award of the ledger, once after dedupe
    for item in receiver.got:
        assert signing.verify(secret, item.headers, item.body)


def test_a_thousand_awards_under_load_arrive_once_in_order_per_contact(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'load.db'}"
    flaky = random.Random(7)
    lock = threading.Lock()

    def policy(_message: dict[str, Any], attempt: int) -> int:
        # A receiver that sometimes stores a message and then fails to answer 2xx: the
        # dispatcher sends it again, and the receiver's dedupe by id keeps one.
        with lock:
            return 500 if attempt == 1 and flaky.random() < 0.03 else 200

    with receiving(policy) as receiver:
        server = RewardsServer.start(
            url, tmp_path / "server.log", api_key=ADMIN_KEY, workers=2, environment=FAST_RETRIES
        )
        database = Database(url)
        try:
            subscribe(database, receiver.url)
            with api(server, ADMIN_KEY) as client:
                contacts = [json_of(client.post("/v1/contacts", json={}), 201) for _ in range(25)]
            codes = [c["wallet"]["code"] for c in contacts]

            def post(worker: int) -> None:
                with api(server, ADMIN_KEY) as client:
                    for i in range(worker, 1000, 8):
                        body = purchase_body(codes[i % 25], products=BEANS, performed_on=moment())
                        assert client.post("/v1/events/purchases", json=body).status_code == 201

            threads = [threading.Thread(target=post, args=(w,)) for w in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(300)
            ledger_awards = count(
                database,
                select(func.count()).where(col(WalletTransaction.kind) == "award"),
            )
            assert ledger_awards >= 1000
            until(
                lambda: (
                    sum(1 for m in receiver.accepted() if m["type"] == "award.created")
                    >= ledger_awards
                ),
                "every award told",
                timeout=180,
                log=server.log,
            )
        finally:
            server.stop()
            database.dispose()
    accepted = [m for m in receiver.accepted() if m["type"] == "award.created"]
    assert len(accepted) == ledger_awards  # exactly once after dedupe
    assert len([r for r in receiver.got if r.message["type"] == "award.created"]) > len(accepted)
    arrivals: dict[str, list[int]] = defaultdict(list)
    for message in accepted:  # first arrivals, in arrival order
        arrivals[message["contact_id"]].append(int(message["id"]))
    assert len(arrivals) == 25
    for ids in arrivals.values():
        assert ids == sorted(ids)  # each contact's in commit (outbox) order
