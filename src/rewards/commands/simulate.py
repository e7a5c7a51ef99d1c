"""``rewards simulate EVENTS.jsonl [--rulesets DIR]``: evaluate events, write nothing, explain.

Each line of the input is a simulation like the body of ``POST /v1/simulations``:
``{"type": "purchase", "event": {...}, "segments": ["gold"]}``. Blank lines and lines
starting with ``#`` are skipped; ``-`` reads standard input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import msgspec

from rewards.settings import Settings

_encode = msgspec.json.Encoder(decimal_format="number").encode


def register(commands: Any) -> None:
    simulate = commands.add_parser(
        "simulate",
        help="evaluate events against a ruleset folder (no writes) and explain every offer",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    simulate.add_argument("events", help="a JSON Lines file of simulations, or - for stdin")
    simulate.add_argument(
        "--rulesets",
        type=Path,
        help="the ruleset folder (default: REWARDS_RULESETS_DIR or rulesets/)",
    )
    simulate.add_argument(
        "--format",
        choices=["text", "json"],
        default="text",
        help="text (default) or json: one JSON object per input line",
    )
    simulate.add_argument(
        "--mode",
        choices=["all", "immediate", "batch"],
        help="override each line's mode (default all: immediate and batch offers)",
    )
    simulate.set_defaults(run=run_simulate)


def _lines(name: str) -> Iterator[str]:
    if name == "-":
        yield from sys.stdin
        return
    with open(name, encoding="utf-8") as handle:
        yield from handle


def _text(out: TextIO, where: str, item: Any, result: Any) -> None:
    event = item.event
    unit = f" at {event['performed_by_unit']}" if event.get("performed_by_unit") else ""
    print(
        f"{where}: {item.type} performed {event.get('performed_on')}{unit}: "
        f"awards {result.total_awarded} (mode {result.mode})",
        file=out,
    )
    for warning in result.warnings:
        print(f"  warning: {warning}", file=out)
    for award in result.awards:
        lines = ""
        if award.lines:
            lines = (
                " (lines "
                + ", ".join(f"{line.index} {line.sku} {line.amount}" for line in award.lines)
                + ")"
            )
        who = "" if award.beneficiary == "contact" else f" to the {award.beneficiary}"
        print(f"  + {award.amount} {award.offer_id}{who}{lines}", file=out)
    width = max((len(o.offer_id) for o in result.offers), default=0)
    for outcome in result.offers:
        if outcome.status == "applied":
            print(f"  applied      {outcome.offer_id:<{width}}  {outcome.amount}", file=out)
            continue
        reasons = "; ".join(f.message for f in outcome.failed) or outcome.note or ""
        print(f"  not applied  {outcome.offer_id:<{width}}  {reasons}", file=out)


def run_simulate(args: argparse.Namespace) -> int:
    from rewards.analyst.simulation import read_simulations, simulate
    from rewards.engine import Evaluator, RulesetLoadError, load_rulesets
    from rewards.errors import DomainError
    from rewards.schemas import SchemaRegistry

    folder: Path = args.rulesets or Settings.from_env().rulesets_dir
    try:
        rulesets = load_rulesets(folder)
    except RulesetLoadError as error:
        for mistake in error.errors:
            print(mistake, file=sys.stderr)
        print(f"{folder}: refused: {len(error.errors)} problem(s)", file=sys.stderr)
        return 1
    schemas = SchemaRegistry()
    evaluator = Evaluator(rulesets)
    out = sys.stdout
    simulated = refused = earning = 0
    total: Decimal | int = 0
    name = "<stdin>" if args.events == "-" else args.events
    try:
        items = list(read_simulations(_lines(args.events), schemas))
    except OSError as error:
        print(f"{name}: {error.strerror or error}", file=sys.stderr)
        return 1
    for number, item in items:
        where = f"{name}:{number}"
        result = None
        if not isinstance(item, DomainError):
            if args.mode:
                item = msgspec.structs.replace(item, mode=args.mode)
            try:
                result = simulate(rulesets, schemas, item, evaluator=evaluator)
            except DomainError as error:
                item = error
        if isinstance(item, DomainError):
            refused += 1
            problem = item.to_problem()
            if args.format == "json":
                out.write(_encode({"line": number, "problem": problem}).decode() + "\n")
            else:
                details = "; ".join(f"{e.path}: {e.message}" for e in problem.errors or [])
                print(f"{where}: refused ({problem.code}): {details or problem.detail}", file=out)
            continue
        assert result is not None
        simulated += 1
        earning += bool(result.awards)
        total += result.total_awarded
        if args.format == "json":
            out.write(_encode({"line": number, "result": result}).decode() + "\n")
        else:
            _text(out, where, item, result)
    print(
        f"{simulated} event(s) simulated against {folder} (version {rulesets.version}): "
        f"{earning} earning, {total:.2f} awarded in total; {refused} refused",
        file=sys.stderr,
    )
    return 1 if refused else 0
