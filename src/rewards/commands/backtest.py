"""``rewards backtest --rulesets NEW_DIR --from D1 --to D2``: what would a change have cost?

Replays the recorded events of the window (read only) against the rulesets folder in
service (``--current``, default REWARDS_RULESETS_DIR) and the new folder, and prints per
offer the change touches (its definition or its cost differs; ``--all``: every offer) the
awards count and amount under each and the difference, with their total. Dates are business
days in the current definition's time zone, both included (``--from 2026-03-01 --to
2026-03-31`` is March); RFC 3339 timestamps are taken as they are (``--to`` excluded).
"""

from __future__ import annotations

import argparse
import sys
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from rewards.commands.progress import ProgressBar
from rewards.settings import Settings

_encode = msgspec.json.Encoder(decimal_format="number").encode


def register(commands: Any) -> None:
    backtest = commands.add_parser(
        "backtest",
        help="replay recorded events against the current and a new ruleset folder",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    backtest.add_argument("--rulesets", type=Path, required=True, help="the new ruleset folder")
    backtest.add_argument(
        "--current", type=Path, help="the folder in service (default: REWARDS_RULESETS_DIR)"
    )
    backtest.add_argument("--from", dest="start", required=True, help="YYYY-MM-DD or RFC 3339")
    backtest.add_argument("--to", dest="end", required=True, help="YYYY-MM-DD or RFC 3339")
    backtest.add_argument(
        "--database",
        help="the database to read, a URL (default: REWARDS_DATABASE_URL, else "
        "sqlite:///rewards.db in the working folder); it must exist: nothing is created",
    )
    backtest.add_argument("--format", choices=["table", "json"], default="table")
    backtest.add_argument(
        "--all",
        dest="all_offers",
        action="store_true",
        help="list the offers the change does not touch too (default: only the changed ones "
        "- definition or cost - with their total; --format json always lists every offer)",
    )
    progress = backtest.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress",
        action="store_true",
        default=None,
        help="show the progress bar on stderr even when it is not a terminal (then a line "
        "every 10 s and the last state); default: on a terminal only",
    )
    progress.add_argument(
        "--no-progress", dest="progress", action="store_false", help="never show it"
    )
    backtest.set_defaults(run=run_backtest)


class _Usage(ValueError):
    pass


