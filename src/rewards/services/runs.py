"""Evaluation runs (issue 5): batch offers and period aggregates over the whole history.

A run evaluates every posted event with ``performed_on <= as_of`` (default and at most:
now) that no run evaluated yet, in ``performed_on`` order, in chunks:

- the per-event offers: ``evaluation: batch`` offers for every event, and every offer
  (mode ``all``) for an event that was not evaluated on intake (``evaluated`` false), with
  the same facts as immediate evaluation (``evaluation.build_facts``; contact segments
  as they are now; ``max_awards`` windows counted like ``evaluation.awards_in_window``,
  including the awards made earlier in the same chunk). A batch offer never awards an
  event that an offer of its ``exclusive_group`` already awarded;
- then, per calendar period kind in use, the period aggregates of the contacts whose
  closed periods have new purchases (:mod:`rewards.services.aggregates`): each group in
  range is decided by the engine on the aggregate fact of its latest purchase (segments,
  max_awards, the range) and awarded once; every contributing purchase gets a link.

Idempotence and crashes. Each chunk is one transaction: its ``evaluated_events`` marks,
its awards (with their ledger credits) and its progress counters commit together, so a
crash loses at most the chunk in flight, and the next run skips every marked event. The
unique (offer, event, beneficiary) of awards and the primary keys of the marks and links
turn any double evaluation into an error (the chunk rolls back), never a double award.

One run at a time. ``evaluation_runs.running_lock`` is unique and 1 while a run is
running: a second start is refused (409 ``run_in_progress``). A run whose heartbeat is
older than ``STALE_AFTER`` (its process died) is marked failed by the next start.

Scale-out. A run is split into ``partitions`` by the last hex digit of the contact id;
workers (``execute_run`` in other processes or threads) claim partitions one at a time
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite serialises writers anyway). Everything
a contact's awards depend on (windows, aggregates) stays within its partition. See
docs/scale-out.md.

Concurrency with requests. The per-event phase reads and evaluates a chunk outside the
write transaction, then in one write transaction locks the contacts it awards (PostgreSQL),
re-checks that the awarded events are still posted and that the ``max_awards`` counts did
not move (else the chunk is read again), and writes. Cancellation calls
``on_event_cancelled`` first, which takes the same contact lock, so a cancel and a run
never miss each other's writes.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

import msgspec
from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    bindparam,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session

from rewards.db.database import Database
from rewards.db.run_tables import (
    PERIOD_BITS,
    AggregateAward,
    AggregateLink,
    EvaluatedEvent,
    EvaluationRun,
    RunOfferTotal,
    RunPartition,
)
from rewards.db.tables import Award, Contact, Event, Wallet, WalletTransaction
from rewards.domain.money import from_cents, to_cents
from rewards.engine import AwardDecision, EventFacts, PeriodTotals
from rewards.engine.loader import Rulesets
from rewards.engine.model import AGGREGATE_CLASSIFICATIONS, EVENT_TYPES, Offer
from rewards.errors import refusal
from rewards.services import aggregates
from rewards.services.evaluation import NOT_EVALUATED, build_facts
from rewards.services.runtime import Runtime

log = logging.getLogger("rewards.runs")

STALE_AFTER = timedelta(minutes=2)  # no heartbeat for this long: the run's process died
CHUNK_SIZE = 2000  # events per chunk (per-event phase)
CONTACTS_PER_CHUNK = 500  # contacts per chunk (aggregate phase)
SEGMENT_CACHE = 200_000  # contacts whose segments a worker keeps
WAL_PAGES = 10_000  # SQLite: the run's connections checkpoint the WAL at this size
_HEX = "0123456789abcdef"
_RETRIES = 12
_LOCK_REFUSED = {"55P03", "40P01"}  # PostgreSQL: lock timeout, deadlock
LOCK_TIMEOUT_MS = 200  # PostgreSQL: a run waits at most this long for a lock, then retries

RunInProgress = refusal("run_in_progress", "An evaluation run is already running", 409)
RunNotFound = refusal("run_not_found", "Evaluation run not found", 404)


class RunAborted(RuntimeError):
    """The run is no longer running (failed elsewhere or taken over): stop working on it."""


class RunInterrupted(RuntimeError):
    """A stop was requested (server shutdown); the run is marked failed."""


class _Stale(Exception):
    """What the chunk was decided on changed before the write: read the chunk again."""


# ---- wire structs ---------------------------------------------------------------------


class EvaluationRunIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    as_of: datetime | None = None


class RunOfferOut(msgspec.Struct, kw_only=True):
    offer_id: str
    awards: int
    total_awarded: Decimal


class EvaluationRunOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    status: str  # running | finished | failed
    source: str
    as_of: datetime
    ruleset_version: str
    partitions: int
    started_at: datetime
    finished_at: datetime | None = None
    events_total: int
    events_evaluated: int
    aggregate_groups: int
    awards: int
    total_awarded: Decimal
    error: str | None = None
    offers: list[RunOfferOut] | None = None


def run_out(run: EvaluationRun, offers: list[RunOfferTotal] | None = None) -> EvaluationRunOut:
    return EvaluationRunOut(
        id=run.id,
        status=run.status,
        source=run.source,
        as_of=run.as_of,
        ruleset_version=run.ruleset_version,
        partitions=run.partitions,
        started_at=run.started_at,
        finished_at=run.finished_at,
        events_total=run.events_total,
        events_evaluated=run.events_evaluated,
        aggregate_groups=run.aggregate_groups,
        awards=run.awards,
        total_awarded=from_cents(run.total_awarded_cents),
        error=run.error,
        offers=None
        if offers is None
        else [
            RunOfferOut(
                offer_id=o.offer_id, awards=o.awards, total_awarded=from_cents(o.total_cents)
            )
            for o in offers
        ],
    )


def get_run(session: Session, run_id: str) -> EvaluationRunOut:
    run = session.get(EvaluationRun, run_id)
    if run is None:
        raise RunNotFound(f"No evaluation run with id {run_id!r}.")
    offers = session.scalars(
        select(RunOfferTotal).where(RunOfferTotal.run_id == run_id).order_by(RunOfferTotal.offer_id)  # type: ignore[arg-type]
    ).all()
    return run_out(run, list(offers))


# ---- hooks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkDone:
    """What one chunk did (passed to the hooks)."""

    run_id: str
    partition: int
    phase: str  # "events" or "aggregates:<period>"
    chunk: int  # chunks done by this worker, this one included
    events: int
    awards: int
    awarded_cents: int


@dataclass
class RunHooks:
    before_commit: Callable[[ChunkDone], None] | None = None  # inside the chunk's transaction
    progress: Callable[[ChunkDone], None] | None = None  # after the chunk committed
    stop: threading.Event | None = None  # set: the worker stops after its current chunk
    timings: dict[str, float] | None = None  # seconds per step, added up (benchmarks)


# ---- starting, finishing --------------------------------------------------------------


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("as_of must carry a time zone")
    return moment.astimezone(UTC)


def _pending_events_filter(as_of: datetime) -> list[ColumnElement[bool]]:
    E = Event.__table__.c  # type: ignore[attr-defined]
    M = EvaluatedEvent.__table__.c  # type: ignore[attr-defined]
    return [
        E.performed_on <= as_of,
        E.state == "posted",
        E.type.not_in(tuple(NOT_EVALUATED)),
        # OFFSET 0 keeps it a lookup per event: PostgreSQL would otherwise hash the whole
        # marks table for every chunk (their count is unknown to its statistics mid-run).
        ~exists(select(literal(1)).where(M.event_number == E.number).offset(0)),
    ]


def start_run(
    database: Database,
    runtime: Runtime,
    *,
    as_of: datetime | None = None,
    partitions: int = 1,
    source: str = "api",
) -> EvaluationRunOut:
    """Create a running run (refused with RunInProgress while another one runs)."""
    if not 1 <= partitions <= len(_HEX):
        raise ValueError(f"partitions must be 1..{len(_HEX)}")
    now = runtime.now()
    as_of = min(_aware(as_of), now) if as_of is not None else now
    version = runtime.rulesets.version
    with database.transaction() as session:
        session.execute(
            update(EvaluationRun)
            .where(
                EvaluationRun.running_lock == 1,  # type: ignore[arg-type]
                EvaluationRun.heartbeat_at < now - STALE_AFTER,  # type: ignore[arg-type,operator]
            )
            .values(
                status="failed",
                running_lock=None,
                finished_at=now,
                error=f"abandoned: no heartbeat for {int(STALE_AFTER.total_seconds())} s "
                "(its process stopped); a new run took over",
            )
        )
        run = EvaluationRun(
            id=str(uuid.uuid4()),
            status="running",
            running_lock=1,
            source=source,
            as_of=as_of,
            ruleset_version=version,
            partitions=partitions,
            started_at=now,
            heartbeat_at=now,
        )
        try:
            with session.begin_nested():
                session.add(run)
        except IntegrityError:
            running = session.scalars(
                select(EvaluationRun).where(EvaluationRun.running_lock == 1)  # type: ignore[arg-type]
            ).first()
            detail = (
                f"Evaluation run {running.id} is running since {running.started_at.isoformat()}."
                if running is not None
                else "Another evaluation run is starting."
            )
            raise RunInProgress(detail) from None
        session.add_all(RunPartition(run_id=run.id, partition=p) for p in range(partitions))
        run.events_total = int(
            session.scalar(
                select(func.count())
                .select_from(Event.__table__)  # type: ignore[attr-defined]
                .where(*_pending_events_filter(as_of))
            )
            or 0
        )
        session.flush()
        return run_out(run)


def _fail(database: Database, run_id: str, error: str, now: datetime) -> None:
    with database.transaction() as session:
        session.execute(
            update(EvaluationRun)
            .where(EvaluationRun.id == run_id, EvaluationRun.status == "running")  # type: ignore[arg-type]
            .values(status="failed", running_lock=None, finished_at=now, error=error[:1000])
        )


def _finish_if_complete(database: Database, run_id: str, now: datetime) -> None:
    P = RunPartition.__table__.c  # type: ignore[attr-defined]
    with database.transaction() as session:
        session.execute(
            update(EvaluationRun)
            .where(
                EvaluationRun.id == run_id,  # type: ignore[arg-type]
                EvaluationRun.status == "running",  # type: ignore[arg-type]
                ~exists().where(P.run_id == run_id, P.state != "done"),
            )
            .values(status="finished", running_lock=None, finished_at=now, heartbeat_at=now)
        )


def _claim(database: Database, run_id: str, worker: str, now: datetime) -> int | None:
    """A partition of the run for this worker: a pending one, or one whose worker died."""
    P = RunPartition.__table__.c  # type: ignore[attr-defined]
    with database.transaction() as session:
        status = session.scalar(select(EvaluationRun.status).where(EvaluationRun.id == run_id))  # type: ignore[arg-type]
        if status != "running":
            raise RunAborted(f"run {run_id} is {status}")
        query = (
            select(P.partition)
            .where(
                P.run_id == run_id,
                or_(
                    P.state == "pending",
                    and_(P.state == "running", P.heartbeat_at < now - STALE_AFTER),
                ),
            )
            .order_by(P.partition)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        partition = session.scalar(query)
        if partition is None:
            return None
        session.execute(
            update(RunPartition.__table__)  # type: ignore[attr-defined]
            .where(P.run_id == run_id, P.partition == partition)
            .values(state="running", worker=worker, heartbeat_at=now)
        )
        return int(partition)


def execute_run(
    database: Database,
    runtime: Runtime,
    run_id: str,
    *,
    worker: str | None = None,
    chunk_size: int = CHUNK_SIZE,
    contacts_per_chunk: int = CONTACTS_PER_CHUNK,
    hooks: RunHooks | None = None,
) -> EvaluationRunOut:
    """Work on a running run until no partition is left to claim; the worker that sees the
    last partition done marks the run finished. Any error marks the run failed."""
    hooks = hooks or RunHooks()
    with database.session(write=False) as session:
        run = session.get(EvaluationRun, run_id)
        if run is None:
            raise RunNotFound(f"No evaluation run with id {run_id!r}.")
    name = worker or f"worker-{uuid.uuid4().hex[:8]}"
    try:
        if run.status == "running":
            if runtime.rulesets.version != run.ruleset_version:
                raise RunAborted(
                    f"this worker has rulesets {runtime.rulesets.version}, the run "
                    f"{run.ruleset_version}"
                )
            engine = _Worker(database, runtime, run, name, chunk_size, contacts_per_chunk, hooks)
            while (partition := _claim(database, run_id, name, runtime.now())) is not None:
                engine.process(partition)
            _finish_if_complete(database, run_id, runtime.now())
    except RunAborted as error:
        log.warning("evaluation run %s: worker %s stopped: %s", run_id, name, error)
    except RunInterrupted:
        _fail(database, run_id, "interrupted: the process was stopping", runtime.now())
    except BaseException as error:
        log.exception("evaluation run %s failed", run_id)
        _fail(database, run_id, f"{type(error).__name__}: {error}", runtime.now())
        raise
    with database.session(write=False) as session:
        return get_run(session, run_id)


def run_evaluation(
    database: Database,
    runtime: Runtime,
    *,
    as_of: datetime | None = None,
    source: str = "cli",
    partitions: int = 1,
    chunk_size: int = CHUNK_SIZE,
    contacts_per_chunk: int = CONTACTS_PER_CHUNK,
    hooks: RunHooks | None = None,
) -> EvaluationRunOut:
    """Start a run and do all of it in this thread."""
    run = start_run(database, runtime, as_of=as_of, partitions=partitions, source=source)
    return execute_run(
        database,
        runtime,
        run.id,
        chunk_size=chunk_size,
        contacts_per_chunk=contacts_per_chunk,
        hooks=hooks,
    )


# ---- background runs (POST /v1/evaluation-runs, the schedule) -------------------------

_background: weakref.WeakKeyDictionary[Database, list[tuple[threading.Thread, threading.Event]]] = (
    weakref.WeakKeyDictionary()
)
_background_lock = threading.Lock()


def start_background_run(
    database: Database, runtime: Runtime, *, as_of: datetime | None = None, source: str = "api"
) -> EvaluationRunOut:
    """Start a run and execute it on a thread of this process; answers at once."""
    run = start_run(database, runtime, as_of=as_of, source=source)
    stop = threading.Event()

    def work() -> None:
        try:
            execute_run(database, runtime, run.id, hooks=RunHooks(stop=stop))
        except Exception:  # already logged and recorded as failed
            pass

    thread = threading.Thread(target=work, name=f"rewards-run-{run.id[:8]}", daemon=True)
    with _background_lock:
        threads = _background.setdefault(database, [])
        threads[:] = [(t, s) for t, s in threads if t.is_alive()]
        threads.append((thread, stop))
    thread.start()
    return run


def stop_background_runs(database: Database, timeout: float = 30.0) -> None:
    """Ask this process's background runs to stop after their chunk, and wait for them."""
    with _background_lock:
        threads = _background.pop(database, [])
    for _, stop in threads:
        stop.set()
    for thread, _ in threads:
        thread.join(timeout)


