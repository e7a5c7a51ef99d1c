"""Evaluation runs (issue 5): batch offers and period aggregates over the whole history.

A run evaluates every posted event with ``performed_on <= as_of`` (default and at most:
now) that no run evaluated yet, in ``performed_on`` order, in chunks:

- the per-event offers: ``evaluation: batch`` offers for every event, and every offer
  (mode ``all``) for an event that was not evaluated on intake (``evaluated`` false), with
  the same facts as immediate evaluation (``evaluation.build_facts``; a purchase's are
  built straight from its stored details by ``purchase_fact``, the same fact; contact
  segments as they are now; ``max_awards`` windows counted like
  ``evaluation.awards_in_window``, including the awards made earlier in the same chunk).
  A batch offer never awards an event that an offer of its ``exclusive_group`` already
  awarded;
- then, period kind after period kind, the period aggregates of the contacts whose
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

Concurrency with requests. Chunks are read and decided outside the write transaction;
then one write transaction locks the contacts (PostgreSQL), re-checks what the decisions
depend on and writes. Per-event chunks: the awarded events are still posted and the
``max_awards`` counts did not move (else the chunk is read again). Aggregate chunks: the
contacts and their pending periods, with their count of changes, are what the plan was
made on (else it is planned again, in the transaction). Cancellation calls
``on_event_cancelled`` first, which takes the same contact lock and counts a change of
the purchase's pending periods, so a cancel and a run never miss each other's writes.

Speed (bench/evaluation_run.py; docs/scale-out.md has the figures). A run is CPU-bound:
the rules engine and Python hold the GIL. A worker of a big run (``AHEAD_MIN_EVENTS``)
therefore starts a second process (``_AheadProcess``) that reads and decides chunks
while the worker writes; whenever the next chunk to write is not back from it, the
worker decides a later one itself (``_Shared``), so both CPUs stay busy whatever the
balance. Writing is bulk statements built once per worker, on the worker's own
connection (SQLite: a large page cache and rare WAL checkpoints), with time-ordered
award ids; the cyclic garbage collector runs less often during a run.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import queue
import threading
import time
import traceback
import uuid
import weakref
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import (
    ColumnElement,
    Connection,
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
    type_coerce,
    update,
)
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session

from rewards.db.database import Database, committing
from rewards.db.run_tables import (
    AggregateAward,
    AggregateLink,
    EvaluatedEvent,
    EvaluationRun,
    RunOfferTotal,
    RunPartition,
)
from rewards.db.tables import Award, Contact, Event, Wallet, WalletTransaction
from rewards.domain.money import from_cents, to_cents
from rewards.engine import AwardDecision, Evaluator, PeriodTotals, compiler
from rewards.engine.compiler import CompiledRulesets, PreparedEvent, prepare, prepare_fact, scaled
from rewards.engine.loader import Rulesets
from rewards.engine.model import AGGREGATE_CLASSIFICATIONS, EVENT_TYPES, Offer
from rewards.errors import refusal
from rewards.services import aggregates
from rewards.services.evaluation import NOT_EVALUATED, build_facts
from rewards.services.runtime import Runtime

log = logging.getLogger("rewards.runs")

STALE_AFTER = timedelta(minutes=2)  # no heartbeat for this long: the run's process died
# Events per chunk (per-event phase): one write transaction each. Its random index pages
# are written at each commit, so a bigger chunk writes fewer per event (5,000: about a
# quarter less commit time than 2,000 on the 1M bench) for a longer write lock (~0.25 s
# on that bench, about an aggregate chunk's).
CHUNK_SIZE = 5000
CONTACTS_PER_CHUNK = 500  # contacts per chunk (aggregate phase)
SEGMENT_CACHE = 200_000  # contacts whose segments a worker keeps
WAL_PAGES = 250_000  # SQLite: the run's commits checkpoint only a WAL this big (~1 GB)
# SQLite: the page cache (KiB) of the worker's write connection and of the read-ahead
# process's connections. 50 MB: the 1M bench runs as fast as with 100 MB (128.9 s against
# 142.7 s, within the noise) in 477 MB of RSS for both processes instead of 578 MB.
CACHE_KIB = 50_000
WAL_LIMIT = 256 * 2**20  # SQLite: the WAL file is cut back to this size when it restarts
PENDING_MEMORY = 200_000  # pending periods a worker remembers having written
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
            try:
                with _fewer_collections():
                    while (partition := _claim(database, run_id, name, runtime.now())) is not None:
                        engine.process(partition)
            finally:
                engine.close()
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


def _event_columns(text_times: bool) -> tuple[Any, ...]:
    """``_EVENT_COLUMNS``; with ``text_times`` (SQLite) performed_on as its stored text,
    UTC (parsed by ``_utc_text``)."""
    if not text_times:
        return _EVENT_COLUMNS
    return (*_EVENT_COLUMNS[:5], type_coerce(_E.performed_on, String), *_EVENT_COLUMNS[6:])


_details = msgspec.json.Decoder(dict[str, Any])


class EventRecord:
    """The event columns evaluation reads (``build_facts`` takes it for an ``Event``).
    ``details`` is decoded on first use: a purchase's facts come from ``raw`` through
    the typed ``_PURCHASE`` decoder (about 3x faster than a dict)."""

    __slots__ = (
        "_details",
        "classification",
        "contact_id",
        "evaluated",
        "id",
        "number",
        "performed_by_unit",
        "performed_on",
        "raw",
        "type",
    )

    def __init__(
        self,
        number: int,
        id: str,
        type: str,
        contact_id: str,
        classification: str | None,
        performed_on: datetime,
        performed_by_unit: str | None,
        evaluated: bool,
        raw: str,
    ) -> None:
        self.number = number
        self.id = id
        self.type = type
        self.contact_id = contact_id
        self.classification = classification
        self.performed_on = performed_on
        self.performed_by_unit = performed_by_unit
        self.evaluated = evaluated
        self.raw = raw
        self._details: dict[str, Any] | None = None

    @property
    def details(self) -> dict[str, Any]:
        if self._details is None:
            self._details = _details.decode(self.raw)
        return self._details


def _records(
    session: Session, query: Any, text_times: bool = False, params: dict[str, Any] | None = None
) -> list[EventRecord]:
    """``text_times``: ``performed_on`` comes as SQLite's text (``_event_columns``),
    parsed here: SQLAlchemy's own DATETIME parsing costs more than the rest of the row."""
    if text_times:
        return [
            EventRecord(n, i, t, c, cls, _utc_text(p), u, bool(ev), d)
            for n, i, t, c, cls, p, u, ev, d in session.execute(query, params)
        ]
    return [
        EventRecord(n, i, t, c, cls, p, u, bool(ev), d)
        for n, i, t, c, cls, p, u, ev, d in session.execute(query, params)
    ]


