"""Crash safety: a real ``rewards serve`` under load is killed with SIGKILL at random
moments and restarted on the same database; nothing acknowledged is lost, nothing
unacknowledged is half-written, and the ledger still adds up.

Per database (SQLite file; PostgreSQL schema of its own when REWARDS_TEST_POSTGRES_URL
is set), with the shipped rulesets and one server process:

- a few client threads send purchases (``process_immediately``, 5 lines that earn
  ``premium-beans`` and the instant-spend ``gift-card-bonus``, so every purchase writes
  awards, ledger credits, a spend and its debit) and spend requests against their own
  acknowledged purchases, each with a unique ``external_reference``;
- ``KILLS`` times, at a moment drawn from a seeded RNG (``REWARDS_CRASH_SEED``), the
  server gets SIGKILL mid-load, is restarted on the same database, and every request
  that got no answer (connection error) is replayed with the same body: 201 (it had
  not been written) or 200 (it had committed before the kill), never a new event.
  A kill counts when it hit requests in flight (sent before it, never answered); one
  that landed while every answer was already on its way is made again, up to
  ``MAX_ROUNDS`` kills in all;
- afterwards, over HTTP and straight from the database with SQLAlchemy: every event
  acknowledged with 201/200 exists with the awards it was acknowledged with; the
  stored events of the run are exactly the acknowledged ones; every stored event has
  all of its writes or none (lines, awards = award ledger entries, spends = spend
  ledger entries, evaluated flag); no ledger entry, award or spend without its event;
  each wallet's balance equals the sum of its ledger and every ``balance_after`` is the
  running sum; awards are unique per (offer, event, beneficiary).

Bounded: every loop is capped in count and time; everything runs on 127.0.0.1; the
server is always killed in ``finally``.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import postgres_schema
from tests.serving import RewardsServer

KILLS = 4
CLIENT_THREADS = 4
CONTACTS = 6
SEED = int(os.environ.get("REWARDS_CRASH_SEED", "20261123"))
API_KEY = "crash-admin-key"
MAX_REQUESTS_PER_ROUND = 400  # per thread; the kill comes long before
ROUND_SECONDS = 20.0  # a round never lasts longer, kill or not
KILL_WAIT_SECONDS = 8.0
MAX_ROUNDS = 3 * KILLS  # a kill that hits no request in flight does not count


# ---- the database ---------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def crash_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh SQLite file, or a PostgreSQL schema of this test (dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'crash.db'}"
        return
    with postgres_schema("rewards_crash") as url:
        yield url


# ---- the load -------------------------------------------------------------------------


@dataclass
class Request:
    path: str
    body: dict[str, Any]
    contact: int  # index into the contacts

    @property
    def reference(self) -> str:
        return str(self.body["external_reference"])


@dataclass
class Ledger:
    """What the clients were told, shared by the client threads."""

    acknowledged: dict[str, dict[str, Any]] = field(default_factory=dict)  # reference -> event
    refused: dict[str, dict[str, Any]] = field(default_factory=dict)  # reference -> problem
    sent: set[str] = field(default_factory=set)  # references sent and not yet answered
    unanswered: list[Request] = field(default_factory=list)
    purchases: dict[int, list[str]] = field(default_factory=dict)  # contact -> purchase ids
    stats: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, request: Request, response: httpx.Response) -> None:
        assert response.status_code < 500, f"{request.path}: {response.status_code} {response.text}"
        with self.lock:
            self.sent.discard(request.reference)
            if response.status_code in (200, 201):
                event = response.json()
                assert event["external_reference"] == request.reference
                previous = self.acknowledged.setdefault(request.reference, event)
                assert previous["id"] == event["id"], f"{request.reference}: two events"
                if event["type"] == "purchase":
                    self.purchases.setdefault(request.contact, []).append(event["id"])
                self.stats[f"{event['type']} {response.status_code}"] += 1
            else:
                problem = response.json()
                # The only refusals this load can meet: a spend the wallet cannot cover.
                assert request.path.endswith("spend-requests"), response.text
                assert problem.get("code") in {"insufficient_funds", "spend_exceeds_purchase"}, (
                    response.text
                )
                self.refused[request.reference] = problem
                self.stats[f"spend_request {response.status_code}"] += 1


def _now() -> str:
    return datetime.now(UTC).isoformat()


def purchase(rng: random.Random, wallet: str, reference: str) -> dict[str, Any]:
    """Earns premium-beans (10% of the beans line, >= 20) and gift-card-bonus (2, spent at
    once): both undated, so the shipped rulesets award them on any day."""
    lines = [
        {
            "sku": "BEANS-PREMIUM-KENYA",
            "net_amount": f"{rng.randint(2000, 6000) / 100:.2f}",
            "vat_amount": "0.00",
        },
        {"sku": "GC-25", "net_amount": "25.00", "vat_amount": "0.00"},
        {
            "sku": "COFFEE-LATTE",
            "quantity": rng.randint(1, 3),
            "net_amount": "3.00",
            "vat_amount": "0.57",
        },
        {"sku": "PASTRY-CROISSANT", "net_amount": "2.50", "vat_amount": "0.48"},
        {"sku": "GROCERY-MILK", "net_amount": "1.20", "vat_amount": "0.23"},
    ]
    return {
        "contact": {"wallet_code": wallet},
        "performed_on": _now(),
        "performed_by_unit": rng.choice(["store-001", "store-002", "store-003"]),
        "reference_number": reference[-12:],
        "process_immediately": True,
        "external_system": "crash",
        "external_reference": reference,
        "payment_medium": {"brand": "visa", "type": "credit"},
        "products": lines,
    }


def spend_request(wallet: str, purchase_id: str, reference: str) -> dict[str, Any]:
    return {
        "contact": {"wallet_code": wallet},
        "performed_on": _now(),
        "purchase_event_id": purchase_id,
        "requested_amount": "1.00",
        "external_system": "crash",
        "external_reference": reference,
    }


def client_loop(
    url: str, number: int, seed: int, wallets: list[str], ledger: Ledger, stop: threading.Event
) -> None:
    """Send requests until the server dies (or the round's cap); an unanswered request is
    kept for replay and ends this thread's round."""
    rng = random.Random(seed)
    deadline = time.monotonic() + ROUND_SECONDS
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=15
    ) as client:
        for _ in range(MAX_REQUESTS_PER_ROUND):
            if stop.is_set() or time.monotonic() > deadline:
                return
            contact = rng.randrange(len(wallets))
            reference = f"{number}-{uuid.UUID(int=rng.getrandbits(128)).hex}"
            with ledger.lock:
                owned = list(ledger.purchases.get(contact, []))
                if owned and rng.random() < 0.35:
                    request = Request(
                        "/v1/events/spend-requests",
                        spend_request(wallets[contact], rng.choice(owned), reference),
                        contact,
                    )
                else:
                    request = Request(
                        "/v1/events/purchases", purchase(rng, wallets[contact], reference), contact
                    )
                ledger.sent.add(reference)
            try:
                response = client.post(request.path, json=request.body)
            except httpx.TransportError:
                with ledger.lock:
                    ledger.sent.discard(reference)
                    ledger.unanswered.append(request)
                return
            ledger.record(request, response)


