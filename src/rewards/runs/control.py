"""Starting a run, claiming its partitions, executing it (in this thread or in the
background of ``rewards serve``) and finishing it."""

from __future__ import annotations

import logging
import threading
import uuid
import weakref
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, and_, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from rewards.db import outbox
from rewards.db.database import Database
from rewards.db.run_tables import EvaluationRun, RunPartition
from rewards.db.tables import Event
from rewards.db.types import table_of
from rewards.domain.money import from_cents
from rewards.runs.common import (
    CHUNK_SIZE,
    CONTACTS_PER_CHUNK,
    STALE_AFTER,
    EvaluationRunOut,
    RunAborted,
    RunHooks,
    RunInProgress,
    RunInterrupted,
    RunNotFound,
    get_run,
    run_out,
)
from rewards.runs.deciding import fewer_collections
from rewards.runs.records import HEX_DIGITS, pending_events_filter
from rewards.runs.writing import Worker
from rewards.runtime.context import Runtime
from rewards.runtime.private_logs import describe
from rewards.wire import RunFinished

log = logging.getLogger("rewards.runs")


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("as_of must carry a time zone")
    return moment.astimezone(UTC)


def partitions_for(workers: int) -> int:
    """How many contact partitions a run shared by ``workers`` processes gets: two per
    worker (a worker that finishes early takes another), at most one per hex digit."""
    return 1 if workers == 1 else min(2 * workers, len(HEX_DIGITS))


def start_run(
    database: Database,
    runtime: Runtime,
    *,
    as_of: datetime | None = None,
    partitions: int = 1,
    source: str = "api",
) -> EvaluationRunOut:
    """Create a running run (refused with RunInProgress while another one runs)."""
    if not 1 <= partitions <= len(HEX_DIGITS):
        raise ValueError(f"partitions must be 1..{len(HEX_DIGITS)}")
    if runtime.before_run is not None:
        with database.transaction() as session:
            runtime.before_run(session, runtime)
    now = runtime.now()
    as_of = min(_aware(as_of), now) if as_of is not None else now
    version = runtime.rulesets.version
    with database.transaction() as session:
        session.execute(
            update(EvaluationRun)
            .where(
                col(EvaluationRun.running_lock) == 1,
                col(EvaluationRun.heartbeat_at) < now - STALE_AFTER,
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
                select(EvaluationRun).where(col(EvaluationRun.running_lock) == 1)
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
                .select_from(table_of(Event))
                .where(*pending_events_filter(as_of))
            )
            or 0
        )
        session.flush()
        return run_out(run)


def _fail(database: Database, run_id: str, error: str, now: datetime) -> None:
    with database.transaction() as session:
        session.execute(
            update(EvaluationRun)
            .where(col(EvaluationRun.id) == run_id, col(EvaluationRun.status) == "running")
            .values(status="failed", running_lock=None, finished_at=now, error=error[:1000])
        )


def _finish_if_complete(database: Database, run_id: str, now: datetime) -> None:
    P = table_of(RunPartition).c
    with database.transaction() as session:
        finished = session.execute(
            update(EvaluationRun)
            .where(
                col(EvaluationRun.id) == run_id,
                col(EvaluationRun.status) == "running",
                ~exists().where(P.run_id == run_id, P.state != "done"),
            )
            .values(status="finished", running_lock=None, finished_at=now, heartbeat_at=now)
        )
        run = session.get(EvaluationRun, run_id) if cast("CursorResult[Any]", finished).rowcount == 1 else None
        if run is not None:  # this call finished it: told once
            told = RunFinished(
                run_id=run.id,
                status="finished",
                as_of=run.as_of,
                events_evaluated=run.events_evaluated,
                awards=run.awards,
                awarded=from_cents(run.total_awarded_cents),
            )
            outbox.emit(session, [outbox.notice("evaluation_run.finished", None, told)], now)


def _claim(database: Database, run_id: str, worker: str, now: datetime) -> int | None:
    """A partition of the run for this worker: a pending one, or one whose worker died."""
    partitions = table_of(RunPartition)
    P = partitions.c
    with database.transaction() as session:
        status = session.scalar(
            select(col(EvaluationRun.status)).where(col(EvaluationRun.id) == run_id)
        )
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
            update(partitions)
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
            engine = Worker(database, runtime, run, name, chunk_size, contacts_per_chunk, hooks)
            try:
                with fewer_collections():
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
        _fail(database, run_id, describe(error), runtime.now())  # shown to admins: no values
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