# ---- the worker -----------------------------------------------------------------------

_E = Event.__table__.c  # type: ignore[attr-defined]
_M = EvaluatedEvent.__table__.c  # type: ignore[attr-defined]
_W = Wallet.__table__.c  # type: ignore[attr-defined]
_EVENT_COLUMNS = (
    _E.number,
    _E.id,
    _E.type,
    _E.contact_id,
    _E.classification,
    _E.performed_on,
    _E.performed_by_unit,
    _E.evaluated,
    cast(_E.details, String),  # decoded by msgspec (3x faster than the JSON type's json)
)
_details = msgspec.json.Decoder(dict[str, Any])


class EventRecord(NamedTuple):
    """The event columns evaluation reads (``build_facts`` takes it for an ``Event``)."""

    number: int
    id: str
    type: str
    contact_id: str
    classification: str | None
    performed_on: datetime
    performed_by_unit: str | None
    evaluated: bool
    details: dict[str, Any]


def _records(session: Session, query: Any) -> list[EventRecord]:
    return [
        EventRecord(n, i, t, c, cls, p, u, bool(ev), _details.decode(d))
        for n, i, t, c, cls, p, u, ev, d in session.execute(query)
    ]


def partition_filter(column: Any, partitions: int, partition: int) -> ColumnElement[bool] | None:
    """Contacts of ``partition``: by the last character of the contact id (a hex digit of
    a UUID); anything else falls into partition 0."""
    if partitions == 1:
        return None
    last = func.substr(column, func.length(column), 1)
    mine = [d for d in _HEX if int(d, 16) % partitions == partition]
    if partition == 0:
        return last.not_in([d for d in _HEX if d not in mine])
    return last.in_(mine)