def replay(url: str, ledger: Ledger) -> Counter[str]:
    """Every unanswered request again, same body: 201 or 200 (never a second event)."""
    outcomes: Counter[str] = Counter()
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
    ) as client:
        pending, ledger.unanswered = ledger.unanswered, []
        for request in pending:
            response = client.post(request.path, json=request.body)
            assert response.status_code in (200, 201) or (
                response.status_code == 422 and request.path.endswith("spend-requests")
            ), f"replay of {request.reference}: {response.status_code} {response.text}"
            ledger.record(request, response)
            outcomes[f"replay {response.status_code}"] += 1
    return outcomes


# ---- the checks -----------------------------------------------------------------------


def check_over_http(url: str, ledger: Ledger) -> None:
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
    ) as client:
        for reference, acknowledged in ledger.acknowledged.items():
            response = client.get(f"/v1/events/{acknowledged['id']}")
            assert response.status_code == 200, f"acknowledged {reference} is gone"
            stored = response.json()
            assert stored["external_reference"] == reference
            assert stored["evaluated"] == acknowledged["evaluated"]
            assert sorted((a["offer_id"], a["amount"]) for a in stored["awards"]) == sorted(
                (a["offer_id"], a["amount"]) for a in acknowledged["awards"]
            ), reference
            # A purchase's later spend requests add to its spends; its instant spends are fixed.
            assert sorted(s["amount"] for s in stored["spends"] if s["instant"]) == sorted(
                s["amount"] for s in acknowledged["spends"] if s["instant"]
            ), reference
            assert {s["id"] for s in acknowledged["spends"]} <= {s["id"] for s in stored["spends"]}


