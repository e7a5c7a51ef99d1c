"""Evaluation runs against concurrent work, on SQLite and PostgreSQL: two workers sharing
one run (contact-hash partitions), two runs started at once, intake while a run is
writing, and a big run's read-ahead process (forced here on small runs with
``AHEAD_MIN_EVENTS = 0``). The result must always be exactly the awards of one clean
run."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import select

from rewards import runs
from rewards.db.run_tables import AggregateLink, EvaluationRun, RunPartition
from rewards.db.tables import Award, Event, WalletTransaction
from rewards.runs import aggregates, ahead
from rewards.runs.writing import Worker
from tests.conftest import BOTH
from tests.integration.test_runs import RUN_RULESETS, T0, World


@pytest.fixture
def rulesets_dir() -> Path:
    return RUN_RULESETS


@pytest.fixture(autouse=True, params=["by contact", "in time order"])
def scan(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of reading a period's purchases (aggregates.reads_in_time_order)."""
    by_contact = request.param == "by contact"
    monkeypatch.setattr(aggregates, "TIME_SCAN_CONTACTS", 10**9 if by_contact else 0)
    monkeypatch.setattr(aggregates, "TIME_SCAN_SHARE", 0.0)
    return str(request.param)


@pytest.fixture
def world(app: Litestar) -> Iterator[World]:
    with TestClient(app):
        yield World(app)


def _seed(world: World, people: int = 8) -> None:
    """_seed_mixed's kind of data (see MIXED_AWARDS for what one run awards)."""
    card = {"identifier": "4917000011112222"}
    for i in range(people):
        person = world.contact()
        world.event(
            "achievement", person, classification="5-star-service", external_reference=f"a{i}"
        )
        for k in range(2):
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
            world.purchase(
                person,
                T0 + timedelta(days=day, hours=i),
                "number-1",
                external_reference=f"p{i}-{day}",
            )
        for day in range(4):
            world.purchase(
                person,
                T0 + timedelta(days=7 * day),
                "amount-1",
                [("ITEM", "1", "60.00")],
                external_reference=f"m{i}-{day}",
            )


def _expected(people: int) -> Counter[tuple[str, str, str, int]]:
    return Counter(
        award
        for i in range(people)
        for award in (
            ("five-star-service", f"a{i}", "contact", 500),
            ("electron-top-up", f"t{i}-0", "contact", 1000),
            ("week-visits", f"p{i}-3", "contact", 500),
            ("month-spend", f"m{i}-3", "contact", 480),
        )
    )


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_two_workers_share_one_run_and_award_exactly_once(world: World) -> None:
    _seed(world, people=5)
    started = runs.start_run(world.database, world.runtime, partitions=4, source="test")
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def work(name: str) -> None:
        try:
            barrier.wait()
            runs.execute_run(world.database, world.runtime, started.id, worker=name, chunk_size=3)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with world.database.session(write=False) as session:
        done = runs.get_run(session, started.id)
        partitions = session.scalars(
            select(RunPartition).where(RunPartition.run_id == started.id)
        ).all()
    assert done.status == "finished" and done.events_evaluated == 5 * 11
    assert sorted(p.state for p in partitions) == ["done"] * 4
    assert sum(p.events_evaluated for p in partitions) == 5 * 11
    assert world.awards() == _expected(5)  # exactly what one clean run awards


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_runs_started_at_once_one_runs_the_others_are_refused(world: World) -> None:
    _seed(world, people=2)
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait()
        try:
            run = runs.run_evaluation(world.database, world.runtime, source="test")
            outcomes.append(run.status)
        except runs.RunInProgress:
            outcomes.append("refused")

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # Never two at once; whichever ran, every award exists exactly once.
    assert "finished" in outcomes and len(outcomes) == 4
    assert set(outcomes) <= {"finished", "refused"}
    assert world.awards() == _expected(2)
    again = world.run()
    assert again.awards == 0