def _insert_rows(session: Session, table: Any, rows: list[dict[str, Any]]) -> None:
    """Many rows into ``table``, in the session's transaction, with the columns' own bind
    processors: SQLite's ``executemany`` straight on the driver, PostgreSQL's ``COPY``
    (SQLAlchemy's per-row parameter building costs more than the database's insert)."""
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    names = list(rows[0])
    processors = [table.c[name].type._cached_bind_processor(dialect) for name in names]
    quote = dialect.identifier_preparer.quote
    columns = ", ".join(quote(name) for name in names)
    values = (
        tuple(
            value if process is None or value is None else process(value)
            for value, process in zip(row.values(), processors, strict=True)
        )
        for row in rows
    )
    if dialect.name == "postgresql":
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY {quote(table.name)} ({columns}) FROM STDIN") as copy:
            for row in values:
                copy.write_row(row)
        return
    placeholders = ", ".join("?" for _ in names)
    connection.exec_driver_sql(
        f"INSERT INTO {quote(table.name)} ({columns}) VALUES ({placeholders})", list(values)
    )


@dataclass
class _NewAward:
    """An award decided in a chunk, not written yet."""

    event: EventRecord
    decision: AwardDecision
    group: aggregates.Group | None = None  # aggregate awards: the period group
    period: str | None = None

    @property
    def beneficiary_id(self) -> str:
        if self.decision.beneficiary == "referred":
            return str(self.event.details["referred_contact_id"])
        if self.decision.beneficiary == "referrer":
            return str(self.event.details["referrer_contact_id"])
        return self.event.contact_id


