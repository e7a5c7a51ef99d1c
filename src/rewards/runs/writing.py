"""The worker: writes each decided chunk in one transaction (awards, ledger, marks,
pending periods, links), re-checking what the decisions depended on."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, CursorResult, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col

from rewards.db.bulk import BulkInsert
from rewards.db.database import Database, committing
from rewards.db.ids import TimeOrderedIds
from rewards.db.run_tables import (
    AggregateAward,
    AggregateLink,
    EvaluatedEvent,
    EvaluationRun,
    RunOfferTotal,
    RunPartition,
)
from rewards.db.tables import Contact, Event
from rewards.db.types import table_of
from rewards.domain.money import to_cents
from rewards.money import budgets
from rewards.money.awards import BatchAward, BulkAwards
from rewards.runs import aggregates
from rewards.runs.ahead import (
    AheadFailed,
    AheadProcess,
    SharedChunks,
    ahead_spec,
    reads_ahead,
)
from rewards.runs.common import (
    CACHE_KIB,
    ChunkDone,
    RunAborted,
    RunHooks,
    RunInterrupted,
    Stale,
)
from rewards.runs.deciding import Decided, Mark, NewAward, Plan, Reader, Timer
from rewards.runtime.context import Runtime

log = logging.getLogger("rewards.runs")

_E = table_of(Event).c

WAL_PAGES = 250_000  # SQLite: the run's commits checkpoint only a WAL this big (~1 GB)

WAL_LIMIT = 256 * 2**20  # SQLite: the WAL file is cut back to this size when it restarts

Periods = dict[tuple[str, int], set[str]]  # (period kind, key) -> contacts

_RETRIES = 12
_LOCK_REFUSED = {"55P03", "40P01"}  # PostgreSQL: lock timeout, deadlock
LOCK_TIMEOUT_MS = 200  # PostgreSQL: a run waits at most this long for a lock, then retries


_AGGREGATE_COLUMNS = (
    "award_id", "run_id", "offer_id", "contact_id", "period", "period_key",
    "total_amount_cents", "event_count", "quantity_milli", "reversed_at",
    "reversed_by_event_id", "created_at",
)  # fmt: skip
_MARK_COLUMNS = (
    "event_number", "run_id", "contact_id", "local_day", "local_week", "weekday", "minute",
)  # fmt: skip
_LINK_COLUMNS = ("event_number", "offer_id", "award_id")


class _Inserts:
    """The run's bulk inserts, built once per worker."""

    def __init__(self, dialect: Any) -> None:
        self.aggregates = BulkInsert(dialect, table_of(AggregateAward), _AGGREGATE_COLUMNS)
        self.marks = BulkInsert(dialect, table_of(EvaluatedEvent), _MARK_COLUMNS)
        self.links = BulkInsert(dialect, table_of(AggregateLink), _LINK_COLUMNS)


# Per-event phase: decided chunks that are ready one after the other are written in one
# transaction, up to this many (fewer commits: the pages a commit writes are shared by
# more awards; the write lock is held longer, ~0.1 s per chunk on the 1M bench).
WRITE_CHUNKS = 3

CHECKPOINT_EVERY = 1.0  # seconds between the checkpointing thread's checkpoints
# WAL pages (~160 MB) past which the checkpointing thread waits for the readers to move
# on and has the WAL start again (RESTART), instead of letting it grow.
RESTART_PAGES = 40_000


