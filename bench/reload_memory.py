"""Memory of hot reloads: RSS growth over 100 reloads in a row, per kind of edit.

    .venv/bin/python bench/reload_memory.py [--reloads N] [--scenario NAME ...]

Each scenario runs in a fresh process: a copy of the shipped rulesets/ is served by a
``Runtime`` (as in ``rewards serve``), then edited and reloaded N times through
``services.reload.reload_rulesets`` (the path of the watcher and POST
/v1/rulesets/reload), with a few events evaluated after every reload so each engine
ruleset also holds its session state, as under traffic. Prints the RSS growth in MB
(total and per reload) and the adapter's counters of engine rulesets created/re-used.

Scenarios (each reload changes the folder's version):
- ``amount``: an award amount in one file (the compiled rules stay the same: shared);
- ``condition``: a condition value (a validity date) of one classification: its value
  travels in the facts (``compiler.Params``), the rules stay the same: shared;
- ``every-file``: a condition value in every classification file: shared;
- ``shape``: a segment code of one classification (segment codes, globs and product
  conditions are in the rules: one new engine ruleset per reload);
- ``glob``: a website glob (a new ruleset with ``$mt`` patterns, the costliest kind);
- ``every-file-shape``: a segment code in every classification file (every ruleset is
  new at every reload: the worst case);
- ``unshared``: like ``every-file-shape``, with sharing disabled: one whole new
  durable-rules host per reload, the per-host leak durable-rules itself has
  (ENGINE-NOTES.md).

One process, never restarted here: ``rewards serve`` replaces a worker once its reloads
built ``REWARDS_RECYCLE_AFTER_RULESETS`` engine rulesets, which bounds every scenario
(runtime/reload.py). Nothing here is asserted by the tests (RSS is
too noisy for CI); the numbers go in the reload notes of docs/analysts.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ["amount", "condition", "every-file", "shape", "glob", "every-file-shape", "unshared"]
CLASSIFICATION_FILES = [
    "achievement.yaml",
    "behaviour.yaml",
    "financial_achievement.yaml",
    "financial_statement.yaml",
    "increase_revenue_product.yaml",
    "increase_revenue_transaction.yaml",
    "loyalty_item_quantity.yaml",
    "loyalty_transaction_amount.yaml",
    "loyalty_transaction_number.yaml",
    "referral.yaml",
    "utilise_free_capacity.yaml",
]


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


def _extra_offer(file: str, n: int, shape: bool) -> str:
    """An offer appended to ``file`` whose validity date changes with ``n`` (and with
    ``shape`` its segment code, so its compiled rule changes too)."""
    classification = file.removesuffix(".yaml")
    award = "{referred: {amount: 1}}" if classification == "referral" else "{amount: 1}"
    period = ", period: month" if classification.startswith("loyalty_") else ""
    evaluation = "batch" if classification.startswith("loyalty_") else "immediate"
    segments = f", segments: {{include: [s{n}]}}" if shape else ""
    return (
        f"  - {{id: bench-{classification.replace('_', '-')}, name: bench, evaluation: {evaluation}, "
        f"award: {award}, valid: {{from: 2020-01-01, until: {2030 + n // 365}-{1 + n // 28 % 12:02d}-"
        f"{1 + n % 28:02d}}}, conditions: {{units: [store-001]{period}{segments}}}}}\n"
    )


def edit(folder: Path, scenario: str, n: int) -> None:
    if scenario == "amount":
        amount = 15 + n % 2
        text = (ROOT / "rulesets" / "achievement.yaml").read_text()
        text = text.replace("award: {amount: 15}", f"award: {{amount: {amount}}}")
        text = text.replace("expect: {award: 15}", f"expect: {{award: {amount}}}")
        (folder / "achievement.yaml").write_text(text + f"# edit {n}\n")
    elif scenario == "condition":
        text = (ROOT / "rulesets" / "achievement.yaml").read_text()
        old = "  - id: staff-course-completed\n"
        assert old in text
        until = f"{2030 + n // 336}-{1 + n // 28 % 12:02d}-{1 + n % 28:02d}"
        text = text.replace(old, f"{old}    valid: {{until: {until}}}\n", 1)
        (folder / "achievement.yaml").write_text(text)
    elif scenario == "shape":
        text = (ROOT / "rulesets" / "achievement.yaml").read_text()
        text = text.replace("include: [staff]", f"include: [staff, s{n}]")
        (folder / "achievement.yaml").write_text(text)
    elif scenario == "glob":
        text = (ROOT / "rulesets" / "behaviour.yaml").read_text()
        text = text.replace(
            '"https://example.com/summer*"', f'"https://example.com/summer*", "https://e{n}.test/*"'
        )
        (folder / "behaviour.yaml").write_text(text)
    else:  # every-file, every-file-shape, unshared
        for file in CLASSIFICATION_FILES:
            text = (ROOT / "rulesets" / file).read_text()
            extra = _extra_offer(file, n, shape=scenario != "every-file")
            (folder / file).write_text(text.rstrip("\n") + "\n" + extra)


def traffic(runtime: object) -> None:
    from rewards.engine import EventFacts, ProductLine

    evaluator = runtime.evaluator  # type: ignore[attr-defined]
    when = datetime(2026, 3, 2, 13, 30, tzinfo=UTC)
    for facts in (
        EventFacts(
            event_type="purchase",
            performed_on=when,
            unit="store-001",
            segments=["gold"],
            products=[
                ProductLine(sku="COFFEE-LATTE", total_amount=Decimal("3.50")),
                ProductLine(sku="BEANS-PREMIUM-KENYA", total_amount=Decimal("24.99")),
            ],
            payment_brand="visa",
        ),
        EventFacts(event_type="achievement", performed_on=when, classification="5-star-service"),
        EventFacts(event_type="web", performed_on=when, website="https://example.com/summer"),
        EventFacts(
            event_type="social_media", performed_on=when, platform="facebook", action="like"
        ),
        EventFacts(event_type="referral", performed_on=when, classification="friend-referral"),
        EventFacts(
            event_type="financial_achievement",
            performed_on=when,
            classification="top-up",
            amount=Decimal(150),
            payment_brand="electron",
        ),
        EventFacts(event_type="financial_statement", performed_on=when),
    ):
        evaluator.evaluate(facts, mode="all", aggregates=True)


def run_scenario(scenario: str, reloads: int) -> dict[str, object]:
    import gc

    from rewards.engine import Evaluator, adapter, load_rulesets
    from rewards.runtime.context import Runtime
    from rewards.runtime.reload import reload_rulesets
    from rewards.schemas import SchemaRegistry
    from rewards.settings import Settings

    if scenario == "unshared":
        counter = iter(range(10**9))
        original = adapter._key
        adapter._key = lambda name, definition: (
            f"{name}#{next(counter)}",
            original(name, definition)[1],
        )  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "rulesets"
        shutil.copytree(ROOT / "rulesets", folder)
        # the shape edits invent segment codes: accept them (definition.yaml segments)
        definition = folder / "definition.yaml"
        text = definition.read_text()
        assert "\n  # allow_unknown: true" in text
        definition.write_text(text.replace("\n  # allow_unknown: true", "\n  allow_unknown: true"))
        settings = Settings(rulesets_dir=folder)
        runtime = Runtime(
            settings=settings, evaluator=Evaluator(load_rulesets(folder)), schemas=SchemaRegistry()
        )
        # warm up: two reloads, so allocator pools and caches exist before measuring
        for n in range(2):
            edit(folder, scenario, 10_000 + n)
            reload_rulesets(runtime, trigger="bench")
            traffic(runtime)
        gc.collect()
        before = _rss_mb()
        counters = adapter.collect()
        versions = set()
        for n in range(reloads):
            edit(folder, scenario, n)
            answer = reload_rulesets(runtime, trigger="bench")
            assert answer.changed, (scenario, n)
            versions.add(answer.version)
            traffic(runtime)
        gc.collect()
        after = adapter.collect()
        grown = _rss_mb() - before
    return {
        "scenario": scenario,
        "reloads": reloads,
        "versions": len(versions),
        "rss_growth_mb": round(grown, 1),
        "per_reload_kb": round(grown * 1024 / reloads, 1),
        "engine_rulesets_created": after["created"] - counters["created"],
        "engine_rulesets_reused": after["reused"] - counters["reused"],
        "engine_rulesets_deleted": after["deleted"] - counters["deleted"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reloads", type=int, default=100)
    parser.add_argument("--scenario", action="append", choices=SCENARIOS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_scenario(args.child, args.reloads)))
        return 0
    for scenario in args.scenario or SCENARIOS:
        output = subprocess.run(
            [sys.executable, __file__, "--child", scenario, "--reloads", str(args.reloads)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        result = json.loads(output.strip().splitlines()[-1])
        print(
            f"{scenario:<16} {result['reloads']} reloads: RSS +{result['rss_growth_mb']:.1f} MB "
            f"({result['per_reload_kb']:.0f} KB per reload); engine rulesets created "
            f"{result['engine_rulesets_created']}, re-used {result['engine_rulesets_reused']}, "
            f"deleted {result['engine_rulesets_deleted']}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
