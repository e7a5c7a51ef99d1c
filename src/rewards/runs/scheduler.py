"""Scheduled evaluation runs inside ``rewards serve`` (issue 5).

With ``REWARDS_EVALUATION_INTERVAL`` (seconds; ``Settings.evaluation_interval_seconds``)
above 0, a daemon thread starts an evaluation run every interval, the first one interval
after start-up. Every server process has its own schedule; the run lock lets one run at
a time, so the others simply skip their turn. ``stop`` (application shutdown) asks the
schedule and any run started by this process (schedule or ``POST
/v1/evaluation-runs``) to stop after its current chunk, and waits for them: an
interrupted run is marked failed, and the next run picks up where it stopped.
"""

from __future__ import annotations

import logging
import threading
import weakref

from rewards import runs
from rewards.db.database import Database
from rewards.runtime.context import Runtime

log = logging.getLogger("rewards.scheduler")

_schedules: weakref.WeakKeyDictionary[Database, tuple[threading.Thread, threading.Event]] = (
    weakref.WeakKeyDictionary()
)


def interval_seconds(runtime: Runtime) -> float:
    """The configured interval (0: no schedule). Read from the settings field
    ``evaluation_interval_seconds`` when it exists."""
    value = getattr(runtime.settings, "evaluation_interval_seconds", 0) or 0
    return max(float(value), 0.0)


def tick(runtime: Runtime, database: Database, stop: threading.Event | None = None) -> str | None:
    """One scheduled turn: start and execute a run unless one is running. The run's id,
    or None when it was skipped."""
    try:
        run = runs.start_run(database, runtime, source="schedule")
    except runs.RunInProgress as busy:
        log.info("scheduled evaluation run skipped: %s", busy.detail)
        return None
    try:
        done = runs.execute_run(database, runtime, run.id, hooks=runs.RunHooks(stop=stop))
    except Exception:  # recorded as failed by execute_run; the schedule goes on
        return run.id
    log.info(
        "scheduled evaluation run %s %s: %d events, %d awards",
        done.id,
        done.status,
        done.events_evaluated,
        done.awards,
    )
    return run.id


def _loop(runtime: Runtime, database: Database, interval: float, stop: threading.Event) -> None:
    while not stop.wait(interval):
        try:
            tick(runtime, database, stop)
        except Exception:
            log.exception("scheduled evaluation run could not start")


def start(runtime: Runtime, database: Database) -> None:
    """Start the schedule when an interval is configured."""
    interval = interval_seconds(runtime)
    if interval <= 0 or database in _schedules:
        return
    stop = threading.Event()
    thread = threading.Thread(
        target=_loop, args=(runtime, database, interval, stop), name="rewards-schedule", daemon=True
    )
    _schedules[database] = (thread, stop)
    thread.start()
    log.info("evaluation runs scheduled every %s s", interval)


def stop(runtime: Runtime, database: Database) -> None:
    """Stop the schedule and this process's background runs (after their current chunk)."""
    schedule = _schedules.pop(database, None)
    if schedule is not None:
        thread, stopping = schedule
        stopping.set()
        thread.join(30)
    runs.stop_background_runs(database)