def _utc_text(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# ---- purchase facts straight from the stored details ------------------------------------
#
# ``evaluation.build_facts`` + ``compiler.build_fact`` make every amount a Decimal and
# then cents again; for the purchases of a run (nearly all of its events) the amounts go
# from the stored JSON to cents directly. The result is the same fact (tests compare the
# two on generated purchases); details that do not decode into ``_Purchase`` take the
# general path, and so fail (or not) exactly as it does.


class _Line(msgspec.Struct):
    sku: str
    quantity: str | int | float
    total_amount: str | int | float


class _Medium(msgspec.Struct):
    brand: Any = None
    type: Any = None


class _Purchase(msgspec.Struct):
    products: list[_Line] = []
    total_amount: str | int | float | msgspec.UnsetType = msgspec.UNSET
    payment_medium: _Medium | None = None


_PURCHASE = msgspec.json.Decoder(_Purchase)


_CENTS: dict[str, int] = {}  # amount text -> cents: prices repeat (bounded below)


def _cents(value: str | int | float) -> int:
    """``Decimal(value)`` in cents, half-up, as build_facts + build_fact compute it."""
    if type(value) is str:
        found = _CENTS.get(value)
        if found is not None:
            return found
        found = _text_cents(value)
        if len(_CENTS) >= 100_000:
            _CENTS.clear()
        _CENTS[value] = found
        return found
    if type(value) is int:
        return value * 100
    return scaled(Decimal(value))


def _text_cents(value: str) -> int:
    if value[-3:-2] == ".":  # "<digits>.<2 digits>": the cents are the digits
        digits = value.replace(".", "", 1)
        if digits.isascii() and digits.isdigit():
            return int(digits)
    return scaled(Decimal(value))


def purchase_fact(
    compiled: CompiledRulesets, event: EventRecord, segments: list[str], counts: dict[str, int]
) -> dict[str, Any] | None:
    """The engine fact of a purchase (``compiler.build_fact(build_facts(...))``), or None
    when its details need the general path."""
    try:
        details = _PURCHASE.decode(event.raw)
    except msgspec.ValidationError:
        return None
    medium = details.payment_medium
    total = details.total_amount
    return compiler.purchase_fact(
        compiled,
        performed_on=event.performed_on,
        classification=event.classification,
        unit=event.performed_by_unit,
        segments=segments,
        awards_in_window=counts,
        lines=[{"s": line.sku, "a": _cents(line.total_amount)} for line in details.products],
        total_cents=None if total is msgspec.UNSET else _cents(total),
        payment_brand=None if medium is None else medium.brand,
        payment_type=None if medium is None else medium.type,
    )


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


class _Insert:
    """Many rows into one table, in the session's transaction: the SQL and the columns'
    bind processors are looked up once per worker, rows are tuples in ``columns`` order.
    SQLite's ``executemany`` straight on the driver, PostgreSQL's ``COPY`` (SQLAlchemy's
    per-row parameter building costs more than the database's insert)."""

    def __init__(self, dialect: Any, table: Any, columns: Sequence[str]) -> None:
        processors = [table.c[name].type._cached_bind_processor(dialect) for name in columns]
        # Only the columns whose values need converting (datetimes, JSON) are touched.
        self.processed = [(i, p) for i, p in enumerate(processors) if p is not None]
        quote = dialect.identifier_preparer.quote
        names = ", ".join(quote(name) for name in columns)
        self.copy = dialect.name == "postgresql"
        if self.copy:
            self.sql = f"COPY {quote(table.name)} ({names}) FROM STDIN"
        else:
            marks = ", ".join("?" for _ in columns)
            self.sql = f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks})"

    def _process(self, rows: list[tuple[Any, ...]]) -> list[Any]:
        if not self.processed:
            return rows
        # Each distinct datetime converted once (every row of a chunk has the same
        # created_at); lists (JSON) are not hashable and are converted each time.
        done: list[dict[Any, Any]] = [{} for _ in self.processed]
        result = []
        for row in rows:
            values = list(row)
            for (i, process), memo in zip(self.processed, done, strict=True):
                value = values[i]
                if value is None:
                    continue
                if type(value) is datetime:
                    found = memo.get(value)
                    if found is None:
                        found = memo[value] = process(value)
                    values[i] = found
                else:
                    values[i] = process(value)
            result.append(tuple(values))
        return result

    def run(self, session: Session, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        connection = session.connection()
        values = self._process(rows)
        if self.copy:
            cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            with cursor.copy(self.sql) as copy:
                for row in values:
                    copy.write_row(row)
            return
        connection.exec_driver_sql(self.sql, values)


_LEDGER_COLUMNS = (
    "id", "wallet_id", "kind", "amount_cents", "balance_after_cents", "event_id", "offer_id",
    "reverses_id", "award_id", "spend_id", "created_at",
)  # fmt: skip
_AWARD_COLUMNS = (
    "id", "event_id", "offer_id", "offer_name", "classification", "beneficiary", "contact_id",
    "amount_cents", "lines", "instant_spend", "ruleset_version", "performed_on",
    "ledger_entry_id", "created_at",
)  # fmt: skip
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
        self.ledger = _Insert(dialect, WalletTransaction.__table__, _LEDGER_COLUMNS)  # type: ignore[attr-defined]
        self.awards = _Insert(dialect, Award.__table__, _AWARD_COLUMNS)  # type: ignore[attr-defined]
        self.aggregates = _Insert(dialect, AggregateAward.__table__, _AGGREGATE_COLUMNS)  # type: ignore[attr-defined]
        self.marks = _Insert(dialect, EvaluatedEvent.__table__, _MARK_COLUMNS)  # type: ignore[attr-defined]
        self.links = _Insert(dialect, AggregateLink.__table__, _LINK_COLUMNS)  # type: ignore[attr-defined]


class _AwardIds:
    """Award ids for a run: time-ordered UUIDs (version 7, RFC 9562: 48 bits of Unix
    milliseconds, a 12-bit sequence, 62 random bits), increasing within a worker. Random
    (version 4) ids put every award, ledger entry and link insert at a random place of
    the indexes on award ids, and a run writes hundreds of thousands of them; in time
    order they append. Like any UUID they are opaque to everything else."""

    def __init__(self) -> None:
        self.last = 0  # (milliseconds << 12) | sequence of the last id

    def next(self) -> str:
        now = time.time_ns() // 1_000_000 << 12
        self.last = now if now > self.last else self.last + 1
        random = int.from_bytes(os.urandom(8)) >> 2
        value = (self.last >> 12) << 80 | 0x7 << 76 | (self.last & 0xFFF) << 64 | 1 << 63 | random
        text = f"{value:032x}"
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


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


@dataclass
class _Chunk:
    """A chunk of events read (outside the write transaction), not decided yet: its
    items carry their max_awards counts from the database."""

    after: tuple[datetime, int] | None  # where it was read from (None: the first chunk)
    rows: list[EventRecord]
    items: list[_Item]
    segments: dict[str, list[str]]  # of the items' contacts

    @property
    def cursor(self) -> tuple[datetime, int]:
        """Where the next chunk starts (after this one's last event)."""
        return self.rows[-1].performed_on, self.rows[-1].number


@dataclass
class _Decided:
    """A chunk of events read and decided outside the write transaction."""

    after: tuple[datetime, int] | None  # where it was read from (None: the first chunk)
    cursor: tuple[datetime, int]  # where the next chunk starts (its last event)
    marks: list[_Mark]  # one per event
    windowed: list[_Item]  # the items with max_awards windows (re-checked when written)
    awards: list[_NewAward]


# (event number, contact, event type, business day, week, weekday, minute of the day)
_Mark = tuple[int, str, str, int, int, int, int]


@dataclass
class _Plan:
    """What a chunk of contacts earns from the period aggregates of one period kind."""

    period: str
    after: str  # the contacts come after this one
    contacts: list[str]
    pending: dict[tuple[str, int], int]  # what it was decided on (pending_periods)
    awards: list[_NewAward]
    groups: int  # groups in range (awarded or not)


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
            spent = time.perf_counter() - self.start
            self.timings[self.name] = self.timings.get(self.name, 0.0) + spent


_GC_LOCK = threading.Lock()
_GC_USERS = [0]
GC_FIRST_GENERATION = 20_000  # allocations between young collections during a run (700)


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """A run allocates and frees a few hundred thousand objects per chunk (rows, facts,
    decisions). With the default thresholds the cyclic collector ran every 700
    allocations and, every so often, traversed every long-lived object of the process
    (about 15% of a run). While any run works in this process: the objects alive when it
    started are frozen (left out of collections) and the youngest generation is
    collected every ``GC_FIRST_GENERATION`` allocations; the first run to start and the
    last to end set and restore both."""
    with _GC_LOCK:
        _GC_USERS[0] += 1
        if _GC_USERS[0] == 1:
            previous = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(max(previous[0], GC_FIRST_GENERATION), *previous[1:])
            _GC_PREVIOUS[:] = previous
    try:
        yield
    finally:
        with _GC_LOCK:
            _GC_USERS[0] -= 1
            if _GC_USERS[0] == 0:
                gc.set_threshold(*_GC_PREVIOUS)
                gc.unfreeze()


_GC_PREVIOUS: list[int] = []


@dataclass
class _EventQueries:
    """A partition's chunk queries by (from a cursor, up to a cursor): the events after
    ``(:after_on, :after_number)`` up to ``(:until_on, :until_number)``, at most a chunk
    (row-value keysets: both databases walk the performed_on index); and by (from a
    cursor) the query of a chunk's last event."""

    chunks: dict[tuple[bool, bool], Any] = field(default_factory=dict)
    bounds: dict[bool, Any] = field(default_factory=dict)


class _Reader:
    """Reads chunks of events and decides their awards (``_Decider``); writes nothing.
    Every worker has one; a big run's worker has a second one in the read-ahead
    process."""

    def __init__(
        self,
        database: Database,
        evaluator: Evaluator,
        run: EvaluationRun,
        chunk_size: int,
        contacts_per_chunk: int,
        timings: dict[str, float] | None,
    ) -> None:
        self.database = database
        self.evaluator = evaluator
        self.run = run
        self.chunk_size = chunk_size
        self.timings = timings
        rulesets = evaluator.rulesets
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
        self.decider = _Decider(evaluator, timings)
        self.rulesets = rulesets
        self.zone = rulesets.time_zone
        self.aggregate_offers = aggregates.aggregate_offers(rulesets)
        self.contacts_per_chunk = contacts_per_chunk
        self.text_times = database.write_engine.dialect.name == "sqlite"
        self.event_columns = _event_columns(self.text_times)
        self.queries: dict[int, _EventQueries] = {}
        self.scopes: dict[tuple[int, str], tuple[int, Any, list[Offer]]] = {}
        self.segment_cache: dict[str, list[str]] = {}

    def _time(self, name: str) -> _Timer:
        return _Timer(self.timings, name)

    def records(self, session: Session, query: Any, params: dict[str, Any]) -> list[EventRecord]:
        return _records(session, query, self.text_times, params)

    # -- the per-event phase --

    def _event_queries(self, partition: int) -> _EventQueries:
        """The partition's queries (``_EventQueries``), built once."""
        found = self.queries.get(partition)
        if found is not None:
            return found
        where = _pending_events_filter(self.run.as_of)
        mine = partition_filter(_E.contact_id, self.run.partitions, partition)
        if mine is not None:
            where.append(mine)
        order = (_E.performed_on, _E.number)
        after_on = bindparam("after_on", type_=_E.performed_on.type)
        after_number = bindparam("after_number", type_=_E.number.type)
        until_on = bindparam("until_on", type_=_E.performed_on.type)
        until_number = bindparam("until_number", type_=_E.number.type)
        after = [_E.performed_on >= after_on, tuple_(*order) > tuple_(after_on, after_number)]
        until = [_E.performed_on <= until_on, tuple_(*order) <= tuple_(until_on, until_number)]
        queries = _EventQueries()
        for starts in (False, True):
            for ends in (False, True):
                bounds = (after if starts else []) + (until if ends else [])
                queries.chunks[(starts, ends)] = (
                    select(*self.event_columns)
                    .where(*where, *bounds)
                    .order_by(*order)
                    .limit(self.chunk_size)
                )
            queries.bounds[starts] = (
                select(*order)
                .where(*where, *(after if starts else []))
                .order_by(*order)
                .offset(self.chunk_size - 1)
                .limit(1)
            )
        self.queries[partition] = queries
        return queries

    def event_bound(
        self, partition: int, after: tuple[datetime, int] | None
    ) -> tuple[datetime, int] | None:
        """The last event of the chunk after ``after``: None when fewer than a chunk are
        left (that chunk is the partition's last)."""
        query = self._event_queries(partition).bounds[after is not None]
        params = {} if after is None else {"after_on": after[0], "after_number": after[1]}
        with self.database.session(write=False) as session, self._time("read"):
            row = session.execute(query, params).first()
        return None if row is None else (row[0], int(row[1]))

    def read_events(
        self,
        partition: int,
        after: tuple[datetime, int] | None,
        until: tuple[datetime, int] | None = None,
    ) -> _Decided | None:
        """The partition's chunk after ``after`` (None: its first) up to ``until`` (None:
        a chunk), read and decided here, outside any write transaction; None when no
        event is left."""
        chunk = self.read_chunk(partition, after, until)
        if chunk is None:
            return None
        return self.finish(
            chunk, self.decider.decide(chunk.items, chunk.segments, self.event_windows)
        )

    def read_chunk(
        self,
        partition: int,
        after: tuple[datetime, int] | None,
        until: tuple[datetime, int] | None = None,
    ) -> _Chunk | None:
        """The partition's chunk after ``after`` (up to ``until``) with what deciding it
        needs from the database (segments, max_awards counts); None when no event is
        left."""
        query = self._event_queries(partition).chunks[(after is not None, until is not None)]
        params: dict[str, Any] = {}
        if after is not None:
            params.update(after_on=after[0], after_number=after[1])
        if until is not None:
            params.update(until_on=until[0], until_number=until[1])
        with self.database.session(write=False) as reader:
            with self._time("read"):
                rows = self.records(reader, query, params)
            if not rows:
                return None
            items = []
            for row in rows:
                if row.evaluated:
                    if row.type in self.batch_types:
                        items.append(_Item(event=row, mode="batch"))
                elif row.type in self.all_types:
                    items.append(_Item(event=row, mode="all"))
            with self._time("segments"):
                cache = self.segments(reader, (item.event.contact_id for item in items))
                segments = {
                    item.event.contact_id: cache.get(item.event.contact_id, []) for item in items
                }
            self.count_windows(reader, items, self.event_windows)
        return _Chunk(after, rows, items, segments)

    def finish(self, chunk: _Chunk, decisions: list[list[AwardDecision]]) -> _Decided:
        """The chunk's awards from its items' decisions, less those an exclusive group
        already took on intake."""
        awards = [
            _NewAward(item.event, decision, item.group, item.period)
            for item, found in zip(chunk.items, decisions, strict=True)
            for decision in found
        ]
        if self.batch_groups and awards:
            batch = {item.event.number for item in chunk.items if item.mode == "batch"}
            with self.database.session(write=False) as reader:
                awards = self._drop_grouped(reader, awards, batch)
        windowed = [item for item in chunk.items if item.event.type in self.event_windows]
        marks = [
            (
                row.number,
                row.contact_id,
                row.type,
                *aggregates.local_fields(row.performed_on, self.zone),
            )
            for row in chunk.rows
        ]
        return _Decided(chunk.after, chunk.cursor, marks, windowed, awards)

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

    # -- the aggregate phase --

    def aggregate_scope(self, partition: int, period: str) -> tuple[int, Any, list[Offer]]:
        """(closed_before, the partition's filter of pending rows, the period's offers),
        built once."""
        found = self.scopes.get((partition, period))
        if found is None:
            closed_before = aggregates.current_key(period, self.run.as_of, self.zone)
            mine = partition_filter(
                aggregates.pending_partition_column(), self.run.partitions, partition
            )
            offers = [o for o in self.aggregate_offers if aggregates.period_of(o) == period]
            found = self.scopes[(partition, period)] = (closed_before, mine, offers)
        return found

    def pending_contacts(
        self, session: Session, partition: int, period: str, after: str
    ) -> list[str]:
        """The next chunk of contacts (after ``after``) with closed periods to aggregate."""
        closed_before, mine, _ = self.aggregate_scope(partition, period)
        with self._time("aggregate groups"):
            return aggregates.pending_contacts(
                session, period, closed_before, after, self.contacts_per_chunk, mine
            )

    def read_plan(self, partition: int, period: str, after: str, contacts: list[str]) -> _Plan:
        """``plan_aggregates`` outside any write transaction."""
        with self.database.session(write=False) as session:
            return self.plan_aggregates(session, partition, period, after, contacts)

    def plan_aggregates(
        self, session: Session, partition: int, period: str, after: str, contacts: list[str]
    ) -> _Plan:
        """The awards the contacts' pending closed periods earn: each group in range is
        decided by the engine on the aggregate fact of its latest purchase not used by a
        reversed award of the offer (reads only)."""
        closed_before, _, offers = self.aggregate_scope(partition, period)
        with self._time("aggregate groups"):
            pending = aggregates.pending_periods(session, period, closed_before, contacts)
            by_offer = aggregates.in_range_groups(
                session, offers, self.rulesets, pending, self.zone
            )
        planned: list[tuple[Offer, aggregates.Group, int]] = []
        skipped = 0
        for offer in offers:
            groups = by_offer[offer.id]
            with self._time("aggregate groups"):
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
            query = select(*self.event_columns).where(_E.number.in_(numbers[start : start + 1000]))
            events.update((row.number, row) for row in self.records(session, query, {}))
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
        segments = self.segments(session, contacts)
        awards = self.decide(session, items, segments, self.aggregate_windows)
        return _Plan(period, after, contacts, pending, awards, len(planned) + skipped)

    # -- facts and decisions (both phases) --

    def segments(self, session: Session, contact_ids: Iterable[str]) -> dict[str, list[str]]:
        """The contacts' segments, read once per reader (a run sees a contact's segments
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

    def window_awards(
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
    def counts(
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

    def count_windows(self, session: Session, items: list[_Item], windows: Windows) -> None:
        """Each windowed item's max_awards counts from the database (``db_counts``)."""
        windowed = [item for item in items if item.event.type in windows]
        if windowed:
            db_awards = self.window_awards(session, windowed, windows)
            for item in windowed:
                item.db_counts = self.counts(item, db_awards, windows)

    def decide(
        self,
        session: Session,
        items: list[_Item],
        segments: dict[str, list[str]],
        windows: Windows,
    ) -> list[_NewAward]:
        """Evaluate the items here; the awards they earn (not written yet)."""
        self.count_windows(session, items, windows)
        decisions = self.decider.decide(items, segments, windows)
        return [
            _NewAward(item.event, decision, item.group, item.period)
            for item, found in zip(items, decisions, strict=True)
            for decision in found
        ]


class _Decider:
    """Decides items (``_Item`` with their database counts) with the rules engine; reads
    nothing from the database."""

    def __init__(self, evaluator: Evaluator, timings: dict[str, float] | None) -> None:
        self.evaluator = evaluator
        self.compiled = evaluator.rulesets.compiled
        self.timings = timings
        # An aggregate offer in an exclusive group can lose to a per-event offer of that
        # group matched on the same (carrier) purchase: only then are those evaluated too.
        self.aggregates_grouped = any(
            o.exclusive_group for o in aggregates.aggregate_offers(evaluator.rulesets)
        )

    def _time(self, name: str) -> _Timer:
        return _Timer(self.timings, name)

    def decide(
        self, items: list[_Item], segments: dict[str, list[str]], windows: Windows
    ) -> list[list[AwardDecision]]:
        """Each item's decisions (an aggregate item's: of its own offer only). Items of
        one contact with max_awards windows go in successive waves (performed_on order),
        so each sees the awards the earlier ones earned in this chunk."""
        result: list[list[AwardDecision]] = [[] for _ in items]
        if not items:
            return result
        windowed = [item for item in items if item.event.type in windows]
        if windowed:
            seen: dict[str, int] = defaultdict(int)
            for item in sorted(windowed, key=lambda i: (i.event.performed_on, i.event.number)):
                item.wave = seen[item.event.contact_id]
                seen[item.event.contact_id] += 1
        chunk_awards: dict[tuple[str, str], list[datetime]] = defaultdict(list)
        for wave in sorted({item.wave for item in items}):
            by_kind: dict[tuple[str, bool], list[tuple[int, PreparedEvent]]] = defaultdict(list)
            with self._time("facts"):
                for index, item in enumerate(items):
                    if item.wave != wave:
                        continue
                    counts = item.db_counts
                    if chunk_awards and item.event.type in windows:
                        counts = dict(counts)
                        for offer_id, n in _Reader.counts(item, chunk_awards, windows).items():
                            counts[offer_id] = counts.get(offer_id, 0) + n
                    prepared = self._prepare(item, segments, counts)
                    by_kind[(item.mode, item.offer is not None)].append((index, prepared))
            for (mode, aggregate), pairs in by_kind.items():
                with self._time("engine"):
                    decided = self.evaluator.evaluate_prepared(
                        [prepared for _, prepared in pairs],
                        mode=mode,  # type: ignore[arg-type]
                        aggregates=aggregate,
                    )
                for (index, _), decisions in zip(pairs, decided, strict=True):
                    item = items[index]
                    for decision in decisions:
                        if aggregate and decision.offer_id != item.offer:
                            continue  # an aggregate fact only decides its own offer
                        result[index].append(decision)
                        if decision.beneficiary != "referred" and item.event.type in windows:
                            key = (item.event.contact_id, decision.offer_id)
                            chunk_awards[key].append(item.event.performed_on)
        return result

    def _prepare(
        self, item: _Item, segments: dict[str, list[str]], counts: dict[str, int]
    ) -> PreparedEvent:
        """The item's facts flattened for the engine: a purchase's straight from its
        stored details; an aggregate item's with the period totals of its offer (and only
        the aggregate rulesets when no aggregate offer is in an exclusive group)."""
        event = item.event
        contact_segments = segments.get(event.contact_id, [])
        if item.offer is None and event.type == "purchase":
            fact = purchase_fact(self.compiled, event, contact_segments, counts)
            if fact is not None:
                return prepare_fact(self.compiled, fact)
        facts = build_facts(None, event, contact_segments, counts)  # type: ignore[arg-type]  # it reads no database; the record has every Event field it reads
        if item.offer is None or item.totals is None:
            return prepare(self.compiled, facts)
        facts.period_totals = {item.offer: item.totals}
        return prepare(self.compiled, facts, aggregates=True, per_event=not self.aggregates_grouped)


# ---- reading ahead in a second process ---------------------------------------------------

AHEAD_MIN_EVENTS = 50_000  # a run this big reads and decides ahead in a second process


class _AheadFailed(RuntimeError):
    """The read-ahead process stopped or failed: the worker reads by itself."""


class _AheadProcess:
    """A second process reading and deciding chunks for the worker: the worker sends it
    chunks to do (``send``: events between two cursors, or a list of contacts) and gets
    them back in order (``receive``), decided (``_Decided``) or planned (``_Plan``), as
    msgpack (pickling them cost the worker more). A run is CPU-bound in Python and the
    rules engine, which hold the GIL: a thread does not run beside the worker's writes
    (measured: slower), a process does. Everything it decides is checked again when
    written, like any chunk."""

    def __init__(self, spec: dict[str, Any], timings: dict[str, float] | None) -> None:
        context = multiprocessing.get_context("spawn")  # never fork a threaded process
        self.connection, child = context.Pipe()
        self.timings = timings
        self.sent = 0  # requests not answered yet
        self.process = context.Process(
            target=_ahead_main, args=(child, spec), name="rewards-run-ahead"
        )
        self.process.start()
        child.close()
        # Answers are taken off the pipe as they come: the process never waits for this
        # one to be free (a full pipe would stop it while this one works on a chunk).
        self.answers: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        threading.Thread(target=self._pump, name="rewards-run-ahead-answers", daemon=True).start()

    def _pump(self) -> None:
        try:
            while True:
                self.answers.put(self.connection.recv_bytes())
        except (EOFError, OSError):
            self.answers.put(None)

    def send(self, kind: str, partition: int, period: str, after: Any, until: Any) -> None:
        try:
            self.connection.send_bytes(_ENCODE((kind, partition, period, after, until)))
        except OSError as error:
            raise _AheadFailed(f"the read-ahead process is gone ({error})") from None
        self.sent += 1

    def ready(self) -> bool:
        """Whether an answer is there (``receive`` would not wait)."""
        return not self.answers.empty()

    def receive(self) -> _Decided | _Plan | None:
        """The oldest request's answer (None: it had no events or contacts)."""
        data = self.answers.get()
        if data is None:
            self.answers.put(None)  # for any later call
            raise _AheadFailed("the read-ahead process stopped")
        answer = _ANSWER.decode(data)
        self.sent -= 1
        if self.timings is not None:
            for name, seconds in answer.timings.items():
                self.timings[name] = self.timings.get(name, 0.0) + seconds
        if answer.error is not None:
            raise _AheadFailed(f"the read-ahead process failed:\n{answer.error}")
        if answer.plan is not None:
            return _plan_from_wire(answer.plan)
        return None if answer.decided is None else _from_wire(answer.decided)

    def close(self) -> None:
        try:
            self.connection.send_bytes(b"")  # it stops after the chunks it was sent
        except OSError:  # already gone
            pass
        self.process.join(30)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()
        self.connection.close()


def _ahead_main(connection: Any, spec: dict[str, Any]) -> None:
    """The read-ahead process (``_AheadProcess``): its own database engines, the
    worker's rulesets rebuilt (same offers, same version) on its own rules engine."""
    database = Database(spec["url"])
    if database.is_sqlite:  # its reads cover what the worker's writes do: the same cache

        @sqlalchemy_event.listens_for(database.read_engine, "connect")
        def _cache(connection: Any, _record: Any) -> None:
            connection.execute(f"PRAGMA cache_size=-{CACHE_KIB}")

    timings: dict[str, float] = {}
    reader = _Reader(
        database,
        Evaluator(Rulesets(**spec["rulesets"])),
        EvaluationRun(**spec["run"]),
        spec["chunk_size"],
        spec["contacts_per_chunk"],
        timings,
    )
    idle = _Timer(timings, "read-ahead idle")
    try:
        with _fewer_collections():
            while True:
                with idle:
                    request = connection.recv_bytes()
                if not request:
                    return
                answer = _Answer()
                try:
                    kind, partition, period, after, until = _REQUEST.decode(request)
                    if kind == "events":
                        cursor = None if until is None else (until[0], until[1])
                        decided = reader.read_events(partition, after, cursor)  # type: ignore[arg-type]
                        answer.decided = None if decided is None else _to_wire(decided)
                    else:
                        plan = reader.read_plan(partition, period, after, until)  # type: ignore[arg-type]
                        answer.plan = _plan_to_wire(plan)
                except Exception:
                    answer.error = traceback.format_exc()
                answer.timings = dict(timings)
                timings.clear()
                connection.send_bytes(_ENCODE(answer))
    except (EOFError, OSError):  # the worker is gone
        pass
    finally:
        database.dispose()


# Between the worker and the read-ahead process: msgpack (msgspec).
_ENCODE = msgspec.msgpack.Encoder().encode
# (kind: "events" | "aggregates", partition, period, after, until): events after the
# cursor ``after`` up to the cursor ``until``; or the contacts ``until`` (after ``after``).
_Cursor = tuple[datetime, int]
_REQUEST = msgspec.msgpack.Decoder(tuple[str, int, str, _Cursor | str | None, list[Any] | None])


class _WireAward(msgspec.Struct, array_like=True):
    number: int
    id: str
    contact_id: str
    performed_on: datetime
    raw: str  # the details, for a referral's beneficiaries only
    decision: AwardDecision


class _WireDecided(msgspec.Struct, array_like=True):
    after: tuple[datetime, int] | None
    cursor: tuple[datetime, int]
    marks: list[tuple[int, str, str, int, int, int, int]]
    windowed: list[tuple[int, str, str, datetime, dict[str, int]]]
    awards: list[_WireAward]


class _WireGroup(msgspec.Struct, array_like=True):
    contact_id: str
    key: int
    total_cents: int
    count: int
    quantity_milli: int
    latest: int
    members: list[int]


class _WireAggregateAward(msgspec.Struct, array_like=True):
    number: int  # the carrier purchase
    id: str
    contact_id: str
    performed_on: datetime
    period: str
    group: _WireGroup
    decision: AwardDecision


class _WirePlan(msgspec.Struct, array_like=True):
    period: str
    after: str
    contacts: list[str]
    pending: list[tuple[str, int, int]]
    awards: list[_WireAggregateAward]
    groups: int


class _Answer(msgspec.Struct):
    decided: _WireDecided | None = None
    plan: _WirePlan | None = None
    error: str | None = None
    timings: dict[str, float] = {}


_ANSWER = msgspec.msgpack.Decoder(_Answer)


def _to_wire(decided: _Decided) -> _WireDecided:
    return _WireDecided(
        after=decided.after,
        cursor=decided.cursor,
        marks=decided.marks,
        windowed=[
            (i.event.number, i.event.contact_id, i.event.type, i.event.performed_on, i.db_counts)
            for i in decided.windowed
        ],
        awards=[
            _WireAward(
                number=a.event.number,
                id=a.event.id,
                contact_id=a.event.contact_id,
                performed_on=a.event.performed_on,
                raw=a.event.raw if a.decision.beneficiary != "contact" else "",
                decision=a.decision,
            )
            for a in decided.awards
        ],
    )


def _from_wire(wire: _WireDecided) -> _Decided:
    windowed = [
        _Item(
            event=EventRecord(n, "", kind, contact, None, on, None, True, ""),
            mode="",
            db_counts=counts,
        )
        for n, contact, kind, on, counts in wire.windowed
    ]
    awards = [
        _NewAward(
            EventRecord(a.number, a.id, "", a.contact_id, None, a.performed_on, None, True, a.raw),
            a.decision,
        )
        for a in wire.awards
    ]
    return _Decided(wire.after, wire.cursor, wire.marks, windowed, awards)


def _plan_to_wire(plan: _Plan) -> _WirePlan:
    awards = []
    for award in plan.awards:
        group, event = award.group, award.event
        assert group is not None and award.period is not None
        awards.append(
            _WireAggregateAward(
                number=event.number,
                id=event.id,
                contact_id=event.contact_id,
                performed_on=event.performed_on,
                period=award.period,
                group=_WireGroup(
                    group.contact_id,
                    group.key,
                    group.total_cents,
                    group.count,
                    group.quantity_milli,
                    group.latest,
                    list(group.members),
                ),
                decision=award.decision,
            )
        )
    pending = [(contact, key, changed) for (contact, key), changed in plan.pending.items()]
    return _WirePlan(plan.period, plan.after, plan.contacts, pending, awards, plan.groups)


def _plan_from_wire(wire: _WirePlan) -> _Plan:
    awards = [
        _NewAward(
            EventRecord(
                a.number, a.id, "purchase", a.contact_id, None, a.performed_on, None, True, ""
            ),
            a.decision,
            aggregates.Group(
                contact_id=a.group.contact_id,
                key=a.group.key,
                total_cents=a.group.total_cents,
                count=a.group.count,
                quantity_milli=a.group.quantity_milli,
                latest=a.group.latest,
                members=tuple(a.group.members),
            ),
            a.period,
        )
        for a in wire.awards
    ]
    pending = {(contact, key): changed for contact, key, changed in wire.pending}
    return _Plan(wire.period, wire.after, wire.contacts, pending, awards, wire.groups)


IN_FLIGHT = 3  # chunks out at the read-ahead process at a time


@dataclass
class _Job:
    """A chunk to decide: the events after the cursor ``after`` up to the cursor
    ``until`` (None: at most a chunk, the partition's last), or the contacts ``until``
    (after the contact ``after``)."""

    after: Any
    until: Any
    period: str = ""  # the contacts': their period kind
    result: Any = None
    done: bool = False
    remote: bool = False  # out at the read-ahead process
    dropped: bool = False  # its answer is not wanted any more


class _Shared:
    """A phase's chunks in order, decided by the read-ahead process and, whenever the
    next one to write is not back yet, by the worker itself: the two processes share the
    work whatever its balance (alone, the read-ahead process was the slower one by a
    third, measured on the 1M bench).

    ``bound(frontier)``: events: the next job's ``until`` (the chunk's last event, None
    for the last chunk); contacts (the frontier is (period, contact)): the next job's
    (period, after, contacts), None at the end, period kind after period kind.
    ``local(job)``: its result, here. The next job starts where the previous one ends;
    after an open-ended last chunk of events, where its result ends."""

    def __init__(
        self,
        ahead: _AheadProcess,
        kind: str,
        partition: int,
        after: Any,
        bound: Callable[[Any], Any],
        local: Callable[[_Job], Any],
    ) -> None:
        self.ahead = ahead
        self.kind = kind
        self.partition = partition
        self.bound = bound
        self.local = local
        self.jobs: deque[_Job] = deque()  # not written yet, in order
        self.sent: deque[_Job] = deque()  # out, in the order the answers come
        self.restart(after)

    def restart(self, after: Any) -> None:
        """Forget the jobs not written (they start at the wrong place)."""
        for job in self.jobs:
            job.dropped = True
        self.jobs.clear()
        self.frontier: Any = after  # where the next job starts
        self.known = True  # False: after an open-ended job, until its result is in
        self.ended = False

    def pop(self) -> None:
        """The first job is written."""
        self.jobs.popleft()

    def next(self) -> _Job | None:
        """The first job, with its result (None: no job is left)."""
        while True:
            self._send()
            if not self.jobs:
                if self.sent:  # answers of dropped jobs: read them off
                    self._receive()
                    continue
                return None
            head = self.jobs[0]
            if head.done:
                return head
            if not head.remote:
                self._run_here(head)
            elif self.ahead.ready():
                self._receive()
            else:  # it would wait: work on a later chunk meanwhile, if there is one
                job = next((j for j in self.jobs if not j.remote and not j.done), None)
                if job is None:
                    job = self._make()
                if job is not None:
                    self._run_here(job)
                else:
                    self._receive()

    def _make(self) -> _Job | None:
        if self.ended or not self.known:
            return None
        if self.kind == "aggregates":  # frontier: (period, contact); one kind after another
            found = self.bound(self.frontier)
            if found is None:
                self.ended = True
                return None
            period, after, contacts = found
            job = _Job(after, contacts, period)
            self.frontier = (period, contacts[-1])
        else:
            until = self.bound(self.frontier)
            job = _Job(self.frontier, until)
            if until is None:  # open-ended: the next start is known from its result
                self.known = False
            else:
                self.frontier = until
        self.jobs.append(job)
        return job

    def _send(self) -> None:
        while len(self.sent) < IN_FLIGHT:
            job = next((j for j in self.jobs if not j.remote and not j.done), None)
            if job is None:
                job = self._make()
            if job is None:
                return
            self.ahead.send(self.kind, self.partition, job.period, job.after, job.until)
            job.remote = True
            self.sent.append(job)

    def _receive(self) -> None:
        result = self.ahead.receive()
        job = self.sent.popleft()
        if not job.dropped:
            self._done(job, result)

    def _run_here(self, job: _Job) -> None:
        self._done(job, self.local(job))

    def _done(self, job: _Job, result: Any) -> None:
        job.result, job.done, job.remote = result, True, False
        if job.until is None and self.kind == "events":  # the open-ended last chunk
            if result is None:
                self.ended = True
            else:
                self.frontier, self.known = result.cursor, True


def _next_kind(periods: list[str], period: str) -> tuple[str, str] | None:
    """The frontier at the start of the period kind after ``period`` (None: none)."""
    index = periods.index(period) + 1
    return (periods[index], "") if index < len(periods) else None


def _ahead_spec(
    database: Database,
    rulesets: Rulesets,
    run: EvaluationRun,
    chunk_size: int,
    contacts_per_chunk: int,
) -> dict[str, Any]:
    """What the read-ahead process needs (picklable): ``Rulesets(**spec["rulesets"])``
    rebuilds the worker's rulesets."""
    return {
        "url": database.url,
        "rulesets": {
            "path": rulesets.path,
            "version": rulesets.version,
            "loaded_at": rulesets.loaded_at,
            "files": rulesets.files,
            "definition": rulesets.definition,
            "offers": rulesets.offers,
        },
        "run": {
            "id": run.id,
            "as_of": run.as_of,
            "partitions": run.partitions,
            "ruleset_version": run.ruleset_version,
        },
        "chunk_size": chunk_size,
        "contacts_per_chunk": contacts_per_chunk,
    }


def _reads_ahead(database: Database, run: EvaluationRun) -> bool:
    """A big run of one partition (a run of several has several workers, processes of
    their own already: measured, a read-ahead process each made two workers slower on
    two CPUs), a second CPU, a database another process can open, and a process allowed
    to have children."""
    url = database.url
    in_memory = url.startswith("sqlite") and (":memory:" in url or url.rstrip("/") == "sqlite:")
    return (
        run.events_total >= AHEAD_MIN_EVENTS
        and run.partitions == 1
        and (os.cpu_count() or 1) > 1
        and not in_memory
        and not multiprocessing.current_process().daemon
    )


CHECKPOINT_EVERY = 1.0  # seconds between the checkpointing thread's checkpoints


class _Checkpoints:
    """SQLite: a thread copying the WAL into the database file (passive checkpoints, on a
    connection of its own) while the worker writes. The copy and its fsync run in SQLite
    without the GIL, beside the worker instead of inside its commits."""

    def __init__(self, database: Database) -> None:
        self.connection = database.write_engine.connect()
        self.stopping = threading.Event()
        self.thread = threading.Thread(
            target=self._run, name="rewards-run-checkpoints", daemon=True
        )
        self.thread.start()

    def _run(self) -> None:
        driver = self.connection.connection.dbapi_connection
        assert driver is not None
        while not self.stopping.wait(CHECKPOINT_EVERY):
            try:
                driver.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except Exception:  # only an optimisation: the commits checkpoint anyway
                log.debug("checkpoint failed", exc_info=True)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.connection.close()


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
        self.reader = _Reader(
            database, self.evaluator, run, chunk_size, contacts_per_chunk, hooks.timings
        )
        self.zone = rulesets.time_zone
        self.periods = aggregates.periods_in_use(rulesets)
        self.aggregate_offers = aggregates.aggregate_offers(rulesets)
        self.postgres = database.write_engine.dialect.name == "postgresql"
        # Statements built once per worker (building one costs more than running it).
        self.inserts = _Inserts(database.write_engine.dialect)
        self.wallet_update = (
            update(Wallet.__table__)  # type: ignore[attr-defined]
            .where(_W.id == bindparam("wallet"))
            .values(balance_cents=_W.balance_cents + bindparam("delta"))
        )
        self.chunks = 0
        self.award_ids = _AwardIds()
        self.connection: Connection | None = None  # see _connection
        self.restore: list[tuple[str, int]] = []
        self.checkpoints: _Checkpoints | None = None
        self.pending_written: set[tuple[str, str, int]] = set()  # see _pending_committed
        self.pending_chunk: set[tuple[str, str, int]] = set()
        self.ahead: _AheadProcess | None = None  # see _event_phase
        self.ahead_failed = False
        # The end of the last chunk written from the read-ahead process: where reading in
        # the worker goes on if that process fails.
        self._resume_after: tuple[datetime, int] | None = None
        self._resume_contact = (0, "")  # the same in the aggregate phase: (period kind, contact)

    def _time(self, name: str) -> _Timer:
        return _Timer(self.hooks.timings, name)

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
        run_id = self.run.id
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
            award_id = self.award_ids.next()
            offer_id = decision.offer_id
            ledger_rows.append(
                (entry_id, wallet[0], "award", cents, wallet[1], event.id, offer_id,
                 None, award_id, None, now)
            )  # fmt: skip
            lines = (
                None
                if decision.lines is None
                else [
                    {"index": line.index, "sku": line.sku, "amount": str(line.amount)}
                    for line in decision.lines
                ]
            )
            # instant_spend False: the purchase is over, a run credits the wallet.
            award_rows.append(
                (award_id, event.id, offer_id, decision.offer_name, decision.classification,
                 decision.beneficiary, contact_id, cents, lines, False,
                 decision.ruleset_version, event.performed_on, entry_id, now)
            )  # fmt: skip
            group = award.group
            if group is not None:
                aggregate_rows.append(
                    (award_id, run_id, offer_id, group.contact_id, award.period, group.key,
                     group.total_cents, group.count, group.quantity_milli, None, None, now)
                )  # fmt: skip
            written.append((award, award_id, cents))
        self.inserts.ledger.run(session, ledger_rows)
        self.inserts.awards.run(session, award_rows)
        session.execute(
            self.wallet_update,
            [
                {"wallet": wallet_id, "delta": after - before}
                for wallet_id, after, before in wallets.values()
                if after != before
            ],
        )
        self.inserts.aggregates.run(session, aggregate_rows)
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

    def _pending_committed(self) -> None:
        """The chunk's pending periods are in the database: later chunks of the event
        phase need not write them again (a run's purchases come in time order, so most
        of a chunk's periods were written by the chunks before it). Nothing deletes them
        before the aggregate phase, which starts by forgetting them; the set is bounded."""
        if len(self.pending_written) + len(self.pending_chunk) > PENDING_MEMORY:
            self.pending_written.clear()
        self.pending_written |= self.pending_chunk
        self.pending_chunk = set()

    def _connection(self) -> Connection:
        """The worker's own write connection, held until ``close``. SQLite: its page cache
        is ``CACHE_KIB`` instead of ~2 MB (a run's inserts land all over big indexes; re-reading
        their pages was a third of a chunk's writing), and its commits leave the WAL to
        a checkpointing thread (``_Checkpoints``) until it holds ``WAL_PAGES`` pages
        (checkpointing in the commits was the biggest cost of a chunk); the settings are
        put back before the connection returns to the pool, so requests' connections
        keep the defaults."""
        if self.connection is None:
            connection = self.database.write_engine.connect()
            if not self.postgres:
                driver = connection.connection.dbapi_connection
                assert driver is not None
                self.restore = [
                    (name, driver.execute(f"PRAGMA {name}").fetchone()[0])
                    for name in ("cache_size", "wal_autocheckpoint", "journal_size_limit")
                ]
                driver.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
                driver.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
                driver.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
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
        changed (``_Stale``) or PostgreSQL refused a lock within the run's lock timeout."""
        for attempt in range(_RETRIES):
            try:
                self.pending_chunk = set()
                with self._write_session() as session:
                    done = work(session)
                    committing = time.perf_counter()
                self._pending_committed()
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
        self.pending_written.clear()
        self._event_phase(partition)
        self.pending_written.clear()  # the aggregate phase deletes pending periods
        if self.aggregate_offers:
            self._refresh_statistics()
        if self.periods:
            self._aggregate_phase(partition)
        table = RunPartition.__table__  # type: ignore[attr-defined]
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
            except _AheadFailed as error:
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

    def _events_read_ahead(self, partition: int, ahead: _AheadProcess) -> None:
        reader = self.reader
        shared = _Shared(
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
            written = self._write_decided(partition, decided)
            if written is None:
                return
            if written.cursor != decided.cursor:  # read again (stale), ended elsewhere
                shared.restart(written.cursor)
            self._resume_after = written.cursor

    def _ahead_process(self) -> _AheadProcess | None:
        if self.ahead is None and not self.ahead_failed and _reads_ahead(self.database, self.run):
            spec = _ahead_spec(
                self.database, self.rulesets, self.run, self.chunk_size, self.contacts_per_chunk
            )
            try:
                self.ahead = _AheadProcess(spec, self.hooks.timings)
            except Exception as error:  # cannot start one here: read in the worker
                log.warning("evaluation run %s: no read-ahead process (%s)", self.run.id, error)
                self.ahead_failed = True
        return self.ahead

    def _stop_ahead(self) -> None:
        ahead, self.ahead = self.ahead, None
        if ahead is not None:
            self.ahead_failed = True
            ahead.close()

    def _write_decided(self, partition: int, decided: _Decided) -> _Decided | None:
        """Write a decided chunk in one transaction; when what it was decided on moved
        (``_Stale``), read and decide it again here and write that. Returns the chunk
        written (None: nothing was left to read)."""
        ready = [decided]
        written: list[_Decided] = []

        def work(session: Session) -> ChunkDone | None:
            chunk = ready.pop() if ready else self.reader.read_events(partition, decided.after)
            if chunk is None:
                return None
            written[:] = [chunk]
            return self._write_events(session, chunk, partition)

        return written[0] if self._transaction(work) is not None else None

    def _write_events(self, session: Session, chunk: _Decided, partition: int) -> ChunkDone:
        """In the write transaction (``session``): lock, re-check what the decisions
        depend on (``_Stale`` when it moved), mark the events and write the awards."""
        marks, windowed, awards = chunk.marks, chunk.windowed, chunk.awards
        windows = self.reader.event_windows
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
                again = self.reader.window_awards(session, windowed, windows)
                if any(self.reader.counts(i, again, windows) != i.db_counts for i in windowed):
                    raise _Stale
        with self._time("mark"):
            pending = self._mark(session, marks)
        with self._time("persist"):
            written = self._persist(session, awards)
        done = self._record(session, partition, "events", len(marks), written)
        self.pending_chunk = pending  # in pending_written once committed
        return done

    def _mark(self, session: Session, marks: list[_Mark]) -> set[tuple[str, str, int]]:
        """The chunk's events are evaluated; their purchases' periods become pending.
        Returns the pending (contact, period, key) written (see ``pending_written``)."""
        rows = []
        pending: set[tuple[str, str, int]] = set()
        run_id = self.run.id
        for number, contact_id, kind, day, week, weekday, minute in marks:
            rows.append((number, run_id, contact_id, day, week, weekday, minute))
            if kind == "purchase":
                for period in self.periods:
                    pending.add((contact_id, period, aggregates.key_of(period, day, week)))
        self.inserts.marks.run(session, rows)
        pending -= self.pending_written
        aggregates.mark_pending(session, pending)
        return pending

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
        """Chunk after chunk of contacts (``contacts_per_chunk``, in id order), period kind
        after period kind, each in one write transaction; a big run's are planned in the
        read-ahead process meanwhile (the next kind's while this one's are written:
        different offers and pending rows)."""
        self._resume_contact = (0, "")
        ahead = self._ahead_process()
        if ahead is not None:
            try:
                self._aggregates_read_ahead(partition, ahead)
                return
            except _AheadFailed as error:
                log.warning("evaluation run %s: %s; reading in the worker", self.run.id, error)
                self._stop_ahead()
        first, after = self._resume_contact
        for index in range(first, len(self.periods)):
            period = self.periods[index]
            while (last := self._write_aggregates(partition, period, after, None)) is not None:
                self._check_stop()
                after = last
            after = ""

    def _aggregates_read_ahead(self, partition: int, ahead: _AheadProcess) -> None:
        reader, periods = self.reader, self.periods

        def contacts(frontier: tuple[str, str] | None) -> tuple[str, str, list[str]] | None:
            if frontier is None:
                return None
            period, after = frontier
            with self.database.session(write=False) as session:
                for kind in periods[periods.index(period) :]:
                    found = reader.pending_contacts(session, partition, kind, after)
                    if found:
                        return kind, after, found
                    after = ""
            return None

        shared = _Shared(
            ahead,
            "aggregates",
            partition,
            (periods[0], ""),
            contacts,
            lambda job: reader.read_plan(partition, job.period, job.after, job.until),
        )
        while True:
            self._check_stop()
            with self._time("waiting for plans"):
                job = shared.next()
            if job is None:
                return
            plan = job.result
            shared.pop()
            last = self._write_aggregates(partition, plan.period, plan.after, plan)
            if last is None:  # none left of this kind after all: the next kind
                shared.restart(_next_kind(periods, plan.period))
                continue
            if last != plan.contacts[-1]:  # planned again here, ended elsewhere
                shared.restart((plan.period, last))
            self._resume_contact = (periods.index(plan.period), last)

    def _write_aggregates(
        self, partition: int, period: str, after: str, plan: _Plan | None
    ) -> str | None:
        """The chunk of contacts after ``after`` in one write transaction (their rows
        locked on PostgreSQL: cancellations of their purchases wait). ``plan``: planned
        by the read-ahead process; written if the contacts and their pending periods are
        what it was planned on (a cancellation touching them counts a change), else
        planned again here. Returns the chunk's last contact (None: none was left)."""
        reader = self.reader
        last: list[str] = []

        def work(session: Session) -> ChunkDone | None:
            contacts = reader.pending_contacts(session, partition, period, after)
            if not contacts:
                return None
            last[:] = contacts[-1:]
            self._begin_writing(session)
            self._lock_contacts(session, contacts)
            chosen = plan
            if chosen is not None:
                closed_before, _, _ = reader.aggregate_scope(partition, period)
                with self._time("aggregate groups"):
                    pending = aggregates.pending_periods(session, period, closed_before, contacts)
                if chosen.contacts != contacts or chosen.pending != pending:
                    chosen = None
            if chosen is None:
                chosen = reader.plan_aggregates(session, partition, period, after, contacts)
            return self._write_plan(session, partition, period, chosen)

        return last[0] if self._transaction(work) is not None else None

    def _write_plan(self, session: Session, partition: int, period: str, plan: _Plan) -> ChunkDone:
        """A chunk's aggregate awards with their links; its pending periods are done."""
        closed_before, _, _ = self.reader.aggregate_scope(partition, period)
        with self._time("aggregate persist"):
            written = self._persist(session, plan.awards)
            links = []
            for award, award_id, _ in written:
                assert award.group is not None
                links += aggregates.link_rows(award.decision.offer_id, award_id, award.group)
            self.inserts.links.run(session, links)
            aggregates.clear_pending(session, period, closed_before, plan.contacts)
        return self._record(
            session, partition, f"aggregates:{period}", 0, written, groups=plan.groups
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
        # The other purchases of that period are unrewarded again: the period is pending.
        aggregates.repend(session, {(aggregate.contact_id, aggregate.period, aggregate.period_key)})
        session.execute(
            AggregateLink.__table__.delete().where(L.award_id == award_id)  # type: ignore[attr-defined]
        )
    _touch_own_periods(session, event)
    session.flush()
    return reversals


def _touch_own_periods(session: Session, event: Event) -> None:
    """The cancelled purchase's own periods, when pending, count a change: a run that
    decided them outside its write transaction (the read-ahead process) must decide
    them again without it."""
    mark = session.get(EvaluatedEvent, event.number)
    if mark is None:  # never evaluated by a run: part of no aggregate
        return
    aggregates.touch_pending(
        session,
        {
            (event.contact_id, period, aggregates.key_of(period, mark.local_day, mark.local_week))
            for period in aggregates.PERIODS  # whatever rulesets the running run has
        },
    )


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