@pytest.fixture
def read_ahead(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """``True``: every run reads and decides in the read-ahead process."""
    if request.param:
        monkeypatch.setattr(ahead, "AHEAD_MIN_EVENTS", 0)
    return bool(request.param)


@pytest.mark.parametrize("read_ahead", [True], indirect=True)
@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_a_run_reading_ahead_in_a_second_process_awards_exactly_once(
    world: World, read_ahead: bool
) -> None:
    _seed(world, people=5)
    timings: dict[str, float] = {}
    done = world.run(chunk_size=3, contacts_per_chunk=2, hooks=runs.RunHooks(timings=timings))
    assert done.status == "finished" and done.events_evaluated == 5 * 11
    assert world.awards() == _expected(5)
    # Chunks of both phases went through the process (each step is timed where it ran).
    assert "waiting for decisions" in timings and "waiting for plans" in timings
    assert world.run().awards == 0


@pytest.mark.parametrize("read_ahead", [True], indirect=True)
@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_chunks_decided_ahead_are_written_together_except_across_windows(
    world: World, read_ahead: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks decided before the worker gets to them go into one write transaction
    (``writing.WRITE_CHUNKS``), except chunks with max_awards windows (the electron
    top-up, once per 365 days): the awards are exactly one clean run's."""
    monkeypatch.setattr(ahead, "IN_FLIGHT", 8)
    _seed(world, people=5)
    written: list[int] = []

    def slow_writes(done: runs.ChunkDone) -> None:
        if done.phase == "events":
            time.sleep(0.2)  # meanwhile the read-ahead process decides the next chunks

    hooks = runs.RunHooks(
        before_commit=slow_writes,
        progress=lambda done: written.append(done.events) if done.phase == "events" else None,
    )
    done = world.run(chunk_size=3, hooks=hooks)
    assert done.status == "finished" and done.events_evaluated == 5 * 11
    assert max(written) > 3 and sum(written) == 5 * 11  # some transactions held chunks
    assert world.awards() == _expected(5)
    assert world.run().awards == 0


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_a_plan_made_before_a_cancellation_is_made_again(world: World) -> None:
    """An aggregate chunk planned outside the write transaction (as the read-ahead
    process does) is written only if no cancellation touched its periods since: here a
    purchase is cancelled in between, the month falls below the offer's range, and the
    chunk is planned again (no award) instead of written as planned."""
    person = world.contact()
    purchases = [
        world.purchase(
            person,
            T0 + timedelta(days=7 * day),
            "amount-1",
            [("ITEM", "1", "60.00")],
            external_reference=f"m{day}",
        )
        for day in range(4)
    ]
    started = runs.start_run(world.database, world.runtime, source="test")
    with world.database.session(write=False) as session:
        run = session.get(EvaluationRun, started.id)
    assert run is not None
    worker = Worker(world.database, world.runtime, run, "w", 100, 100, runs.RunHooks())
    try:
        worker._event_phase(0)
        with world.database.session(write=False) as session:
            ((period, key),) = [
                pair for pair in worker.reader.aggregate_keys(session, 0) if pair[0] == "month"
            ]
            piece = worker.reader.next_slice(session, 0, period, key, "", 100)
        assert piece is not None and piece.last == person
        plan = worker.reader.read_plan(0, piece)
        assert [a.decision.offer_id for a in plan.awards] == ["month-spend"]  # 240.00
        world.cancel(purchases[0].id)  # 180.00 left: below the range's 200
        worker._write_plan(0, plan)
    finally:
        worker.close()
    assert world.standing("month-spend") == []
    with world.database.session(write=False) as session:
        links = session.scalars(select(AggregateLink.event_number)).all()
    assert links == []


@pytest.mark.parametrize("read_ahead", [False, True], indirect=True)
@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_intake_and_cancellations_during_a_run(world: World, read_ahead: bool) -> None:
    """Events recorded and purchases cancelled while a run writes its chunks: nothing is
    awarded twice, no cancelled event keeps an award, and a second run completes it."""
    _seed(world, people=3)
    person = world.contact()
    with world.database.session(write=False) as session:
        victims = session.scalars(
            select(Event.id).where(Event.type == "purchase").order_by(Event.number).limit(6)
        ).all()
    activity = threading.Event()

    def meanwhile(done: runs.ChunkDone) -> None:
        if activity.is_set():
            return
        activity.set()

        def work() -> None:
            for i in range(4):
                world.event(
                    "achievement",
                    person,
                    classification="5-star-service",
                    external_reference=f"late{i}",
                )
            for event_id in victims:
                world.cancel(event_id)

        thread = threading.Thread(target=work)
        thread.start()
        thread.join(0.05)  # let it race the rest of the run
        meanwhile.thread = thread  # type: ignore[attr-defined]

    first = world.run(chunk_size=4, contacts_per_chunk=1, hooks=runs.RunHooks(progress=meanwhile))
    meanwhile.thread.join(60)  # type: ignore[attr-defined]
    assert first.status == "finished"
    world.run()

    assert all(n == 1 for n in world.awards().values())
    reversed_ids = select(WalletTransaction.reverses_id).where(
        WalletTransaction.reverses_id.is_not(None)  # type: ignore[union-attr]
    )
    standing = Award.ledger_entry_id.not_in(reversed_ids)  # type: ignore[attr-defined]
    with world.database.session(write=False) as session:
        cancelled = set(session.scalars(select(Event.id).where(Event.state == "cancelled")))
        carriers = set(session.scalars(select(Award.event_id).where(standing)))
        members = set(
            session.scalars(
                select(Event.id)
                .join(AggregateLink, AggregateLink.event_number == Event.number)
                .join(Award, Award.id == AggregateLink.award_id)
                .where(standing)
            )
        )
        late = session.scalars(
            select(Award.offer_id)
            .join(Event, Event.id == Award.event_id)
            .where(Event.external_reference.like("late%"))  # type: ignore[union-attr]
        ).all()
    assert cancelled == set(victims)
    assert not cancelled & carriers  # no cancelled event keeps an award
    assert not cancelled & members  # nor counts in a standing aggregate award
    assert late == ["five-star-service"] * 4


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_a_run_backs_off_from_locks_held_by_a_request(world: World) -> None:
    """A request holding a contact's row (PostgreSQL) or the write lock (SQLite) for a
    while: the run's chunk waits or retries, then completes; nothing is lost."""
    from rewards.db.tables import Contact

    person = world.contact()
    feedback = world.event("achievement", person, classification="5-star-service")
    holder = world.database.session(write=True)
    holder.execute(select(Contact.id).where(Contact.id == person).with_for_update())
    holder.execute(select(Contact.id).limit(1))  # SQLite: BEGIN IMMEDIATE is now held
    outcome: list[runs.EvaluationRunOut] = []
    thread = threading.Thread(target=lambda: outcome.append(world.run()))
    thread.start()
    thread.join(0.6)
    assert thread.is_alive()  # held up by the request
    holder.commit()
    holder.close()
    thread.join(30)
    assert outcome and outcome[0].status == "finished"
    assert world.standing() == [("five-star-service", feedback.external_reference, 500)]