def rows(connection: Any, sql: str) -> list[Any]:
    return list(connection.execute(text(sql)).all())


def check_database(database_url: str, ledger: Ledger) -> None:
    engine = create_engine(database_url)
    try:
        with engine.connect() as db:
            # The stored events of the run are exactly the acknowledged ones.
            stored = dict(
                rows(
                    db, "SELECT external_reference, id FROM events WHERE external_system = 'crash'"
                )
            )
            assert stored == {ref: event["id"] for ref, event in ledger.acknowledged.items()}
            assert not set(stored) & set(ledger.refused), "a refused request left an event"
            assert rows(db, "SELECT count(*) FROM events WHERE external_system <> 'crash'") == [
                (0,)
            ]

            # All or nothing per event: lines, evaluation, awards = award credits,
            # spends = spend debits.
            assert (
                rows(
                    db,
                    "SELECT e.id FROM events e WHERE e.type = 'purchase' AND (e.evaluated = false"
                    " OR (SELECT count(*) FROM event_lines l WHERE l.event_id = e.id) <> 5"
                    " OR NOT EXISTS (SELECT 1 FROM awards a WHERE a.event_id = e.id))",
                )
                == []
            ), "purchase without its lines, evaluation or awards"
            assert (
                rows(
                    db,
                    "SELECT e.id FROM events e WHERE"
                    " (SELECT count(*) FROM awards a WHERE a.event_id = e.id) <>"
                    " (SELECT count(*) FROM wallet_transactions t"
                    "   WHERE t.event_id = e.id AND t.kind = 'award')"
                    " OR (SELECT count(*) FROM spends s WHERE s.event_id = e.id) <>"
                    " (SELECT count(*) FROM wallet_transactions t"
                    "   WHERE t.event_id = e.id AND t.kind = 'spend')",
                )
                == []
            ), "event whose awards or spends and ledger entries disagree"
            assert (
                rows(
                    db,
                    "SELECT e.id FROM events e WHERE e.type = 'spend_request' AND"
                    " (SELECT count(*) FROM spends s WHERE s.event_id = e.id) <> 1",
                )
                == []
            ), "spend request without exactly one spend"
            assert (
                rows(
                    db,
                    "SELECT a.id FROM awards a LEFT JOIN wallet_transactions t"
                    " ON t.id = a.ledger_entry_id"
                    " WHERE t.id IS NULL OR t.amount_cents <> a.amount_cents OR t.kind <> 'award'"
                    " OR t.award_id <> a.id",
                )
                == []
            ), "award without its exact ledger credit"
            assert (
                rows(
                    db,
                    "SELECT s.id FROM spends s LEFT JOIN wallet_transactions t"
                    " ON t.id = s.ledger_entry_id"
                    " WHERE t.id IS NULL OR t.amount_cents <> -s.amount_cents OR t.kind <> 'spend'",
                )
                == []
            ), "spend without its exact ledger debit"
            # Nothing hangs off an event that is not there.
            for table in ("wallet_transactions", "awards", "spends", "event_lines"):
                assert (
                    rows(
                        db,
                        f"SELECT x.event_id FROM {table} x LEFT JOIN events e ON e.id = x.event_id"
                        " WHERE e.id IS NULL",
                    )
                    == []
                ), f"{table} row without its event"

            # Balances: the sum of the ledger, and every balance_after the running sum.
            assert (
                rows(
                    db,
                    "SELECT w.id FROM wallets w WHERE w.balance_cents <>"
                    " (SELECT coalesce(sum(t.amount_cents), 0) FROM wallet_transactions t"
                    "  WHERE t.wallet_id = w.id)",
                )
                == []
            ), "wallet balance differs from the sum of its ledger"
            running: dict[int, int] = {}
            for wallet_id, amount, after in rows(
                db,
                "SELECT wallet_id, amount_cents, balance_after_cents FROM wallet_transactions"
                " ORDER BY wallet_id, id",
            ):
                running[wallet_id] = running.get(wallet_id, 0) + amount
                assert running[wallet_id] == after, f"wallet {wallet_id}: balance_after drift"
                assert after >= 0, f"wallet {wallet_id} overdrawn"

            # Awards are unique per (offer, event, beneficiary).
            assert (
                rows(
                    db,
                    "SELECT offer_id, event_id, beneficiary FROM awards"
                    " GROUP BY offer_id, event_id, beneficiary HAVING count(*) > 1",
                )
                == []
            )
    finally:
        engine.dispose()