@dataclass
class _Item:
    """One engine evaluation: an event (per-event phase), or the aggregate fact of a
    period group (its latest purchase with the period totals of one offer)."""

    event: EventRecord
    mode: str
    offer: str | None = None  # aggregate items: the only offer they decide
    totals: PeriodTotals | None = None
    group: aggregates.Group | None = None
    period: str | None = None
    wave: int = 0
    db_counts: dict[str, int] = field(default_factory=dict)


Windows = dict[str, dict[str, int]]  # event type -> offer id -> window days


def _windows(rulesets: Rulesets, offers: list[Offer]) -> Windows:
    """The max_awards windows of ``offers`` by event type (Rulesets.award_windows' shape)."""
    ids = {offer.id for offer in offers}
    found = {
        t: {o: d for o, d in rulesets.award_windows(t).items() if o in ids} for t in EVENT_TYPES
    }
    return {t: w for t, w in found.items() if w}


class _Timer:
    """Adds the seconds of a ``with`` block to ``timings[name]`` (no-op without timings)."""

    __slots__ = ("name", "start", "timings")

    def __init__(self, timings: dict[str, float] | None, name: str) -> None:
        self.timings = timings
        self.name = name
        self.start = 0.0

    def __enter__(self) -> None:
        if self.timings is not None:
            self.start = time.perf_counter()

    def __exit__(self, *_: object) -> None:
        if self.timings is not None:
            self.timings[self.name] = (
                self.timings.get(self.name, 0.0) + time.perf_counter() - self.start
            )


