"""What every part of an evaluation run shares: the run's answer (``EvaluationRunOut``),
the hooks, the errors and the chunk sizes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import msgspec
from sqlalchemy import select
from sqlmodel import Session, col

from rewards.db.run_tables import EvaluationRun, RunOfferTotal
from rewards.domain.money import Money, MoneyStruct, from_cents
from rewards.errors import refusal

STALE_AFTER = timedelta(minutes=2)  # no heartbeat for this long: the run's process died
# Events per chunk (per-event phase): one write transaction each. Its random index pages
# are written at each commit, so a bigger chunk writes fewer per event (5,000: about a
# quarter less commit time than 2,000 on the 1M bench) for a longer write lock (~0.25 s
# on that bench, about an aggregate chunk's).
CHUNK_SIZE = 5000
# Contacts per chunk (aggregate phase): one write transaction each, for one closed
# period. A slice of up to ``writing.PLAN_CHUNKS`` chunks is planned from one read of
# the period's purchases. On the 1M bench a month's chunk writes about 2,000 awards and
# 20,000 links (~0.2 s of write lock).
CONTACTS_PER_CHUNK = 2500

# SQLite: the page cache (KiB) of the worker's write connection. 50 MB: the 1M bench runs
# as fast as with 100 MB (128.9 s against 142.7 s, within the noise) in 100 MB less RSS
# for both processes. The read-ahead process keeps SQLite's default (its reads go in
# time order).
CACHE_KIB = 50_000

RunInProgress = refusal("run_in_progress", "An evaluation run is already running", 409)
RunNotFound = refusal("run_not_found", "Evaluation run not found", 404)


class RunAborted(RuntimeError):
    """The run is no longer running (failed elsewhere or taken over): stop working on it."""


class RunInterrupted(RuntimeError):
    """A stop was requested (server shutdown); the run is marked failed."""


class Stale(Exception):
    """What the chunk was decided on changed before the write: read the chunk again."""


# ---- wire structs ---------------------------------------------------------------------


class EvaluationRunIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    as_of: datetime | None = None


class RunOfferOut(MoneyStruct, kw_only=True):
    offer_id: str
    awards: int
    total_awarded: Money


class EvaluationRunOut(MoneyStruct, kw_only=True, omit_defaults=True):
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
    total_awarded: Money
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
        select(RunOfferTotal)
        .where(col(RunOfferTotal.run_id) == run_id)
        .order_by(col(RunOfferTotal.offer_id))
    ).all()
    return run_out(run, list(offers))


def recent_runs(session: Session, limit: int = 20) -> list[EvaluationRunOut]:
    """The latest runs, newest first (without their per-offer totals)."""
    rows = session.scalars(
        select(EvaluationRun).order_by(col(EvaluationRun.started_at).desc()).limit(limit)
    ).all()
    return [run_out(run) for run in rows]


# ---- hooks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkDone:
    """What one chunk did (passed to the hooks)."""

    run_id: str
    partition: int
    phase: str  # "events" or "aggregates"
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
