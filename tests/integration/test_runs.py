"""Evaluation runs at service level (issue 5): per-event batch offers, idempotence, as_of,
crashes, one run at a time. Period aggregates: test_runs_aggregates.py; concurrency and
scale-out: test_runs_concurrency.py.

Events are recorded through the intake service (``events.record_event``), so they carry
exactly what intake writes (``evaluated``, immediate awards); runs go through
``runs.run_evaluation``. Offers: tests/integration/run_rulesets (the seed scenarios use
the shipped rulesets/).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from litestar import Litestar
from sqlalchemy import func, select, update

from rewards import runs
from rewards.db.run_tables import EvaluatedEvent, EvaluationRun
from rewards.db.tables import Award, Event, Wallet, WalletTransaction
from rewards.domain.money import to_cents
from rewards.intake import contacts, events
from rewards.offers.evaluation import awards_in_window
from rewards.runs.deciding import Item
from rewards.runs.records import EVENT_COLUMNS, read_records
from rewards.runs.writing import Worker
from rewards.wire import EVENT_BODIES, ContactCreate
from tests.conftest import BOTH, ROOT

RUN_RULESETS = Path(__file__).with_name("run_rulesets")
SHIPPED = ROOT / "rulesets"
T0 = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)  # a Monday, long closed


class World:
    """The app's database and runtime, with small factories."""

    def __init__(self, app: Litestar) -> None:
        self.app = app
        self.database = app.state.database
        self.runtime = app.state.runtime

    def contact(self, segments: list[str] | None = None) -> str:
        with self.database.transaction() as session:
            created = contacts.create_contact(
                session, self.runtime, ContactCreate(segments=segments or [])
            )
        return created.id

    def event(self, event_type: str, contact_id: str, **body: Any) -> Any:
        body.setdefault("performed_on", T0.isoformat())
        body.setdefault("external_reference", f"ref-{uuid.uuid4().hex[:10]}")
        if event_type != "referral":
            body["contact"] = {"contact_id": contact_id}
        if isinstance(body["performed_on"], datetime):
            body["performed_on"] = body["performed_on"].isoformat()
        with self.database.transaction() as session:
            struct = self.runtime.schemas.convert(
                f"events/{event_type}", body, EVENT_BODIES[event_type]
            )
            return events.record_event(session, self.runtime, event_type, struct).event

    def purchase(
        self,
        contact_id: str,
        when: datetime,
        unit: str,
        lines: list[tuple[str, str, str]] | None = None,
        **body: Any,
    ) -> Any:
        """``lines``: (sku, quantity, net amount) without VAT; default one line of 10.00."""
        products = [
            {"sku": sku, "quantity": Decimal(quantity), "net_amount": net, "vat_amount": "0"}
            for sku, quantity, net in (lines or [("ITEM", "1", "10.00")])
        ]
        return self.event(
            "purchase",
            contact_id,
            performed_on=when,
            performed_by_unit=unit,
            reference_number=f"R-{uuid.uuid4().hex[:8]}",
            products=products,
            **body,
        )

    def run(self, **options: Any) -> runs.EvaluationRunOut:
        options.setdefault("source", "test")
        return runs.run_evaluation(self.database, self.runtime, **options)

    def awards(self) -> Counter[tuple[str, str, str, int]]:
        """(offer, event external reference, beneficiary, cents) of every award."""
        with self.database.session(write=False) as session:
            rows = session.execute(
                select(
                    Award.offer_id, Event.external_reference, Award.beneficiary, Award.amount_cents
                ).join(Event, Event.id == Award.event_id)
            ).all()
        return Counter((o, r or "", b, c) for o, r, b, c in rows)

    def standing(self, offer_id: str | None = None) -> list[tuple[str, str, int]]:
        """(offer, event reference, cents) of awards not reversed, sorted."""
        reversed_ids = select(WalletTransaction.reverses_id).where(
            WalletTransaction.reverses_id.is_not(None)  # type: ignore[union-attr]
        )
        with self.database.session(write=False) as session:
            query = (
                select(Award.offer_id, Event.external_reference, Award.amount_cents)
                .join(Event, Event.id == Award.event_id)
                .where(Award.ledger_entry_id.not_in(reversed_ids))  # type: ignore[attr-defined]
            )
            if offer_id is not None:
                query = query.where(Award.offer_id == offer_id)
            return sorted((o, r or "", c) for o, r, c in session.execute(query))

    def balance(self, contact_id: str) -> int:
        with self.database.session(write=False) as session:
            wallet = session.scalars(select(Wallet).where(Wallet.contact_id == contact_id)).one()
            ledger = session.scalar(
                select(func.coalesce(func.sum(WalletTransaction.amount_cents), 0)).where(
                    WalletTransaction.wallet_id == wallet.id
                )
            )
        assert wallet.balance_cents == ledger  # the balance moves in lock-step with the ledger
        return wallet.balance_cents

    def cancel(self, event_id: str) -> list[Any]:
        """Cancel through the service (which calls the aggregate hook first)."""
        with self.database.transaction() as session:
            cancelled = events.cancel_event(session, self.runtime, event_id)
        return [
            SimpleNamespace(kind=r.kind, amount_cents=to_cents(r.amount), reverses_id=r.reverses_id)
            for r in cancelled.reversals
        ]


