"""Throughput of the rules engine path: our Evaluator vs bare durable-rules.

    .venv/bin/python bench/engine.py [--events N] [--rulesets DIR]

Events: purchases with 5 product lines (coffee, pastries, sandwiches, beans, gift
cards, groceries), random times over a week, units, segments and cards, against the
shipped rulesets (20+ offers; a purchase reaches the utilise_free_capacity,
increase_revenue_transaction and increase_revenue_product rulesets).

- evaluate: ``Evaluator.evaluate(facts, mode="all")`` per event, from the main thread
  (facts preparation, the trip to the engine thread, matching, award arithmetic,
  exclusive groups);
- evaluate_many: the same in batches of 500 with one trip per batch (evaluation runs);
- bare: durable-rules' own ``Host.assert_fact``/``retract_fact`` (dict facts, stock
  actions) of the already prepared facts on the same compiled rulesets, looping on the
  engine thread: the event fact into each ruleset and, where it matched a per-line
  offer, the line facts one by one into ``<classification>__lines``, like the evaluator.

Prints events/s and the ratios evaluator / bare. Nothing here is asserted by tests.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from durable import engine as durable_engine

from rewards.engine import Evaluator, EventFacts, ProductLine, load_rulesets
from rewards.engine.adapter import call
from rewards.engine.compiler import prepare

ROOT = Path(__file__).resolve().parent.parent
SKUS = [
    "COFFEE-LATTE",
    "COFFEE-ESPRESSO",
    "PASTRY-CROISSANT",
    "SANDWICH-CLUB",
    "BEANS-PREMIUM-KENYA",
    "BEANS-HOUSE",
    "GC-25",
    "GROCERY-MILK",
    "GROCERY-BREAD",
    "TEA-GREEN",
]


def make_events(count: int, seed: int = 7) -> list[EventFacts]:
    rng = random.Random(seed)
    start = datetime(2026, 3, 2, tzinfo=UTC)
    events = []
    for _ in range(count):
        products = [
            ProductLine(
                sku=rng.choice(SKUS),
                quantity=Decimal(rng.randint(1, 3)),
                total_amount=Decimal(rng.randint(100, 6000)) / 100,
            )
            for _ in range(5)
        ]
        events.append(
            EventFacts(
                event_type="purchase",
                performed_on=start + timedelta(minutes=rng.randrange(7 * 24 * 60)),
                unit=rng.choice(["store-001", "store-002", "store-003"]),
                segments=rng.sample(["gold", "silver", "staff", "new"], rng.randint(0, 2)),
                products=products,
                payment_brand=rng.choice(["visa", "mastercard", "electron", None]),
                payment_type=rng.choice(["credit", "debit"]),
                awards_in_window={},
            )
        )
    return events


def bare_loop(rulesets, prepared) -> int:
    """Stock durable-rules calls on the engine thread; returns the number of rule firings."""
    host = rulesets.host._host
    by_rule = rulesets.compiled.by_rule
    fired = 0
    for facts, line_facts in prepared:
        for ruleset, fact in facts:
            host.hits.clear()
            try:
                host.assert_fact(ruleset, fact)
            except durable_engine.MessageNotHandledException:
                pass
            host.retract_fact(ruleset, fact)
            hits = list(host.hits)
            fired += len(hits)
            if line_facts and any(by_rule[(ruleset, rule)].per_line for rule, _ in hits):
                for lines in rulesets.compiled.line_rulesets[ruleset]:
                    host.hits.clear()
                    for line in line_facts:
                        try:
                            host.assert_fact(lines, line)
                        except durable_engine.MessageNotHandledException:
                            pass
                    for line in line_facts:
                        host.retract_fact(lines, line)
                    fired += len(host.hits)
    host.hits.clear()
    return fired


def timed(function, *args):
    """(result, wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rulesets", type=Path, default=ROOT / "rulesets")
    args = parser.parse_args(argv)

    rulesets = load_rulesets(args.rulesets)
    evaluator = Evaluator(rulesets)
    events = make_events(args.events)
    evaluator.evaluate_many(events[:500], mode="all")  # warm up

    def single() -> int:
        return sum(len(evaluator.evaluate(facts, mode="all")) for facts in events)

    def batched() -> None:
        for offset in range(0, len(events), 500):
            evaluator.evaluate_many(events[offset : offset + 500], mode="all")

    awards, single_wall, single_cpu = timed(single)
    _, batch_wall, batch_cpu = timed(batched)

    prepared = []
    for facts in events:  # the evaluator's own facts, decoded to dicts for the stock host
        event = prepare(rulesets.compiled, facts)
        prepared.append(
            (
                [(ruleset, json.loads(payload)) for ruleset, payload in event.payloads],
                json.loads(event.lines_json()) if event.skus else [],
            )
        )
    fired, bare_wall, bare_cpu = timed(call, bare_loop, rulesets, prepared)

    count = len(events)
    print(
        f"rulesets {rulesets.version}: {len(rulesets.offers)} offers; {count} purchases of 5 lines"
    )
    print(
        f"awards per event (mode all): {awards / count:.2f}; rule firings per event: {fired / count:.2f}"
    )
    print(f"{'':24} {'events/s (wall)':>16} {'(per CPU second)':>17} {'ratio vs bare':>14}")
    for label, wall, cpu in (
        ("evaluator.evaluate", single_wall, single_cpu),
        ("evaluator.evaluate_many", batch_wall, batch_cpu),
        ("bare durable-rules", bare_wall, bare_cpu),
    ):
        print(f"{label:24} {count / wall:16,.0f} {count / cpu:17,.0f} {bare_wall / wall:14.2f}")
    print(f"(machine load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