class _Checkpoints:
    """SQLite: a thread copying the WAL into the database file (passive checkpoints, on a
    connection of its own) while the worker writes. The copy and its fsync run in SQLite
    without the GIL, beside the worker instead of inside its commits.

    It checkpoints right after each commit (``committed``), while the worker builds its
    next chunk: when that chunk commits, the WAL is then fully copied and SQLite starts
    it again from the beginning, over file pages it already has. A WAL that only grows
    (a checkpoint now and then, never complete when the next commit comes) costs the
    worker a new file block, zeroed by the file system, for every page it commits: about
    a tenth of its time. The WAL cannot start again while a reader (the read-ahead
    process, requests) still reads an older snapshot from it; measured on the 1M bench,
    it then grew to 900 MB between restarts. Past ``RESTART_PAGES`` the thread
    therefore runs a RESTART checkpoint: it waits for those readers (a read of a chunk,
    well under a second) and holds off writers meanwhile, so the worker's next chunk
    waits that long, and the WAL starts again. Only in the per-event phase
    (``restarts``): in the aggregate phase the read-ahead process reads one snapshot for
    a whole plan, too long for the worker to wait."""

    def __init__(self, database: Database) -> None:
        self.connection = database.write_engine.connect()
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.restarts = True
        self.thread = threading.Thread(
            target=self._run, name="rewards-run-checkpoints", daemon=True
        )
        self.thread.start()

    def _run(self) -> None:
        driver = self.connection.connection.dbapi_connection
        assert driver is not None
        while not self.stopping.is_set():
            self.wake.wait(CHECKPOINT_EVERY)
            self.wake.clear()
            if self.stopping.is_set():
                return
            try:
                _, pages, _ = driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if self.restarts and pages > RESTART_PAGES:
                    driver.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            except Exception:  # only an optimisation: the commits checkpoint anyway
                log.debug("checkpoint failed", exc_info=True)

    def committed(self) -> None:
        self.wake.set()

    def close(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.thread.join()
        self.connection.close()


# A slice of the aggregate phase (one read of its period's purchases) covers up to this
# many chunks of contacts, each written in its own transaction.
PLAN_CHUNKS = 4


class _Slices:
    """The aggregate phase's slices in order: the closed pending (period kind, key) pairs
    (``keys``, in period order) and, within each, the contacts in id order. A frontier
    is (index in ``keys``, the last contact of the previous slice); ``resume`` is where
    the worker goes on after the last slice it wrote."""

    def __init__(self, reader: Reader, partition: int, size: int) -> None:
        self.reader = reader
        self.partition = partition
        self.size = size
        self.keys: list[tuple[str, int]] = []
        self.resume: tuple[int, str] = (0, "")

    def next(self, frontier: tuple[int, str]) -> tuple[aggregates.Slice, tuple[int, str]] | None:
        """The slice after ``frontier`` and the frontier after it (None: none is left)."""
        index, after = frontier
        with self.reader.database.session(write=False) as session:
            while index < len(self.keys):
                period, key = self.keys[index]
                piece = self.reader.next_slice(
                    session, self.partition, period, key, after, self.size
                )
                if piece is not None:
                    return piece, (index, piece.last)
                index, after = index + 1, ""
        return None


class Worker:
    """Processes the partitions one worker claims, with one ruleset version."""

    def __init__(
        self,
        database: Database,
        runtime: Runtime,
        run: EvaluationRun,
        name: str,
        chunk_size: int,
        contacts_per_chunk: int,
        hooks: RunHooks,
    ) -> None:
        self.database = database
        self.runtime = runtime
        self.run = run
        self.name = name
        self.chunk_size = chunk_size
        self.contacts_per_chunk = contacts_per_chunk
        self.hooks = hooks
        self.evaluator = runtime.evaluator
        rulesets = self.evaluator.rulesets
        self.rulesets = rulesets
        self.reader = Reader(
            database, self.evaluator, run, chunk_size, contacts_per_chunk, hooks.timings
        )
        self.zone = rulesets.time_zone
        self.periods = aggregates.periods_in_use(rulesets)
        self.aggregate_offers = aggregates.aggregate_offers(rulesets)
        self.postgres = database.write_engine.dialect.name == "postgresql"
        # Statements built once per worker (building one costs more than running it).
        self.inserts = _Inserts(database.write_engine.dialect)
        self.awards = BulkAwards(database.write_engine.dialect)
        self.chunks = 0
        # Increasing (the indexes on award ids append); random bits from a generator
        # seeded by the system's (a system call per id cost the run seconds).
        self.award_ids = TimeOrderedIds(random=random.Random(os.urandom(16)).getrandbits)
        self.connection: Connection | None = None  # see _connection
        self.restore: list[tuple[str, int]] = []
        self.checkpoints: _Checkpoints | None = None
        # (period kind, key) -> contacts whose pending row the worker wrote (see
        # _pending_committed), and those of the chunk being written.
        self.pending_written: Periods = {}
        self.pending_chunk: Periods = {}
        self.ahead: AheadProcess | None = None  # see _event_phase
        self.ahead_failed = False
        # The end of the last chunk written from the read-ahead process: where reading in
        # the worker goes on if that process fails.
        self._resume_after: tuple[datetime, int] | None = None

    def _time(self, name: str) -> Timer:
        return Timer(self.hooks.timings, name)

    def _check_stop(self) -> None:
        if self.hooks.stop is not None and self.hooks.stop.is_set():
            raise RunInterrupted

    # -- writing --

    def _begin_writing(self, session: Session) -> None:
        """When a chunk starts writing (so SQLite's write lock is not taken earlier).
        PostgreSQL: the run's lock waits are bounded, so in a lock-order conflict with a
        request (intake locks wallets and contacts in either order) the run backs off and
        retries, never the request."""
        if not self.postgres:
            session.connection()  # BEGIN IMMEDIATE: the write lock from here on
        else:  # never the one holding up a request: give up long before deadlock detection
            session.connection().exec_driver_sql(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")

    def _lock_contacts(self, session: Session, contact_ids: Iterable[str]) -> None:
        """PostgreSQL: the contacts' rows, in id order (evaluation.awards_in_window and
        on_event_cancelled take the same lock). SQLite: the write transaction is exclusive."""
        if not self.postgres:
            return
        ids = sorted(set(contact_ids))
        for start in range(0, len(ids), 1000):
            session.execute(
                select(col(Contact.id))
                .where(col(Contact.id).in_(ids[start : start + 1000]))
                .order_by(col(Contact.id))
                .with_for_update()
            )

    def _persist(self, session: Session, awards: list[NewAward]) -> list[tuple[NewAward, str, int]]:
        """Awards with their ledger credits, in bulk (``money.awards.BulkAwards``), plus
        the aggregate award rows. Returns (award, award id, cents) each. An offer's budget
        is charged first (``money.budgets``): its award may be cut, or dropped."""
        paid = []
        for award in awards:
            decision = budgets.charge(session, award.decision)
            if decision is None:
                continue
            if decision is not award.decision:
                award = dataclasses.replace(award, decision=decision)
            paid.append((award, to_cents(decision.amount)))
        paid = [(a, cents) for a, cents in paid if cents > 0]
        if not paid:
            return []
        now = self.runtime.now()
        run_id = self.run.id
        batch = []
        aggregate_rows = []
        written = []
        for award, cents in paid:
            award_id = self.award_ids.next()
            event = award.event
            batch.append(
                BatchAward(award_id, event.id, event.performed_on, award.decision,
                           award.beneficiary_id, cents)
            )  # fmt: skip
            group = award.group
            if group is not None:
                aggregate_rows.append(
                    (award_id, run_id, award.decision.offer_id, group.contact_id, award.period,
                     group.key, group.total_cents, group.count, group.quantity_milli, None,
                     None, now)
                )  # fmt: skip
            written.append((award, award_id, cents))
        self.awards.write(session, batch, now)
        self.inserts.aggregates.run(session, aggregate_rows)
        return written

    def _record(
        self,
        session: Session,
        partition: int,
        phase: str,
        events: int,
        written: list[tuple[NewAward, str, int]],
        groups: int = 0,
    ) -> ChunkDone:
        """The chunk's progress counters, in its transaction (the run row last: workers
        queue on it only at the end); RunAborted when the run is no longer running."""
        now = self.runtime.now()
        self.chunks += 1
        cents = sum(c for *_, c in written)
        per_offer: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for award, _, c in written:
            per_offer[award.decision.offer_id][0] += 1
            per_offer[award.decision.offer_id][1] += c
        if per_offer:
            table = table_of(RunOfferTotal)
            statement = (postgresql if self.postgres else sqlite).insert(table)
            statement = statement.on_conflict_do_update(
                index_elements=[table.c.run_id, table.c.offer_id],
                set_={
                    "awards": table.c.awards + statement.excluded.awards,
                    "total_cents": table.c.total_cents + statement.excluded.total_cents,
                },
            )
            session.execute(
                statement,
                [
                    {"run_id": self.run.id, "offer_id": o, "awards": n, "total_cents": c}
                    for o, (n, c) in sorted(per_offer.items())
                ],
            )
        partition_table = table_of(RunPartition)
        partitions = partition_table.c
        session.execute(
            update(partition_table)
            .where(partitions.run_id == self.run.id, partitions.partition == partition)
            .values(heartbeat_at=now, events_evaluated=partitions.events_evaluated + events)
        )
        run_table = table_of(EvaluationRun)
        run = run_table.c
        # An UPDATE's result is a CursorResult (Session.execute is typed for any statement).
        result = session.execute(
            update(run_table)
            .where(run.id == self.run.id, run.status == "running")
            .values(
                heartbeat_at=now,
                events_evaluated=run.events_evaluated + events,
                aggregate_groups=run.aggregate_groups + groups,
                awards=run.awards + len(written),
                total_awarded_cents=run.total_awarded_cents + cents,
                chunks=run.chunks + 1,
            )
        )
        changed = cast("CursorResult[Any]", result).rowcount
        if changed != 1:
            raise RunAborted(f"run {self.run.id} is no longer running")
        done = ChunkDone(
            run_id=self.run.id,
            partition=partition,
            phase=phase,
            chunk=self.chunks,
            events=events,
            awards=len(written),
            awarded_cents=cents,
        )
        if self.hooks.before_commit is not None:
            self.hooks.before_commit(done)
        return done

    def _pending_committed(self) -> None:
        """The chunk's pending periods are in the database: later chunks of the event
        phase need not write them again (a run's purchases come in time order, so most
        of a chunk's periods were written by the chunks before it). Nothing deletes them
        before the aggregate phase, which starts by forgetting them. Periods that start
        before the chunk's earliest one of their kind are forgotten: in time order they
        do not come again (a late purchase into one writes its row again, which is
        harmless), so only the current periods' contacts are held."""
        written, chunk = self.pending_written, self.pending_chunk
        for pair, contacts in chunk.items():
            written.setdefault(pair, set()).update(contacts)
        earliest: dict[str, int] = {}
        for period, key in chunk:
            earliest[period] = min(key, earliest.get(period, key))
        for period, key in list(written):
            if key < earliest.get(period, key):
                del written[(period, key)]
        self.pending_chunk = {}

    def _connection(self) -> Connection:
        """The worker's own write connection, held until ``close``. SQLite: its page cache
        is ``CACHE_KIB`` instead of ~2 MB (a run's inserts land all over big indexes; re-reading
        their pages was a third of a chunk's writing), its commits leave the WAL to
        a checkpointing thread (``_Checkpoints``) until it holds ``WAL_PAGES`` pages
        (checkpointing in the commits was the biggest cost of a chunk), and it does not
        look up the parents of the rows it inserts (see below); the settings are put
        back before the connection returns to the pool, so requests' connections keep
        the defaults."""
        if self.connection is None:
            connection = self.database.write_engine.connect()
            if not self.postgres:
                driver = connection.connection.dbapi_connection
                assert driver is not None
                self.restore = [
                    (name, driver.execute(f"PRAGMA {name}").fetchone()[0])
                    for name in (
                        "cache_size",
                        "wal_autocheckpoint",
                        "journal_size_limit",
                        "foreign_keys",
                    )
                ]
                driver.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
                driver.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
                driver.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
                # Every row a run writes references rows nothing ever deletes (events,
                # contacts, wallets) or rows of its own transaction (awards): the
                # per-row lookups of foreign key enforcement (a random page of the
                # events' id index per award) cost about a tenth of a run's writing and
                # can find nothing. Tests check the whole database with
                # ``PRAGMA foreign_key_check`` after runs; PostgreSQL enforces them.
                driver.execute("PRAGMA foreign_keys=OFF")
                self.checkpoints = _Checkpoints(self.database)
            self.connection = connection
        return self.connection

    def close(self) -> None:
        """Stop the read-ahead process; return the write connection to the pool, with its
        settings as they were."""
        ahead, self.ahead = self.ahead, None
        if ahead is not None:
            ahead.close()
        checkpoints, self.checkpoints = self.checkpoints, None
        if checkpoints is not None:
            checkpoints.close()
        connection, self.connection = self.connection, None
        if connection is None:
            return
        try:
            if connection.in_transaction():
                connection.rollback()
            driver = connection.connection.dbapi_connection
            if driver is not None and self.restore:
                # The WAL the run left behind is copied into the database now, by the run,
                # not by the next request to commit (its autocheckpoint would).
                driver.execute("PRAGMA wal_checkpoint(PASSIVE)")
                for name, value in self.restore:
                    driver.execute(f"PRAGMA {name}={int(value)}")
        finally:
            connection.close()

    @contextmanager
    def _write_session(self) -> Iterator[Session]:
        """One write transaction on the worker's connection (``Database.transaction``'s
        commit-or-roll-back)."""
        with committing(Session(bind=self._connection(), expire_on_commit=False)) as session:
            yield session

    def _transaction(self, work: Callable[[Session], ChunkDone | None]) -> ChunkDone | None:
        """``work`` in a write transaction; again (after a short pause) when what it read
        changed (``Stale``) or PostgreSQL refused a lock within the run's lock timeout."""
        for attempt in range(_RETRIES):
            try:
                self.pending_chunk = {}
                with self._write_session() as session:
                    done = work(session)
                    committing = time.perf_counter()
                if self.checkpoints is not None:
                    self.checkpoints.committed()
                self._pending_committed()
                if self.hooks.timings is not None:
                    self.hooks.timings["commit"] = (
                        self.hooks.timings.get("commit", 0.0) + time.perf_counter() - committing
                    )
            except Stale:
                log.info(
                    "evaluation run %s: a chunk changed under us; reading it again", self.run.id
                )
                continue
            except OperationalError as error:
                code = getattr(error.orig, "sqlstate", None)
                if code not in _LOCK_REFUSED or attempt == _RETRIES - 1:
                    raise
                log.info("evaluation run %s: locks busy (%s); chunk again", self.run.id, code)
                time.sleep(min(0.05 * 2**attempt, 2.0))
                continue
            if done is not None and self.hooks.progress is not None:
                self.hooks.progress(done)
            return done
        raise RuntimeError("a chunk kept changing under the run; giving up")

    # -- a partition --

    def process(self, partition: int) -> None:
        self.pending_written = {}
        if self.checkpoints is not None:
            self.checkpoints.restarts = True
        self._event_phase(partition)
        self.pending_written = {}  # the aggregate phase deletes pending periods
        if self.checkpoints is not None:
            self.checkpoints.restarts = False
        if self.aggregate_offers:
            self._refresh_statistics()
        if self.periods:
            self._aggregate_phase(partition)
        table = table_of(RunPartition)
        with self.database.transaction() as session:
            session.execute(
                update(table)
                .where(table.c.run_id == self.run.id, table.c.partition == partition)
                .values(state="done", heartbeat_at=self.runtime.now())
            )

    # -- per-event phase --

    def _event_phase(self, partition: int) -> None:
        """Chunk after chunk in (performed_on, number) order, each read and decided
        outside the write transaction, then written in one (``_write_decided``); a big
        run's are read and decided in the read-ahead process meanwhile."""
        self._resume_after = None
        ahead = self._ahead_process()
        if ahead is not None:
            try:
                self._events_read_ahead(partition, ahead)
                return
            except AheadFailed as error:
                log.warning("evaluation run %s: %s; reading in the worker", self.run.id, error)
                self._stop_ahead()
        after = self._resume_after
        while True:
            self._check_stop()
            decided = self.reader.read_events(partition, after)
            if decided is None:
                return
            written = self._write_decided(partition, decided)
            if written is None:
                return
            after = written.cursor

    def _events_read_ahead(self, partition: int, ahead: AheadProcess) -> None:
        reader = self.reader
        shared = SharedChunks(
            ahead,
            "events",
            partition,
            None,
            lambda after: reader.event_bound(partition, after),
            lambda job: reader.read_events(partition, job.after, job.until),
        )
        while True:
            self._check_stop()
            with self._time("waiting for decisions"):
                job = shared.next()
            if job is None:
                return
            decided = job.result
            shared.pop()
            if decided is None:  # its events were evaluated meanwhile
                continue
            # Chunks decided already and next in line go into the same transaction, unless
            # max_awards windows are involved: a chunk's window counts must see the
            # awards of the chunks before it (written first, or it is read again).
            for following in shared.decided_next()[: WRITE_CHUNKS - 1]:
                later = following.result
                if later is None or later.after != decided.cursor:
                    break
                if decided.windowed or later.windowed:
                    break
                decided = decided.joined(later)
                shared.pop()
            written = self._write_decided(partition, decided)
            if written is None:
                return
            if written.cursor != decided.cursor:  # read again (stale), ended elsewhere
                shared.restart(written.cursor)
            self._resume_after = written.cursor

    def _ahead_process(self) -> AheadProcess | None:
        if self.ahead is None and not self.ahead_failed and reads_ahead(self.database, self.run):
            spec = ahead_spec(
                self.database, self.rulesets, self.run, self.chunk_size, self.contacts_per_chunk
            )
            try:
                self.ahead = AheadProcess(spec, self.hooks.timings)
            except Exception as error:  # cannot start one here: read in the worker
                log.warning("evaluation run %s: no read-ahead process (%s)", self.run.id, error)
                self.ahead_failed = True
        return self.ahead

    def _stop_ahead(self) -> None:
        ahead, self.ahead = self.ahead, None
        if ahead is not None:
            self.ahead_failed = True
            ahead.close()

    def _write_decided(self, partition: int, decided: Decided) -> Decided | None:
        """Write a decided chunk in one transaction; when what it was decided on moved
        (``Stale``), read and decide it again here and write that. Returns the chunk
        written (None: nothing was left to read)."""
        ready = [decided]
        written: list[Decided] = []

        def work(session: Session) -> ChunkDone | None:
            chunk = ready.pop() if ready else self.reader.read_events(partition, decided.after)
            if chunk is None:
                return None
            written[:] = [chunk]
            return self._write_events(session, chunk, partition)

        return written[0] if self._transaction(work) is not None else None

    def _write_events(self, session: Session, chunk: Decided, partition: int) -> ChunkDone:
        """In the write transaction (``session``): lock, re-check what the decisions
        depend on (``Stale`` when it moved), mark the events and write the awards."""
        marks, windowed, awards = chunk.marks, chunk.windowed, chunk.awards
        windows = self.reader.event_windows
        self._begin_writing(session)
        with self._time("checks"):
            budgets.lock(session, [a.decision for a in awards])  # before contacts
            self._lock_contacts(
                session,
                [a.event.contact_id for a in awards] + [i.event.contact_id for i in windowed],
            )
            if awards:
                numbers = sorted({a.event.number for a in awards})
                posted = set(
                    session.scalars(
                        select(_E.number).where(_E.number.in_(numbers), _E.state == "posted")
                    ).all()
                )
                awards = [a for a in awards if a.event.number in posted]
            if self.reader.windows_moved(session, windowed, windows):
                raise Stale
        with self._time("mark"):
            pending = self._mark(session, marks)
        with self._time("persist"):
            written = self._persist(session, awards)
        done = self._record(session, partition, "events", len(marks), written)
        self.pending_chunk = pending  # in pending_written once committed
        return done

    def _mark(self, session: Session, marks: list[Mark]) -> Periods:
        """The chunk's events are evaluated; their purchases' periods become pending.
        Returns the pending periods written (see ``pending_written``)."""
        run_id = self.run.id
        rows = [
            (n, run_id, contact, day, week, wd, minute)
            for n, contact, _, day, week, wd, minute in marks
        ]
        bought = [
            (contact, day, week)
            for _, contact, kind, day, week, _, _ in marks
            if kind == "purchase"
        ]
        self.inserts.marks.run(session, rows)
        empty: set[str] = set()
        new = {
            pair: contacts - self.pending_written.get(pair, empty)
            for pair, contacts in aggregates.periods_of(self.periods, bought).items()
        }
        aggregates.mark_pending(
            session,
            {
                (contact, period, key)
                for (period, key), contacts in new.items()
                for contact in contacts
            },
        )
        return new

    # -- aggregate phase --

    def _refresh_statistics(self) -> None:
        """PostgreSQL: ``evaluated_events`` just grew by the whole per-event phase; without
        fresh statistics the planner scans all of it for every chunk of contacts."""
        if not self.postgres:
            return
        try:
            with self.database.transaction() as session:
                session.connection().exec_driver_sql("ANALYZE evaluated_events")
        except OperationalError:  # not the table's owner: the plans are only slower
            log.info("evaluation run %s: could not ANALYZE evaluated_events", self.run.id)

    def _aggregate_phase(self, partition: int) -> None:
        """Closed period after closed period (in the order they start), in slices of up to
        ``PLAN_CHUNKS`` chunks of contacts (each slice reads its period's purchases once),
        each chunk written in one write transaction; a big run's slices are planned in
        the read-ahead process meanwhile."""
        slices = _Slices(self.reader, partition, PLAN_CHUNKS * self.contacts_per_chunk)
        with self.database.session(write=False) as session:
            slices.keys = self.reader.aggregate_keys(session, partition)
        ahead = self._ahead_process()
        if ahead is not None:
            try:
                self._aggregates_read_ahead(partition, ahead, slices)
                return
            except AheadFailed as error:
                log.warning("evaluation run %s: %s; reading in the worker", self.run.id, error)
                self._stop_ahead()
        frontier = slices.resume
        while (found := slices.next(frontier)) is not None:
            piece, frontier = found
            self._check_stop()
            self._write_plan(partition, self.reader.read_plan(partition, piece))
            slices.resume = frontier

    def _aggregates_read_ahead(self, partition: int, ahead: AheadProcess, slices: _Slices) -> None:
        reader = self.reader
        shared = SharedChunks(
            ahead,
            "aggregates",
            partition,
            slices.resume,
            slices.next,
            lambda job: reader.read_plan(partition, job.until),
        )
        while True:
            self._check_stop()
            with self._time("waiting for plans"):
                job = shared.next()
            if job is None:
                return
            shared.pop()
            self._write_plan(partition, job.result)
            slices.resume = job.frontier

    def _write_plan(self, partition: int, plan: Plan) -> None:
        """A slice's plan, in parts of at most ``contacts_per_chunk`` contacts, each in one
        write transaction (``_write_part``)."""
        for part in plan.parts(self.contacts_per_chunk):
            self._check_stop()
            self._write_part(partition, part)

    def _write_part(self, partition: int, plan: Plan) -> None:
        """One part of a plan in one write transaction (its contacts' rows locked on
        PostgreSQL: cancellations of their purchases wait): written as planned if its
        contacts' pending rows (how many, and their counts of changes: only runs delete
        them, so the two sums tell) and the max_awards counts it was decided on are what
        they were (a cancellation touching them counts a change), else planned again
        here."""
        reader = self.reader
        piece = plan.piece
        _, mine = reader.aggregate_scope(partition)

        def work(session: Session) -> ChunkDone | None:
            self._begin_writing(session)
            budgets.lock(session, [a.decision for a in plan.awards])  # before contacts
            self._lock_contacts(session, plan.pending)
            with self._time("aggregate groups"):
                summary = aggregates.pending_summary(session, piece, mine)
            planned = (len(plan.pending), sum(plan.pending.values()))
            chosen = plan
            if summary != planned or reader.windows_moved(
                session, plan.windowed, reader.aggregate_windows
            ):
                locked = set(plan.pending)
                while True:  # lock the contacts with the period pending now, read again
                    pending = aggregates.pending_of(session, piece, mine)
                    if not self.postgres or locked >= set(pending):
                        break
                    self._lock_contacts(session, set(pending) - locked)
                    locked |= set(pending)
                if not pending:
                    return None  # done meanwhile (another worker took the partition over)
                chosen = reader.plan_aggregates(session, partition, piece)
            with self._time("aggregate persist"):
                written = self._persist(session, chosen.awards)
                links = []
                for award, award_id, _ in written:
                    assert award.group is not None
                    links += aggregates.link_rows(award.decision.offer_id, award_id, award.group)
                self.inserts.links.run(session, links)
                aggregates.clear_pending(session, piece, mine)
            return self._record(session, partition, "aggregates", 0, written, groups=chosen.groups)

        self._transaction(work)