@pytest.fixture
def rulesets_dir() -> Path:
    return RUN_RULESETS


@pytest.fixture
def world(app: Litestar) -> Iterator[World]:
    from litestar.testing import TestClient

    with TestClient(app):  # start-up (migrations) and shutdown
        yield World(app)


# ---- seed scenarios with the shipped offers --------------------------------------------


@pytest.mark.parametrize("rulesets_dir", [SHIPPED], indirect=False)
@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_five_star_service_feedback_is_paid_by_a_run(world: World) -> None:
    seller = world.contact()
    feedback = world.event("achievement", seller, classification="5-star-service")
    assert feedback.awards == [] and feedback.evaluated is False  # batch: not on intake
    assert world.balance(seller) == 0

    done = world.run()

    assert done.status == "finished"
    assert done.events_evaluated == 1 and done.awards == 1
    assert done.total_awarded == Decimal("5.00")
    assert world.standing() == [("five-star-service", feedback.external_reference, 500)]
    assert world.balance(seller) == 500
    again = world.run()
    assert (again.events_evaluated, again.awards) == (0, 0)
    assert world.balance(seller) == 500


@pytest.mark.parametrize("rulesets_dir", [SHIPPED], indirect=False)
@pytest.mark.parametrize(
    ("database_url", "chunk_size"),
    [("sqlite", 1), ("sqlite", 1000), ("postgres", 1)],  # a chunk per event; all in one
    indirect=["database_url"],
)
def test_electron_top_up_is_paid_once_per_365_days(world: World, chunk_size: int) -> None:
    card = {"identifier": "4917000011112222"}  # the definition's brand rule: electron
    holder = world.contact()
    dates = [T0, T0 + timedelta(days=100), T0 + timedelta(days=364), T0 + timedelta(days=366)]
    tops = [
        world.event(
            "financial_achievement",
            holder,
            classification="top-up",
            amount="150.00",
            payment_medium=card,
            performed_on=when,
        )
        for when in reversed(dates)  # recorded out of order: the run goes by performed_on
    ][::-1]
    small = world.event(
        "financial_achievement",
        holder,
        classification="top-up",
        amount="99.99",
        payment_medium=card,
        performed_on=T0 - timedelta(days=10),
    )

    done = world.run(chunk_size=chunk_size)

    assert done.events_evaluated == 5
    paid = {ref for _, ref, _ in world.standing("electron-top-up")}
    assert paid == {tops[0].external_reference, tops[3].external_reference}
    assert small.external_reference not in paid
    assert world.balance(holder) == 2000


# ---- per-event offers ------------------------------------------------------------------


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_batch_offers_for_every_event_immediate_ones_only_when_not_evaluated(
    world: World,
) -> None:
    person = world.contact()
    # Evaluated on intake: the immediate offer paid 0.50 then; the run adds the batch 1.
    live = world.purchase(person, T0, "basket-1", [("TV", "1", "60.00")], process_immediately=True)
    assert live.evaluated and [a.offer_id for a in live.awards] == ["basket-immediate"]
    # Not evaluated on intake: the run applies both.
    later = world.purchase(person, T0 + timedelta(hours=1), "basket-1", [("TV", "1", "60.00")])
    # Below the batch offer's range: only the immediate offer, from the run.
    small = world.purchase(person, T0 + timedelta(hours=2), "basket-1", [("PEN", "1", "20.00")])

    done = world.run()

    assert done.events_evaluated == 3
    assert world.standing() == sorted(
        [
            ("basket-immediate", live.external_reference, 50),
            ("basket-batch", live.external_reference, 100),
            ("basket-immediate", later.external_reference, 50),
            ("basket-batch", later.external_reference, 100),
            ("basket-immediate", small.external_reference, 50),
        ]
    )
    assert world.balance(person) == 350