class _Worker:
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
        self.zone = rulesets.time_zone
        self.offers = {offer.id: offer for offer in rulesets.offers}
        per_event = [
            o for o in rulesets.offers if o.classification not in AGGREGATE_CLASSIFICATIONS
        ]
        by_type = {
            t: [o for o in rulesets.offers_for_event_type(t) if o in per_event] for t in EVENT_TYPES
        }
        self.all_types = {t for t, found in by_type.items() if found}
        self.batch_types = {
            t for t, found in by_type.items() if any(o.evaluation == "batch" for o in found)
        }
        self.batch_groups = any(o.exclusive_group for o in per_event if o.evaluation == "batch")
        # max_awards windows (offer id -> days) per event type: the per-event offers' for
        # the per-event phase, the aggregate offers' for the aggregate phase.
        self.event_windows = _windows(rulesets, per_event)
        self.aggregate_windows = _windows(rulesets, aggregates.aggregate_offers(rulesets))
        self.pending_bits = aggregates.pending_bits(rulesets)
        self.aggregate_offers = aggregates.aggregate_offers(rulesets)
        self.postgres = database.write_engine.dialect.name == "postgresql"
        self.chunks = 0
        self.segment_cache: dict[str, list[str]] = {}

    def _time(self, name: str) -> _Timer:
        return _Timer(self.hooks.timings, name)

    def _check_stop(self) -> None:
        if self.hooks.stop is not None and self.hooks.stop.is_set():
            raise RunInterrupted

    # -- facts --

    def _segments(self, session: Session, contact_ids: Iterable[str]) -> dict[str, list[str]]:
        """The contacts' segments, read once per worker (a run sees a contact's segments
        as they were when it first met the contact); the cache is bounded."""
        cache = self.segment_cache
        missing = sorted({c for c in contact_ids if c not in cache})
        if len(cache) + len(missing) > SEGMENT_CACHE:
            cache.clear()
        for start in range(0, len(missing), 1000):
            rows = session.execute(
                select(Contact.id, Contact.segments).where(
                    Contact.id.in_(missing[start : start + 1000])  # type: ignore[attr-defined]
                )
            )
            for contact_id, segments in rows:
                cache[contact_id] = list(segments or [])
        return cache

    def _window_awards(
        self, session: Session, items: Sequence[_Item], windows: Windows
    ) -> dict[tuple[str, str], list[datetime]]:
        """The awards that count towards these items' max_awards windows, by (contact,
        offer): the rules of evaluation.awards_in_window (the contact's awards of the
        offer, not as the referred contact, of events still posted)."""
        windowed = [item for item in items if item.event.type in windows]
        if not windowed:
            return {}
        offers = sorted({o for item in windowed for o in windows[item.event.type]})
        longest = max(d for item in windowed for d in windows[item.event.type].values())
        since = min(item.event.performed_on for item in windowed) - timedelta(days=longest)
        until = max(item.event.performed_on for item in windowed)
        awards = Award.__table__.c  # type: ignore[attr-defined]
        found: dict[tuple[str, str], list[datetime]] = defaultdict(list)
        contacts = sorted({item.event.contact_id for item in windowed})
        for start in range(0, len(contacts), 500):
            rows = session.execute(
                select(awards.contact_id, awards.offer_id, awards.performed_on)
                .join(Event.__table__, _E.id == awards.event_id)  # type: ignore[attr-defined]
                .where(
                    awards.contact_id.in_(contacts[start : start + 500]),
                    awards.offer_id.in_(offers),
                    awards.beneficiary != "referred",
                    awards.performed_on > since,
                    awards.performed_on <= until,
                    _E.state == "posted",
                )
            )
            for contact_id, offer_id, performed_on in rows:
                found[(contact_id, offer_id)].append(performed_on)
        return found

    @staticmethod
    def _counts(
        item: _Item, awards: dict[tuple[str, str], list[datetime]], windows: Windows
    ) -> dict[str, int]:
        """Per windowed offer: the awards within its window before the item's event."""
        moment = item.event.performed_on
        counts: dict[str, int] = {}
        for offer_id, days in windows.get(item.event.type, {}).items():
            since = moment - timedelta(days=days)
            found = awards.get((item.event.contact_id, offer_id), ())
            n = sum(1 for p in found if since < p <= moment)
            if n:
                counts[offer_id] = n
        return counts

    def _decide(
        self,
        session: Session,
        items: list[_Item],
        segments: dict[str, list[str]],
        windows: Windows,
    ) -> list[_NewAward]:
        """Evaluate the items; the awards they earn (not written yet). Items of one contact
        with max_awards windows go in successive waves (performed_on order), so each sees
        the awards the earlier ones earned in this chunk."""
        if not items:
            return []
        windowed = [item for item in items if item.event.type in windows]
        if windowed:
            seen: dict[str, int] = defaultdict(int)
            for item in sorted(windowed, key=lambda i: (i.event.performed_on, i.event.number)):
                item.wave = seen[item.event.contact_id]
                seen[item.event.contact_id] += 1
            db_awards = self._window_awards(session, windowed, windows)
            for item in windowed:
                item.db_counts = self._counts(item, db_awards, windows)
        chunk_awards: dict[tuple[str, str], list[datetime]] = defaultdict(list)
        result: list[_NewAward] = []
        for wave in sorted({item.wave for item in items}):
            by_kind: dict[tuple[str, bool], list[tuple[_Item, EventFacts]]] = defaultdict(list)
            with self._time("facts"):
                for item in items:
                    if item.wave != wave:
                        continue
                    counts = item.db_counts
                    if chunk_awards and item.event.type in windows:
                        counts = dict(counts)
                        for offer_id, n in self._counts(item, chunk_awards, windows).items():
                            counts[offer_id] = counts.get(offer_id, 0) + n
                    facts = build_facts(
                        session,
                        item.event,  # type: ignore[arg-type]  # has every Event field build_facts reads
                        segments.get(item.event.contact_id, []),
                        counts,
                    )
                    if item.offer is not None and item.totals is not None:
                        facts.period_totals = {item.offer: item.totals}
                    by_kind[(item.mode, item.offer is not None)].append((item, facts))
            for (mode, aggregate), pairs in by_kind.items():
                with self._time("engine"):
                    decided = self.evaluator.evaluate_many(
                        [facts for _, facts in pairs],
                        mode=mode,  # type: ignore[arg-type]
                        aggregates=aggregate,
                    )
                for (item, _), decisions in zip(pairs, decided, strict=True):
                    for decision in decisions:
                        if aggregate and decision.offer_id != item.offer:
                            continue  # an aggregate fact only decides its own offer
                        result.append(_NewAward(item.event, decision, item.group, item.period))
                        if decision.beneficiary != "referred" and item.event.type in windows:
                            key = (item.event.contact_id, decision.offer_id)
                            chunk_awards[key].append(item.event.performed_on)
        return result

    # -- writing --

    def _begin_writing(self, session: Session) -> None:
        """When a chunk starts writing (so SQLite's write lock is not taken earlier).
        SQLite: this connection checkpoints the WAL every ~40 MB instead of every ~4 MB (a
        run dirties pages all over the indexes keyed by contact; checkpointing them at
        every commit was the biggest cost of a chunk). PostgreSQL: the run's lock waits
        are bounded, so in a lock-order conflict with a request (intake locks wallets and
        contacts in either order) the run backs off and retries, never the request."""
        if not self.postgres:
            session.connection().exec_driver_sql(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
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
                select(Contact.id)
                .where(Contact.id.in_(ids[start : start + 1000]))  # type: ignore[attr-defined]
                .order_by(Contact.id)
                .with_for_update()
            )

    def _ledger_ids(self, session: Session, count: int) -> list[int]:
        """Ids for ``count`` new ledger entries, taken up front so the entries go in with
        one multi-row insert: from the sequence on PostgreSQL; on SQLite the write
        transaction is exclusive, so the next rowids are ours."""
        if self.postgres:
            sequence = func.pg_get_serial_sequence("wallet_transactions", "id")
            return list(
                session.scalars(
                    select(func.nextval(sequence)).select_from(func.generate_series(1, count))
                )
            )
        top = session.scalar(select(func.max(WalletTransaction.id))) or 0
        return list(range(top + 1, top + 1 + count))

    def _persist(
        self, session: Session, awards: list[_NewAward]
    ) -> list[tuple[_NewAward, str, int]]:
        """Awards with their ledger credits, in bulk: the rows evaluation.persist_award
        writes, plus the aggregate award rows. Returns (award, award id, cents) each."""
        awards = [a for a in awards if to_cents(a.decision.amount) > 0]
        if not awards:
            return []
        now = self.runtime.now()
        contacts = sorted({a.beneficiary_id for a in awards})
        wallets: dict[str, list[int]] = {}  # contact -> [wallet id, balance, balance before]
        for start in range(0, len(contacts), 1000):
            rows = session.execute(
                select(_W.contact_id, _W.id, _W.balance_cents)
                .where(_W.contact_id.in_(contacts[start : start + 1000]))
                .order_by(_W.id)
                .with_for_update()
            )
            for contact_id, wallet_id, balance in rows:
                wallets[contact_id] = [wallet_id, balance, balance]
        entry_ids = self._ledger_ids(session, len(awards))
        ledger_rows = []
        award_rows = []
        aggregate_rows = []
        written = []
        for award, entry_id in zip(awards, entry_ids, strict=True):
            decision = award.decision
            event = award.event
            contact_id = award.beneficiary_id
            wallet = wallets[contact_id]
            cents = to_cents(decision.amount)
            wallet[1] += cents
            award_id = str(uuid.uuid4())
            ledger_rows.append(
                {
                    "id": entry_id,
                    "wallet_id": wallet[0],
                    "kind": "award",
                    "amount_cents": cents,
                    "balance_after_cents": wallet[1],
                    "event_id": event.id,
                    "offer_id": decision.offer_id,
                    "reverses_id": None,
                    "award_id": award_id,
                    "spend_id": None,
                    "created_at": now,
                }
            )
            award_rows.append(
                {
                    "id": award_id,
                    "event_id": event.id,
                    "offer_id": decision.offer_id,
                    "offer_name": decision.offer_name,
                    "classification": decision.classification,
                    "beneficiary": decision.beneficiary,
                    "contact_id": contact_id,
                    "amount_cents": cents,
                    "lines": [
                        {"index": line.index, "sku": line.sku, "amount": str(line.amount)}
                        for line in decision.lines
                    ]
                    if decision.lines is not None
                    else None,
                    # The purchase is over: a run credits the wallet, never spends at once.
                    "instant_spend": False,
                    "ruleset_version": decision.ruleset_version,
                    "performed_on": event.performed_on,
                    "ledger_entry_id": entry_id,
                    "created_at": now,
                }
            )
            if award.group is not None:
                group = award.group
                aggregate_rows.append(
                    {
                        "award_id": award_id,
                        "run_id": self.run.id,
                        "offer_id": decision.offer_id,
                        "contact_id": group.contact_id,
                        "period": award.period,
                        "period_key": group.key,
                        "total_amount_cents": group.total_cents,
                        "event_count": group.count,
                        "quantity_milli": group.quantity_milli,
                        "reversed_at": None,
                        "reversed_by_event_id": None,
                        "created_at": now,
                    }
                )
            written.append((award, award_id, cents))
        _insert_rows(session, WalletTransaction.__table__, ledger_rows)  # type: ignore[attr-defined]
        _insert_rows(session, Award.__table__, award_rows)  # type: ignore[attr-defined]
        session.execute(
            update(Wallet.__table__)  # type: ignore[attr-defined]
            .where(_W.id == bindparam("wallet"))
            .values(balance_cents=_W.balance_cents + bindparam("delta")),
            [
                {"wallet": wallet_id, "delta": after - before}
                for wallet_id, after, before in wallets.values()
                if after != before
            ],
        )
        _insert_rows(session, AggregateAward.__table__, aggregate_rows)  # type: ignore[attr-defined]
        return written

    def _record(
        self,
        session: Session,
        partition: int,
        phase: str,
        events: int,
        written: list[tuple[_NewAward, str, int]],
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
            table = RunOfferTotal.__table__  # type: ignore[attr-defined]
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
        partitions = RunPartition.__table__.c  # type: ignore[attr-defined]
        session.execute(
            update(RunPartition.__table__)  # type: ignore[attr-defined]
            .where(partitions.run_id == self.run.id, partitions.partition == partition)
            .values(heartbeat_at=now, events_evaluated=partitions.events_evaluated + events)
        )
        run = EvaluationRun.__table__.c  # type: ignore[attr-defined]
        changed = session.execute(
            update(EvaluationRun.__table__)  # type: ignore[attr-defined]
            .where(run.id == self.run.id, run.status == "running")
            .values(
                heartbeat_at=now,
                events_evaluated=run.events_evaluated + events,
                aggregate_groups=run.aggregate_groups + groups,
                awards=run.awards + len(written),
                total_awarded_cents=run.total_awarded_cents + cents,
                chunks=run.chunks + 1,
            )
        ).rowcount
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

    def _transaction(self, work: Callable[[Session], ChunkDone | None]) -> ChunkDone | None:
        """``work`` in a write transaction; again (after a short pause) when what it read
        changed (``_Stale``) or PostgreSQL refused a lock within the run's lock timeout."""
        for attempt in range(_RETRIES):
            try:
                with self.database.transaction() as session:
                    done = work(session)
                    committing = time.perf_counter()
                if self.hooks.timings is not None:
                    self.hooks.timings["commit"] = (
                        self.hooks.timings.get("commit", 0.0) + time.perf_counter() - committing
                    )
            except _Stale:
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
        self._event_phase(partition)
        if self.aggregate_offers:
            self._refresh_statistics()
        for period in aggregates.PERIODS:
            offers = [o for o in self.aggregate_offers if aggregates.period_of(o) == period]
            if offers:
                self._aggregate_phase(partition, period, offers)
        table = RunPartition.__table__  # type: ignore[attr-defined]
        with self.database.transaction() as session:
            session.execute(
                update(table)
                .where(table.c.run_id == self.run.id, table.c.partition == partition)
                .values(state="done", heartbeat_at=self.runtime.now())
            )

    # -- per-event phase --

    def _event_phase(self, partition: int) -> None:
        where = _pending_events_filter(self.run.as_of)
        mine = partition_filter(_E.contact_id, self.run.partitions, partition)
        if mine is not None:
            where.append(mine)
        cursor: tuple[datetime, int] | None = None
        while True:
            self._check_stop()
            query = select(*_EVENT_COLUMNS).where(*where)
            if cursor is not None:  # a row-value keyset: both databases walk the index
                query = query.where(
                    _E.performed_on >= cursor[0],
                    tuple_(_E.performed_on, _E.number)
                    > tuple_(
                        literal(cursor[0], _E.performed_on.type), literal(cursor[1], _E.number.type)
                    ),
                )
            query = query.order_by(_E.performed_on, _E.number).limit(self.chunk_size)
            read: list[EventRecord] = []

            def chunk(
                session: Session, query: Any = query, read: list[Any] = read
            ) -> ChunkDone | None:
                return self._event_chunk(session, query, partition, read)

            if self._transaction(chunk) is None:
                return
            cursor = (read[-1].performed_on, read[-1].number)

    def _event_chunk(
        self, session: Session, query: Any, partition: int, read: list[EventRecord]
    ) -> ChunkDone | None:
        """One chunk: read and decide outside the write lock, then (``session``, the write
        transaction) lock, re-check what the decisions depend on, and write."""
        with self.database.session(write=False) as reader:
            with self._time("read"):
                rows = _records(reader, query)
            if not rows:
                return None
            read[:] = rows
            items = []
            for row in rows:
                if row.evaluated:
                    if row.type in self.batch_types:
                        items.append(_Item(event=row, mode="batch"))
                elif row.type in self.all_types:
                    items.append(_Item(event=row, mode="all"))
            with self._time("segments"):
                segments = self._segments(reader, (item.event.contact_id for item in items))
            awards = self._decide(reader, items, segments, self.event_windows)
            if self.batch_groups:
                batch = {item.event.number for item in items if item.mode == "batch"}
                awards = self._drop_grouped(reader, awards, batch)
        windows = self.event_windows
        windowed = [item for item in items if item.event.type in windows]
        self._begin_writing(session)
        with self._time("checks"):
            self._lock_contacts(
                session,
                [a.event.contact_id for a in awards] + [i.event.contact_id for i in windowed],
            )
            if awards:
                numbers = sorted({a.event.number for a in awards})
                posted = set(
                    session.scalars(
                        select(_E.number).where(_E.number.in_(numbers), _E.state == "posted")
                    )
                )
                awards = [a for a in awards if a.event.number in posted]
            if windowed:
                again = self._window_awards(session, windowed, windows)
                if any(self._counts(item, again, windows) != item.db_counts for item in windowed):
                    raise _Stale
        with self._time("mark"):
            self._mark(session, rows)
        with self._time("persist"):
            written = self._persist(session, awards)
        return self._record(session, partition, "events", len(rows), written)

    def _drop_grouped(
        self, session: Session, awards: list[_NewAward], batch_numbers: set[int]
    ) -> list[_NewAward]:
        """A batch offer does not award an event that an offer of its exclusive group
        already awarded (on intake)."""

        def group(award: _NewAward) -> str | None:
            return self.offers[award.decision.offer_id].exclusive_group

        candidates = sorted(
            {a.event.id for a in awards if a.event.number in batch_numbers and group(a)}
        )
        if not candidates:
            return awards
        taken: dict[str, set[str]] = defaultdict(set)
        rows = session.execute(
            select(Award.event_id, Award.offer_id).where(Award.event_id.in_(candidates))  # type: ignore[attr-defined]
        )
        for event_id, offer_id in rows:
            offer = self.offers.get(offer_id)
            if offer is not None and offer.exclusive_group:
                taken[event_id].add(offer.exclusive_group)
        return [
            a
            for a in awards
            if a.event.number not in batch_numbers or group(a) not in taken.get(a.event.id, ())
        ]

    def _mark(self, session: Session, rows: list[EventRecord]) -> None:
        marks = []
        for row in rows:
            day, week, weekday, minute = aggregates.local_fields(row.performed_on, self.zone)
            marks.append(
                {
                    "event_number": row.number,
                    "run_id": self.run.id,
                    "contact_id": row.contact_id,
                    "local_day": day,
                    "local_week": week,
                    "weekday": weekday,
                    "minute": minute,
                    "pending": self.pending_bits if row.type == "purchase" else 0,
                }
            )
        _insert_rows(session, EvaluatedEvent.__table__, marks)  # type: ignore[attr-defined]

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

    def _aggregate_phase(self, partition: int, period: str, offers: list[Offer]) -> None:
        closed_before = aggregates.current_key(period, self.run.as_of, self.zone)
        mine = partition_filter(aggregates.m.c.contact_id, self.run.partitions, partition)
        after = ""
        while True:
            self._check_stop()
            last: list[str] = []

            def chunk(
                session: Session, after: str = after, last: list[str] = last
            ) -> ChunkDone | None:
                with self._time("aggregate groups"):
                    contacts = aggregates.pending_contacts(
                        session, period, closed_before, after, self.contacts_per_chunk, mine
                    )
                if not contacts:
                    return None
                last[:] = contacts
                self._begin_writing(session)
                self._lock_contacts(session, contacts)
                return self._aggregate_chunk(
                    session, partition, period, offers, contacts, closed_before
                )

            if self._transaction(chunk) is None:
                return
            after = last[-1]

    def _aggregate_chunk(
        self,
        session: Session,
        partition: int,
        period: str,
        offers: list[Offer],
        contacts: list[str],
        closed_before: int,
    ) -> ChunkDone:
        """The period groups of these contacts, in one write transaction (their rows are
        locked on PostgreSQL: cancellations of their purchases wait)."""
        with self._time("aggregate groups"):
            pending = aggregates.pending_periods(session, period, closed_before, contacts)
        planned: list[tuple[Offer, aggregates.Group, int]] = []
        skipped = 0
        for offer in offers:
            with self._time("aggregate groups"):
                groups = aggregates.in_range_groups(
                    session, offer, self.rulesets, pending, self.zone
                )
                taken = aggregates.reversed_events(session, offer, contacts) if groups else set()
            for group in groups:
                carrier: int | None = group.latest
                if carrier in taken:  # it carried an award of this offer that was reversed
                    carrier = aggregates.latest_free(
                        session, offer, self.rulesets, group, taken, self.zone
                    )
                if carrier is None:
                    skipped += 1
                    log.warning(
                        "offer %s, contact %s, %s %s: every purchase already carried an award "
                        "of this offer (reversed since); none is left to carry a new one",
                        offer.id,
                        group.contact_id,
                        period,
                        group.key,
                    )
                    continue
                planned.append((offer, group, carrier))
        numbers = sorted({carrier for *_, carrier in planned})
        events: dict[int, EventRecord] = {}
        for start in range(0, len(numbers), 1000):
            query = select(*_EVENT_COLUMNS).where(_E.number.in_(numbers[start : start + 1000]))
            events.update((row.number, row) for row in _records(session, query))
        items = [
            _Item(
                event=events[carrier],
                mode="batch",
                offer=offer.id,
                totals=PeriodTotals(
                    total_amount=from_cents(group.total_cents),
                    count=group.count,
                    quantity=Decimal(group.quantity_milli) / 1000,
                ),
                group=group,
                period=period,
            )
            for offer, group, carrier in planned
        ]
        segments = self._segments(session, contacts)
        awards = self._decide(session, items, segments, self.aggregate_windows)
        with self._time("aggregate persist"):
            written = self._persist(session, awards)
            by_offer: dict[str, list[tuple[str, aggregates.Group]]] = defaultdict(list)
            for award, award_id, _ in written:
                assert award.group is not None
                by_offer[award.decision.offer_id].append((award_id, award.group))
            for offer in offers:
                if by_offer.get(offer.id):
                    aggregates.link_members(
                        session, offer, self.rulesets, by_offer[offer.id], self.zone
                    )
            bit = PERIOD_BITS[period]
            session.execute(
                update(EvaluatedEvent.__table__)  # type: ignore[attr-defined]
                .where(
                    _M.contact_id.in_(contacts),
                    _M.pending != 0,
                    _M.pending.op("&")(bit) != 0,
                    *aggregates.key_between(period, None, closed_before - 1, _M),
                )
                .values(pending=_M.pending.op("&")(~bit & 0x7FFF))
            )
        return self._record(
            session, partition, f"aggregates:{period}", 0, written, groups=len(planned) + skipped
        )


def evaluated_by_run(session: Session, event_number: int) -> bool:
    """Whether an evaluation run evaluated the event (for the event view's ``evaluated``:
    evaluated on intake, or by a run)."""
    return session.get(EvaluatedEvent, event_number) is not None


# ---- cancellation ---------------------------------------------------------------------


def on_event_cancelled(session: Session, runtime: Runtime, event: Event) -> list[WalletTransaction]:
    """Cancellation hook (services.events.cancel_event calls it before reversing the
    event's own ledger entries): every aggregate award the event contributed to is
    reversed as a whole, its links are deleted, and the other contributing purchases go
    back to pending, so the next run aggregates them again without the cancelled one.
    Returns the reversal entries it wrote."""
    if event.type != "purchase" or event.number is None:
        return []
    # Same lock as a run's aggregate chunk and awards_in_window (PostgreSQL row lock).
    session.execute(select(Contact.id).where(Contact.id == event.contact_id).with_for_update())
    L = AggregateLink.__table__.c  # type: ignore[attr-defined]
    award_ids = sorted(
        set(session.scalars(select(L.award_id).where(L.event_number == event.number)))
    )
    now = runtime.now()
    reversals: list[WalletTransaction] = []
    for award_id in award_ids:
        award = session.get(Award, award_id)
        aggregate = session.get(AggregateAward, award_id)
        assert award is not None and aggregate is not None
        entry = session.get(WalletTransaction, award.ledger_entry_id)
        already = session.scalar(
            select(WalletTransaction.id).where(
                WalletTransaction.reverses_id == award.ledger_entry_id
            )  # type: ignore[arg-type]
        )
        if entry is not None and already is None:
            reversals.append(_reverse(session, entry, event.id, award.id, now))
        aggregate.reversed_at = now
        aggregate.reversed_by_event_id = event.id
        others = [
            n
            for n in session.scalars(select(L.event_number).where(L.award_id == award_id))
            if n != event.number
        ]
        bit = PERIOD_BITS.get(aggregate.period, 0)
        if others and bit:
            session.execute(
                update(EvaluatedEvent.__table__)  # type: ignore[attr-defined]
                .where(_M.event_number.in_(others))
                .values(pending=_M.pending.op("|")(bit))
            )
        session.execute(
            AggregateLink.__table__.delete().where(L.award_id == award_id)  # type: ignore[attr-defined]
        )
    session.flush()
    return reversals


def _reverse(
    session: Session, entry: WalletTransaction, event_id: str, award_id: str, now: datetime
) -> WalletTransaction:
    """An award_reversal of ``entry`` naming the award (ledger.post_entry's two steps:
    the balance moves with one UPDATE ... RETURNING, then the entry is appended)."""
    W = Wallet.__table__.c  # type: ignore[attr-defined]
    balance_after = session.execute(
        update(Wallet.__table__)  # type: ignore[attr-defined]
        .where(W.id == entry.wallet_id)
        .values(balance_cents=W.balance_cents - entry.amount_cents)
        .returning(W.balance_cents)
    ).scalar_one()
    reversal = WalletTransaction(
        wallet_id=entry.wallet_id,
        kind="award_reversal",
        amount_cents=-entry.amount_cents,
        balance_after_cents=balance_after,
        event_id=event_id,
        offer_id=entry.offer_id,
        reverses_id=entry.id,
        award_id=award_id,
        created_at=now,
    )
    session.add(reversal)
    session.flush()
    return reversal
