"""``rewards evaluate [--as-of ...] [--workers N]``: an evaluation run, now, in this process.

Reads the same ``REWARDS_*`` settings as ``rewards serve`` (database, rulesets), upgrades
the schema, starts a run (exit status 3 when another run is running), shows a progress
bar on stderr (events/s, ETA) and prints a summary table on stdout. Exit status 0 when
the run finished, 1 when it failed. ``--workers N`` starts N-1 more worker processes
that claim contact partitions of the same run (useful on PostgreSQL; see
docs/scale-out.md).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from datetime import datetime
from typing import Any

from rewards.commands.progress import ProgressBar
from rewards.runtime.private_logs import describe
from rewards.settings import Settings


def _timestamp(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an RFC 3339 timestamp with a zone")
    return moment


def register(commands: Any) -> None:
    """Add the sub-command to ``commands`` (an argparse sub-parsers object)."""
    parser = commands.add_parser(
        "evaluate",
        help="run an evaluation run now (batch offers, period aggregates)",
        description="Evaluate every posted event up to --as-of that no run evaluated yet "
        "(batch offers; every offer for events not evaluated on intake) and the period "
        "aggregates of closed periods.",
    )
    parser.add_argument(
        "--as-of",
        type=_timestamp,
        default=None,
        help="RFC 3339 timestamp with zone (default: now; later is taken as now)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes sharing the run (default 1)"
    )
    parser.add_argument(
        "--chunk-size", type=int, default=2000, help="events per transaction (default 2000)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.set_defaults(run=run)


def _runtime(settings: Settings) -> Any:
    from rewards.intake.process import build_runtime

    return build_runtime(settings)


def _worker_process(run_id: str, chunk_size: int) -> None:
    """Another worker of the run, in its own process (its own engine thread)."""
    from rewards import runs
    from rewards.db.database import Database

    settings = Settings.from_env()
    database = Database(settings.database_url)
    try:
        runs.execute_run(
            database,
            _runtime(settings),
            run_id,
            worker=f"cli-{os.getpid()}",
            chunk_size=chunk_size,
        )
    finally:
        database.dispose()


def summary(run: Any, currency: str, elapsed: float) -> str:
    """The table printed at the end of a run."""
    rate = run.events_evaluated / elapsed if elapsed > 0 else 0.0
    rows = [
        ("status", run.status + (f" ({run.error})" if run.error else "")),
        ("as of", run.as_of.isoformat()),
        ("rulesets", run.ruleset_version),
        ("events", f"{run.events_evaluated:,} evaluated ({run.events_total:,} pending at start)"),
        ("period groups", f"{run.aggregate_groups:,} in range"),
        ("awards", f"{run.awards:,}, {currency} {run.total_awarded:,.2f}"),
        ("elapsed", f"{elapsed:.1f} s ({rate:,.0f} events/s)"),
    ]
    lines = [f"evaluation run {run.id}"]
    lines += [f"  {name:<14} {value}" for name, value in rows]
    if run.offers:
        width = max(len("offer"), *(len(o.offer_id) for o in run.offers))
        lines.append("")
        lines.append(f"  {'offer':<{width}}  {'awards':>10}  {'amount':>14}")
        for offer in run.offers:
            lines.append(
                f"  {offer.offer_id:<{width}}  {offer.awards:>10,}  {offer.total_awarded:>14,.2f}"
            )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from rewards import runs
    from rewards.db.database import Database
    from rewards.db.migrate import upgrade
    from rewards.runtime import history

    if args.workers < 1 or args.workers > 16:
        print("rewards evaluate: --workers must be 1..16", file=sys.stderr)
        return 2
    if args.chunk_size < 1:
        print("rewards evaluate: --chunk-size must be at least 1", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    database = Database(settings.database_url)
    try:
        upgrade(database.write_engine)
        runtime = _runtime(settings)
        history.record_load(
            database, runtime, runtime.rulesets, source="cli", loaded_by="rewards evaluate"
        )
        try:
            started = runs.start_run(
                database,
                runtime,
                as_of=args.as_of,
                partitions=runs.partitions_for(args.workers),
                source="cli",
            )
        except runs.RunInProgress as busy:
            print(f"rewards evaluate: {busy.detail}", file=sys.stderr)
            return 3
        clock = time.monotonic()
        bar = (
            None
            if args.no_progress
            else ProgressBar(sys.stderr, "events", "ev", extra="awards {task.fields[awards]:,}")
        )

        last_phase = ["events"]

        def show(done: int, awards: int, phase: str) -> None:
            last_phase[0] = phase
            if bar is None:
                return
            if phase == "events":  # events pending at the start, and any that came since
                bar.update("evaluating", done, max(started.events_total, done), awards=awards)
            else:  # the period aggregates: how many groups is not known ahead
                bar.update("period aggregates", done, None, awards=awards)

        def progress(done: runs.ChunkDone) -> None:
            if bar is None:
                return
            with database.session(write=False) as session:
                now = runs.get_run(session, done.run_id)
            show(now.events_evaluated, now.awards, done.phase)

        children = [
            multiprocessing.get_context("spawn").Process(
                target=_worker_process, args=(started.id, args.chunk_size), daemon=True
            )
            for _ in range(args.workers - 1)
        ]
        for child in children:
            child.start()
        try:
            result = runs.execute_run(
                database,
                runtime,
                started.id,
                worker=f"cli-{os.getpid()}",
                chunk_size=args.chunk_size,
                hooks=runs.RunHooks(progress=progress),
            )
        except Exception as error:  # recorded as failed
            print(f"\nrewards evaluate: {describe(error)}", file=sys.stderr)
        for child in children:
            child.join()
        with database.session(write=False) as session:
            result = runs.get_run(session, started.id)
        show(result.events_evaluated, result.awards, last_phase[0])  # the final count
        if bar is not None:
            bar.close()
        print(summary(result, runtime.rulesets.definition.currency, time.monotonic() - clock))
        return 0 if result.status == "finished" else 1
    finally:
        database.dispose()