def test_a_batch_offer_never_awards_an_event_its_exclusive_group_already_awarded(
    world: World,
) -> None:
    person = world.contact()
    on_intake = world.event(
        "achievement", person, classification="course-completed", process_immediately=True
    )
    assert [a.offer_id for a in on_intake.awards] == ["course-bonus"]
    in_run = world.event("achievement", person, classification="course-completed")

    world.run()

    # Intake paid the immediate offer: the batch offer of its group stays out. The event
    # nobody evaluated gets the group's highest priority offer only.
    assert world.standing() == sorted(
        [
            ("course-bonus", on_intake.external_reference, 250),
            ("course-batch-extra", in_run.external_reference, 100),
        ]
    )


def test_events_after_as_of_wait_for_a_later_run(world: World) -> None:
    person = world.contact()
    early = world.event("achievement", person, classification="5-star-service", performed_on=T0)
    late = world.event(
        "achievement",
        person,
        classification="5-star-service",
        performed_on=T0 + timedelta(days=2),
    )

    first = world.run(as_of=T0 + timedelta(days=1))
    assert first.as_of == T0 + timedelta(days=1)
    assert world.standing() == [("five-star-service", early.external_reference, 500)]

    second = world.run()
    assert second.events_evaluated == 1
    assert {r for _, r, _ in world.standing()} == {
        early.external_reference,
        late.external_reference,
    }


def test_as_of_in_the_future_is_taken_as_now(world: World) -> None:
    done = world.run(as_of=datetime.now(UTC) + timedelta(days=30))
    assert done.as_of <= datetime.now(UTC)


def test_spend_requests_and_cancelled_events_are_not_evaluated(world: World) -> None:
    person = world.contact()
    kept = world.event("achievement", person, classification="5-star-service")
    dropped = world.event("achievement", person, classification="5-star-service")
    world.cancel(dropped.id)

    done = world.run()

    assert done.events_evaluated == 1
    assert world.standing() == [("five-star-service", kept.external_reference, 500)]


def test_run_awards_are_the_rows_persist_award_writes(world: World) -> None:
    person = world.contact()
    world.event("achievement", person, classification="5-star-service")
    world.run()
    with world.database.session(write=False) as session:
        award = session.scalars(select(Award)).one()
        entry = session.get(WalletTransaction, award.ledger_entry_id)
    assert entry is not None
    assert (entry.kind, entry.amount_cents, entry.event_id, entry.offer_id, entry.award_id) == (
        "award",
        500,
        award.event_id,
        "five-star-service",
        award.id,
    )
    assert entry.balance_after_cents == 500
    assert award.contact_id == person and award.beneficiary == "contact"
    with world.database.session(write=False) as session:
        event = session.scalars(select(Event).where(Event.id == award.event_id)).one()
        assert event.number is not None and runs.evaluated_by_run(session, event.number)
        assert not runs.evaluated_by_run(session, event.number + 1)
    assert award.ruleset_version == world.runtime.rulesets.version
    assert award.lines is None and award.instant_spend is False


def test_run_award_ids_are_time_ordered_uuids(world: World) -> None:
    """Version 7 UUIDs, increasing in the order the run wrote them (so the indexes on
    award ids append), like any other UUID to everything else."""
    for _ in range(3):
        person = world.contact()
        world.event("achievement", person, classification="5-star-service")
    world.run(chunk_size=1)
    with world.database.session(write=False) as session:
        ids = session.scalars(select(Award.id).order_by(Award.ledger_entry_id)).all()
    assert len(ids) == 3 and ids == sorted(ids)
    assert all(uuid.UUID(i).version == 7 and str(uuid.UUID(i)) == i for i in ids)


def test_a_run_leaves_no_row_without_its_parent_and_gives_foreign_keys_back(
    world: World,
) -> None:
    """SQLite: the run's write connection does not look up the parents of the rows it
    inserts (``Worker._connection``). Every row it wrote (marks, awards, ledger entries,
    aggregate awards and links) still has its parents, also with a cancellation between
    two runs, and the connection goes back to the pool enforcing foreign keys again."""
    march = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)
    people = [world.contact() for _ in range(3)]
    for person in people:
        world.event("achievement", person, classification="5-star-service")
        for day in range(3):  # 300.00 in March: the month-spend aggregate
            world.purchase(person, march + timedelta(days=day), "amount-1", [("TV", "1", "100")])
    world.run()
    cancelled = world.purchase(people[0], march, "amount-1", [("TV", "1", "100")])
    world.run()
    world.cancel(cancelled.id)
    assert {offer for offer, _, _ in world.standing()} >= {"five-star-service", "month-spend"}

    run = EvaluationRun(id="x", as_of=T0, ruleset_version="v")
    worker = Worker(world.database, world.runtime, run, "check", 10, 10, runs.RunHooks())
    driver = worker._connection().connection.dbapi_connection
    assert driver is not None
    assert driver.execute("PRAGMA foreign_keys").fetchone()[0] == 0
    worker.close()
    assert driver.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    with world.database.session(write=False) as session:
        orphans = session.connection().exec_driver_sql("PRAGMA foreign_key_check").all()
    assert orphans == []


