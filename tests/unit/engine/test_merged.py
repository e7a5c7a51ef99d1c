"""Rulesets merged per event type (``compiler.merge_rulesets``, evaluation runs): a
purchase is asserted once instead of once per classification, the decisions stay the
same, and merging stops where the engine's limits would be passed."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from rewards.engine import Evaluator, EventFacts, ProductLine, Rulesets, compiler
from rewards.engine.compiler import MAX_PATHS, merge_rulesets
from tests.unit.engine.builders import at, summary

SKUS = ["COFFEE-LATTE", "PASTRY-CROISSANT", "SANDWICH-CLUB", "BEANS-PREMIUM-KENYA", "GC-25"]


def purchases(count: int) -> list[EventFacts]:
    rng = random.Random(5)
    return [
        EventFacts(
            event_type="purchase",
            performed_on=at(
                f"2026-03-{rng.randint(2, 8):02d}T{rng.randint(6, 21):02d}:15:00+02:00"
            ),
            unit=rng.choice(["store-001", "store-002", "store-003"]),
            segments=rng.sample(["gold", "silver", "staff"], rng.randint(0, 2)),
            payment_brand=rng.choice(["visa", "mastercard", None]),
            products=[
                ProductLine(
                    sku=rng.choice(SKUS), total_amount=Decimal(rng.randint(100, 9000)) / 100
                )
                for _ in range(rng.randint(1, 5))
            ],
        )
        for _ in range(count)
    ]


def test_a_purchase_meets_one_merged_ruleset_of_the_three_classifications(
    shipped: Rulesets,
) -> None:
    compiled = shipped.compiled
    merged = merge_rulesets(compiled)
    ((name, _),) = merged.by_type["purchase"]
    merged_from = {ruleset for (into, _), (ruleset, _) in merged.rules.items() if into == name}
    assert merged_from == set(compiled.event_rulesets["purchase"]) and len(merged_from) == 3
    # every rule of those rulesets, once, under its own name
    assert sorted(merged.rules[(name, rule)] for rule in merged.definitions[name]) == sorted(
        (ruleset, rule) for ruleset in merged_from for rule in compiled.rulesets[ruleset]
    )


def test_merged_and_separate_rulesets_decide_the_same(shipped: Rulesets) -> None:
    evaluator = Evaluator(shipped)
    events = purchases(400)
    for mode in ("all", "immediate", "batch"):
        separate = evaluator.evaluate_many(events, mode=mode)
        together = evaluator.evaluate_many(events, mode=mode, merged=True)
        assert [summary(d) for d in together] == [summary(d) for d in separate]
    assert sum(len(d) for d in evaluator.evaluate_many(events, mode="all", merged=True)) > 100


@pytest.mark.parametrize("limit", [1, 3, 4, 6, MAX_PATHS])
def test_merging_stops_at_the_engines_path_limit(
    shipped: Rulesets, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    """Consecutive rulesets are merged while the bound of their paths matching one fact
    at once stays within the limit (durable-rules fails past 64)."""
    compiled = shipped.compiled
    names = compiled.event_rulesets["purchase"]
    monkeypatch.setattr(compiler, "MAX_PATHS", limit)
    merged = merge_rulesets(compiled)
    groups = [
        [ruleset for (into, _), (ruleset, _) in merged.rules.items() if into == name]
        for name, _ in merged.by_type["purchase"]
    ]
    groups = [list(dict.fromkeys(group)) for group in groups]
    assert [ruleset for group in groups for ruleset in group] == names  # all, in order
    paths = [sum(compiled.paths[ruleset] for ruleset in group) for group in groups]
    for group, total in zip(groups, paths, strict=True):
        assert total <= limit or len(group) == 1
    for total, following in zip(paths, groups[1:], strict=False):
        assert total + compiled.paths[following[0]] > limit  # could not have taken it
    if limit == MAX_PATHS:
        assert len(groups) == 1
    if limit < max(compiled.paths[name] for name in names):
        assert len(groups) == len(names)