def _moment(text: str, zone: Any, *, end: bool) -> datetime:
    try:
        if len(text) == 10:
            day = date.fromisoformat(text) + timedelta(days=1 if end else 0)
            return datetime.combine(day, datetime.min.time(), tzinfo=zone)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _Usage(f"{text!r} is not a date (YYYY-MM-DD) or an RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        raise _Usage(f"{text!r} needs a zone (Z or +02:00)")
    return moment


def _signed(value: Any) -> str:
    return f"+{value}" if value > 0 else str(value)


def _row(label: str, counts: tuple[Any, Any, Any, Any, Any, Any]) -> tuple[str, ...]:
    current_count, current_amount, new_count, new_amount, count_diff, amount_diff = counts
    return (
        label,
        str(current_count),
        str(current_amount),
        str(new_count),
        str(new_amount),
        _signed(count_diff),
        _signed(amount_diff),
    )


def render_table(
    result: Any, current: Path, new: Path, zone: str, *, all_offers: bool = False
) -> str:
    """The changed offers (definition or cost) with their total, then (``all_offers``)
    the others, then the total of every offer."""
    rows: list[tuple[str, ...]] = [
        ("offer", "current", "", "new", "", "difference", ""),
        ("", "count", "amount", "count", "amount", "count", "amount"),
    ]
    changed = [o for o in result.offers if o.changed]
    unchanged = [o for o in result.offers if not o.changed]
    for o in changed + (unchanged if all_offers else []):
        rows.append(
            _row(
                o.offer_id,
                (
                    o.current_count,
                    o.current_amount,
                    o.new_count,
                    o.new_amount,
                    o.count_difference,
                    o.amount_difference,
                ),
            )
        )
    footer = len(rows)

    def total(offers: list[Any]) -> tuple[Any, Any, Any, Any, Any, Any]:
        zero = Decimal("0.00")
        current_count = sum(o.current_count for o in offers)
        current_amount = sum((o.current_amount for o in offers), zero)
        new_count = sum(o.new_count for o in offers)
        new_amount = sum((o.new_amount for o in offers), zero)
        return (
            current_count,
            current_amount,
            new_count,
            new_amount,
            new_count - current_count,
            new_amount - current_amount,
        )

    rows.append(_row(f"changed ({len(changed)} offers)", total(changed)))
    rows.append(
        _row(
            "total",
            (
                result.current_count,
                result.current_amount,
                result.new_count,
                result.new_amount,
                result.count_difference,
                result.amount_difference,
            ),
        )
    )
    widths = [max(len(row[i]) for row in rows) for i in range(7)]
    lines = [
        f"Backtest {result.window_from.isoformat()} .. {result.window_to.isoformat()} "
        f"(to excluded, {zone}): {result.events:,} events replayed",
        f"current: {current} (version {result.current_version})",
        f"new:     {new} (version {result.new_version})",
        "",
    ]
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in range(1, 7)]
        if index == footer:
            lines.append("-" * len("  ".join(cells)))
        lines.append("  ".join(cells).rstrip())
    if unchanged and not all_offers:
        lines += [
            "",
            f"{len(unchanged)} offers the change does not touch (same definition, same cost) "
            "are not listed: --all lists them.",
        ]
    if result.not_replayed:
        lines += [
            "",
            "Not replayed (period aggregates, evaluated by evaluation runs over whole periods): "
            + ", ".join(result.not_replayed),
        ]
    return "\n".join(lines)


def run_backtest(args: argparse.Namespace) -> int:
    from sqlalchemy import text

    from rewards.analyst.backtest import backtest
    from rewards.db.database import Database
    from rewards.db.migrate import readable_problem
    from rewards.engine import RulesetLoadError, load_rulesets

    settings = Settings.from_env()
    current_dir: Path = args.current or settings.rulesets_dir
    loaded = {}
    for label, folder in (("current", current_dir), ("new", args.rulesets)):
        try:
            loaded[label] = load_rulesets(folder)
        except RulesetLoadError as error:
            for problem in error.errors:
                print(problem, file=sys.stderr)
            print(f"{folder} ({label}): refused: {len(error.errors)} problem(s)", file=sys.stderr)
            return 1
    current, new = loaded["current"], loaded["new"]
    try:
        start = _moment(args.start, current.time_zone, end=False)
        end = _moment(args.end, current.time_zone, end=True)
    except _Usage as error:
        print(f"rewards backtest: {error}", file=sys.stderr)
        return 2
    if end <= start:
        print("rewards backtest: --to is before --from", file=sys.stderr)
        return 2
    url = args.database or settings.database_url
    if unreadable := readable_problem(url):
        print(f"rewards backtest: {unreadable}", file=sys.stderr)
        return 1
    show = sys.stderr.isatty() if args.progress is None else args.progress
    bar = ProgressBar(sys.stderr, "events", "ev") if show else None
    database = Database(url)
    try:
        with database.session(write=False) as session:
            if not database.is_sqlite:
                session.execute(text("SET TRANSACTION READ ONLY"))
            try:
                result = backtest(
                    session,
                    current,
                    new,
                    start,
                    end,
                    progress=None if bar is None else lambda d, t: bar.update("replaying", d, t),
                )
            finally:
                session.rollback()  # nothing to keep: a backtest never writes
    finally:
        if bar is not None:
            bar.close()
        database.dispose()
    if args.format == "json":
        print(_encode(result).decode())
    else:
        print(
            render_table(
                result,
                current_dir,
                args.rulesets,
                current.definition.time_zone,
                all_offers=args.all_offers,
            )
        )
    return 0