def test_window_counts_agree_with_awards_in_window(world: World) -> None:
    """The run counts max_awards windows per chunk; intake's awards_in_window per event:
    both must count the same awards."""
    card = {"identifier": "4917000011112222"}
    people = [world.contact() for _ in range(3)]
    for i, person in enumerate(people):
        for days in (0, 200, 366 + i, 600):
            world.event(
                "financial_achievement",
                person,
                classification="top-up",
                amount="120.00",
                payment_medium=card,
                performed_on=T0 + timedelta(days=days),
            )
    world.run(chunk_size=2)
    worker = Worker(
        world.database,
        world.runtime,
        EvaluationRun(id="x", as_of=T0, ruleset_version="v"),
        "test",
        1,
        1,
        runs.RunHooks(),
    )
    with world.database.session(write=False) as session:
        rows = read_records(session, select(*EVENT_COLUMNS))
        items = [Item(event=row, mode="batch") for row in rows]
        windows = {
            "financial_achievement": world.runtime.rulesets.award_windows("financial_achievement")
        }
        found = worker.reader.window_awards(session, items, windows)
        for item in items:
            event = session.scalars(select(Event).where(Event.id == item.event.id)).one()
            expected = awards_in_window(session, world.runtime, event)
            assert worker.reader.counts(item, found, windows) == expected


# ---- idempotence and crashes ------------------------------------------------------------


MIXED_PEOPLE = 3


def _seed_mixed(world: World) -> list[str]:
    """Achievements, top-ups and aggregate purchases over a few contacts."""
    card = {"identifier": "4917000011112222"}
    people = [world.contact() for _ in range(MIXED_PEOPLE)]
    for i, person in enumerate(people):
        world.event(
            "achievement", person, classification="5-star-service", external_reference=f"a{i}"
        )
        for k in range(2):  # the second within 365 days of the first
            world.event(
                "financial_achievement",
                person,
                classification="top-up",
                amount="100",
                payment_medium=card,
                performed_on=T0 + timedelta(days=i + 200 * k),
                external_reference=f"t{i}-{k}",
            )
        for day in range(4):
            world.purchase(  # 4 visits Monday to Thursday: week-visits
                person,
                T0 + timedelta(days=day, hours=i),
                "number-1",
                external_reference=f"p{i}-{day}",
            )
            world.purchase(  # 4 x 60.00 in March: month-spend, 2% of 240.00
                person,
                T0 + timedelta(days=7 * day),
                "amount-1",
                [("ITEM", "1", "60.00")],
                external_reference=f"m{i}-{day}",
            )
    return people


# What one clean run awards for _seed_mixed: (offer, event reference, beneficiary, cents).
MIXED_AWARDS = Counter(
    award
    for i in range(MIXED_PEOPLE)
    for award in (
        ("five-star-service", f"a{i}", "contact", 500),
        ("electron-top-up", f"t{i}-0", "contact", 1000),
        ("week-visits", f"p{i}-3", "contact", 500),
        ("month-spend", f"m{i}-3", "contact", 480),
    )
)


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_a_rerun_awards_nothing(world: World) -> None:
    people = _seed_mixed(world)
    first = world.run(chunk_size=7, contacts_per_chunk=2)
    awards = world.awards()
    balances = [world.balance(p) for p in people]
    assert awards == MIXED_AWARDS and first.awards == sum(awards.values())
    assert balances == [2480] * MIXED_PEOPLE

    again = world.run(chunk_size=7, contacts_per_chunk=2)

    assert (again.status, again.events_evaluated, again.awards) == ("finished", 0, 0)
    assert world.awards() == awards
    assert [world.balance(p) for p in people] == balances


class Crash(Exception):
    pass