# ---- the test -------------------------------------------------------------------------


@pytest.mark.timeout(110)
def test_sigkill_under_load_loses_nothing_acknowledged_and_half_writes_nothing(
    crash_database: str, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    began = time.monotonic()
    log = tmp_path / "server.log"
    ledger = Ledger()
    round_stats: list[str] = []
    server = RewardsServer.start(crash_database, log, api_key=API_KEY)
    try:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
        ) as client:
            wallets = []
            for _ in range(CONTACTS):
                response = client.post("/v1/contacts", json={"segments": ["gold"]})
                assert response.status_code == 201, response.text
                wallets.append(response.json()["wallet"]["code"])

        hits = 0  # kills that hit requests in flight
        for kill in range(MAX_ROUNDS):
            if hits == KILLS:
                break
            stop = threading.Event()
            threads = [
                threading.Thread(
                    target=client_loop,
                    args=(server.url, kill * 100 + n, rng.getrandbits(32), wallets, ledger, stop),
                    daemon=True,
                )
                for n in range(CLIENT_THREADS)
            ]
            before = sum(ledger.stats.values())
            started = time.monotonic()
            for thread in threads:
                thread.start()
            # The random moment: after a random number of answers of this round (so the
            # load is flowing and requests are in flight), plus a random fraction of a
            # request's time; never later than KILL_WAIT_SECONDS.
            answers, extra = rng.randint(2, 10), rng.uniform(0.0, 0.3)
            while (
                sum(ledger.stats.values()) - before < answers
                and time.monotonic() - started < KILL_WAIT_SECONDS
            ):
                time.sleep(0.01)
            time.sleep(extra)
            with ledger.lock:  # what was sent and not answered when the kill came
                sent = set(ledger.sent)
            server.kill()
            killed_after = time.monotonic() - started
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
                assert not thread.is_alive(), "a client thread did not stop"
            # In flight at the kill: sent before it and never answered. A kill that
            # landed while every request sent had its answer on the way does not count.
            in_flight = sent & {request.reference for request in ledger.unanswered}
            hits += bool(in_flight)
            unanswered = len(ledger.unanswered)
            answered = sum(ledger.stats.values()) - before
            restart = time.monotonic()
            server = RewardsServer.start(crash_database, log, api_key=API_KEY)
            restarted_in = time.monotonic() - restart
            outcomes = replay(server.url, ledger)
            round_stats.append(
                f"kill {kill + 1} after {killed_after:.2f} s: {answered} answered before, "
                f"{len(in_flight)} in flight at the kill, {unanswered} unanswered, "
                f"replayed {dict(outcomes)}; restart took {restarted_in:.1f} s"
            )
        assert hits == KILLS, f"only {hits} of {MAX_ROUNDS} kills hit a request in flight"

        check_over_http(server.url, ledger)
    finally:
        server.kill()
    check_database(crash_database, ledger)
    print(f"\nseed {SEED}: {dict(ledger.stats)} in {time.monotonic() - began:.1f} s")
    print("\n".join(round_stats))
    assert len(ledger.acknowledged) > KILLS, "too little load to prove anything"
