"""``rewards rulesets check [DIR]``: validate a folder exactly as the server loads it
(``diff`` and ``status``: commands.history)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rewards.commands import history
from rewards.settings import Settings


def register(commands: Any) -> None:
    """Add ``rulesets`` (with its ``check`` sub-command) to ``commands``."""
    rulesets = commands.add_parser("rulesets", help="work with ruleset folders")
    actions = rulesets.add_subparsers(dest="action", required=True)
    check = actions.add_parser(
        "check",
        help="validate a ruleset folder (schema, cross-checks, embedded examples)",
        description="Loads the folder as the server would: every file against its schema, "
        "cross-checks against the definition, compilation for the rules engine and every "
        "embedded example run through it. Prints each problem as file:line:column: message "
        "and exits 1, or prints a one-line summary and exits 0.",
    )
    check.add_argument(
        "dir", nargs="?", type=Path, help="the folder (default: REWARDS_RULESETS_DIR or rulesets/)"
    )
    check.set_defaults(run=run_check)
    history.register(actions)  # diff, status


def run_check(args: argparse.Namespace) -> int:
    from rewards.engine import RulesetLoadError, load_rulesets

    folder: Path = args.dir or Settings.from_env().rulesets_dir
    try:
        rulesets = load_rulesets(folder)
    except RulesetLoadError as error:
        for problem in error.errors:
            print(problem)
        files = len({problem.file for problem in error.errors})
        print(
            f"{folder}: refused: {len(error.errors)} problem(s) in {files} file(s)",
            file=sys.stderr,
        )
        return 1
    examples = sum(len(offer.examples) for offer in rulesets.offers)
    print(
        f"{folder}: OK: {len(rulesets.files)} files, {len(rulesets.offers)} offers, "
        f"{examples} examples passed (version {rulesets.version})"
    )
    return 0
