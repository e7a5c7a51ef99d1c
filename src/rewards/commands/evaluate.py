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
from typing import IO, Any

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
    from rewards.engine import Evaluator, load_rulesets
    from rewards.runtime.context import Runtime
    from rewards.schemas import SchemaRegistry

    return Runtime(
        settings=settings,
        evaluator=Evaluator(load_rulesets(settings.rulesets_dir)),
        schemas=SchemaRegistry(),
    )


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


def _duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class ProgressBar:
    """One line on stderr, redrawn at most 5 times a second (a new line every 10 s when
    stderr is not a terminal)."""

    WIDTH = 24

    def __init__(self, stream: IO[str], total: int, started: float) -> None:
        self.stream = stream
        self.total = total
        self.started = started
        self.tty = stream.isatty()
        self.last = 0.0
        self.drawn = False

    def update(self, done: int, awards: int, phase: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < (0.2 if self.tty else 10.0):
            return
        self.last = now
        elapsed = max(now - self.started, 1e-6)
        rate = done / elapsed
        if phase == "events":
            share = done / self.total if self.total else 1.0
            filled = int(self.WIDTH * min(share, 1.0))
            eta = (self.total - done) / rate if rate > 0 else 0.0
            line = (
                f"evaluating [{'#' * filled}{'-' * (self.WIDTH - filled)}] {share:6.1%} "
                f"{done:,}/{self.total:,} events  {rate:,.0f} ev/s  ETA {_duration(eta)}  "
                f"awards {awards:,}"
            )
        else:
            line = (
                f"{phase.replace(':', ' ')}  {done:,} events  {rate:,.0f} ev/s  "
                f"elapsed {_duration(elapsed)}  awards {awards:,}"
            )
        if self.tty:
            self.stream.write(f"\r\x1b[K{line}")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn and self.tty:
            self.stream.write("\n")
            self.stream.flush()


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
        bar = None if args.no_progress else ProgressBar(sys.stderr, started.events_total, clock)

        def progress(done: runs.ChunkDone) -> None:
            if bar is None:
                return
            with database.session(write=False) as session:
                now = runs.get_run(session, done.run_id)
            bar.update(now.events_evaluated, now.awards, done.phase)

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
            print(f"\nrewards evaluate: {type(error).__name__}: {error}", file=sys.stderr)
        for child in children:
            child.join()
        with database.session(write=False) as session:
            result = runs.get_run(session, started.id)
        if bar is not None:
            bar.update(result.events_evaluated, result.awards, "events", force=True)
            bar.close()
        print(summary(result, runtime.rulesets.definition.currency, time.monotonic() - clock))
        return 0 if result.status == "finished" else 1
    finally:
        database.dispose()
