"""``rewards rulesets check [DIR]``: validate a folder exactly as the server loads it
(``diff`` and ``status``: commands.history)."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path
from typing import Any

from rewards.commands import history
from rewards.settings import Settings


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def register(commands: Any) -> None:
    """Add ``rulesets`` (with its ``check`` sub-command) to ``commands``."""
    rulesets = commands.add_parser("rulesets", help="work with ruleset folders")
    actions = rulesets.add_subparsers(dest="action", required=True)
    check = actions.add_parser(
        "check",
        help="validate a ruleset folder (schema, cross-checks, embedded examples)",
        description="Loads the folder as the server would: every file against its schema, "
        "cross-checks against the definition and its catalogues, compilation for the rules "
        "engine and every embedded example run through it. Prints each problem as "
        "file:line:column: message and exits 1; prints warnings (file:line:column: warning: "
        "message: no examples, amounts below a cent, high percentages, ended validity, no "
        "catalogue) and a one-line summary and exits 0, or 1 with --strict.",
    )
    check.add_argument(
        "dir", nargs="?", type=Path, help="the folder (default: REWARDS_RULESETS_DIR or rulesets/)"
    )
    check.add_argument(
        "--strict", action="store_true", help="warnings refuse the folder too (exit 1)"
    )
    check.add_argument(
        "--today",
        type=_day,
        metavar="YYYY-MM-DD",
        help="the day ended validity is judged on, e.g. the day you will publish "
        "(default: today in the business time zone)",
    )
    check.set_defaults(run=run_check)
    history.register(actions)  # diff, status


def run_check(args: argparse.Namespace) -> int:
    from rewards.engine import RulesetLoadError, load_rulesets

    folder: Path = args.dir or Settings.from_env().rulesets_dir
    try:
        rulesets = load_rulesets(folder, today=args.today, log_warnings=False)
    except RulesetLoadError as error:
        shown = sorted([*error.errors, *error.warnings], key=lambda p: (p.file, p.line, p.column))
        for problem in shown:
            print(problem)
        files = len({problem.file for problem in error.errors})
        warned = f", {len(error.warnings)} warning(s)" if error.warnings else ""
        print(
            f"{folder}: refused: {len(error.errors)} problem(s) in {files} file(s){warned}",
            file=sys.stderr,
        )
        return 1
    for warning in rulesets.warnings:
        print(warning)
    examples = sum(len(offer.examples) for offer in rulesets.offers)
    warned = f", {len(rulesets.warnings)} warning(s)" if rulesets.warnings else ""
    if args.strict and rulesets.warnings:
        print(f"{folder}: refused (--strict): {len(rulesets.warnings)} warning(s)", file=sys.stderr)
        return 1
    print(
        f"{folder}: OK: {len(rulesets.files)} files, {len(rulesets.offers)} offers, "
        f"{examples} examples passed{warned} (version {rulesets.version})"
    )
    return 0