@pytest.mark.parametrize(
    ("database_url", "crash_in"),
    [
        ("sqlite", "events"),  # the third chunk of events
        ("sqlite", "aggregates"),  # the first chunk of aggregates
        ("postgres", "aggregates"),
    ],
    indirect=["database_url"],
)
def test_a_run_killed_mid_way_then_rerun_awards_exactly_one_clean_run(
    world: World, crash_in: str
) -> None:
    _seed_mixed(world)
    seen: list[str] = []

    def crash(done: runs.ChunkDone) -> None:
        seen.append(done.phase)
        if seen.count(crash_in) == (3 if crash_in == "events" else 1):
            raise Crash(f"killed in chunk {done.chunk} ({done.phase})")

    with pytest.raises(Crash):
        world.run(chunk_size=5, contacts_per_chunk=1, hooks=runs.RunHooks(before_commit=crash))
    with world.database.session(write=False) as session:
        failed = session.scalars(select(EvaluationRun)).one()
        marked = session.scalar(select(func.count()).select_from(EvaluatedEvent))
        awarded = session.scalar(select(func.count()).select_from(Award))
    # The error names the exception, never its message (it could quote customer data).
    assert failed.status == "failed" and ".Crash: (message withheld" in (failed.error or "")
    assert failed.running_lock is None
    assert failed.chunks == len(seen) - 1  # the chunk in flight was lost, nothing else
    assert marked == (10 if crash_in == "events" else MIXED_PEOPLE * 11)
    assert failed.awards == awarded < sum(MIXED_AWARDS.values())

    rerun = world.run(chunk_size=5, contacts_per_chunk=1)
    assert rerun.status == "finished"
    assert world.awards() == MIXED_AWARDS  # exactly what one clean run awards


# ---- one run at a time -------------------------------------------------------------------


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_a_second_run_is_refused_while_one_runs(world: World) -> None:
    first = runs.start_run(world.database, world.runtime, source="test")
    with pytest.raises(runs.RunInProgress) as refused:
        runs.start_run(world.database, world.runtime, source="test")
    assert refused.value.status == 409 and first.id in refused.value.detail
    done = runs.execute_run(world.database, world.runtime, first.id)
    assert done.status == "finished"
    assert world.run().status == "finished"  # the lock is free again


def test_a_run_whose_process_died_is_taken_over(world: World) -> None:
    first = runs.start_run(world.database, world.runtime, source="test")
    with world.database.transaction() as session:
        run = session.get(EvaluationRun, first.id)
        assert run is not None
        run.heartbeat_at = datetime.now(UTC) - runs.STALE_AFTER - timedelta(seconds=1)
    second = world.run()
    assert second.status == "finished"
    with world.database.session(write=False) as session:
        abandoned = session.get(EvaluationRun, first.id)
    assert abandoned is not None and abandoned.status == "failed"
    assert "abandoned" in (abandoned.error or "")


def test_a_stop_request_fails_the_run_and_the_next_one_resumes(world: World) -> None:
    import threading

    person = world.contact()
    for i in range(6):
        world.event(
            "achievement", person, classification="5-star-service", external_reference=f"s{i}"
        )
    stop = threading.Event()

    def stop_after_two(done: runs.ChunkDone) -> None:
        if done.chunk == 2:
            stop.set()

    stopped = world.run(chunk_size=1, hooks=runs.RunHooks(stop=stop, progress=stop_after_two))
    assert stopped.status == "failed" and "interrupted" in (stopped.error or "")
    assert stopped.events_evaluated == 2
    resumed = world.run(chunk_size=1)
    assert (resumed.status, resumed.events_evaluated) == ("finished", 4)
    assert world.balance(person) == 3000


def test_get_run_reports_progress_and_offers(world: World) -> None:
    person = world.contact()
    world.event("achievement", person, classification="5-star-service")
    done = world.run()
    with world.database.session(write=False) as session:
        seen = runs.get_run(session, done.id)
        with pytest.raises(runs.RunNotFound):
            runs.get_run(session, "nope")
    assert seen.status == "finished" and seen.finished_at is not None
    assert seen.events_total == 1 and seen.events_evaluated == 1
    assert seen.offers == [
        runs.RunOfferOut(offer_id="five-star-service", awards=1, total_awarded=Decimal("5.00"))
    ]


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
@pytest.mark.parametrize("rulesets_dir", [SHIPPED], indirect=False)
def test_an_event_stored_in_year_1_does_not_stop_runs(world: World) -> None:
    """Intake refuses such dates now (issue 16, defect 3); older data may hold one, and
    the period arithmetic of the aggregates met the calendar's start (OverflowError)."""
    contact = world.contact(["gold"])
    old = world.purchase(contact, T0, "store-001")
    world.purchase(contact, T0 + timedelta(days=1), "store-001")
    with world.database.transaction() as session:
        session.execute(
            update(Event)
            .where(Event.id == old.id)  # type: ignore[arg-type]
            .values(performed_on=datetime(1, 1, 1, tzinfo=UTC))
        )
    run = world.run()
    assert run.status == "finished", run.error
    assert run.events_total >= 2
    assert world.run().status == "finished"  # and the next one too
