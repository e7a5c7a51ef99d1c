"""Evaluation runs build purchase facts straight from the stored details
(``offers.facts.purchase_fact``): on generated purchases the fact must be the one
``build_fact(build_facts(...))`` makes, and the decisions through
``Evaluator.evaluate_prepared`` the ones ``evaluate_many`` makes.

Also: ``per_event=False`` (only the aggregate rulesets) decides the aggregate offers
exactly as the full evaluation does when they are in no exclusive group.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewards.engine import Evaluator, PeriodTotals, Rulesets
from rewards.engine.compiler import build_fact, prepare, prepare_fact
from rewards.offers.facts import build_facts, priced_purchase_fact, purchase_fact
from rewards.runs import EventRecord
from tests.unit.engine.builders import offer, rulesets, summary

SKUS = ["COFFEE-LATTE", "BEANS-PREMIUM-KENYA", "PASTRY-CROISSANT", "SANDWICH-CLUB", "GC-25", 7]
UNITS = ["store-001", "store-002", "store-003", "store-999", None]

amounts = st.one_of(
    st.integers(0, 100_000).map(lambda c: f"{c // 100}.{c % 100:02d}"),  # the usual shape
    st.decimals(0, 10_000, places=3).map(str),  # a third decimal: half-up
    st.decimals(0, 1_000, places=0).map(str),  # no decimals
    st.sampled_from(["0.5", ".25", "1.005", "2.675", "1e2", "00.10", " 1.50", "-1.50", "1_0.25"]),
    st.integers(0, 1_000),
    st.floats(0, 1_000, allow_nan=False).map(lambda f: round(f, 3)),
)
mediums = st.one_of(
    st.none(),
    st.just({}),
    st.fixed_dictionaries(
        {},
        optional={
            "brand": st.sampled_from(["visa", "electron", None, 5]),
            "type": st.sampled_from(["credit", "debit", None]),
            "number": st.just("4917000000000000"),
        },
    ),
)
lines = st.fixed_dictionaries(
    {"sku": st.sampled_from(SKUS), "quantity": st.sampled_from(["1", "2", 3, "0.5"]),
     "total_amount": amounts},
    optional={"net_amount": st.just("1.00"), "vat_amount": st.just("0.19")},
)  # fmt: skip


@st.composite
def purchases(draw: Any) -> tuple[EventRecord, list[str], dict[str, int]]:
    details: dict[str, Any] = {"currency": "EUR", "reference_number": "B1"}
    details["products"] = draw(st.lists(lines, max_size=5))
    if draw(st.booleans()):
        details["total_amount"] = draw(amounts)
    medium = draw(mediums)
    if medium is not None or draw(st.booleans()):
        details["payment_medium"] = medium
    minute = draw(st.integers(0, 365 * 24 * 60))
    record = EventRecord(
        number=1,
        id="e-1",
        type="purchase",
        contact_id="c-1",
        classification=draw(st.sampled_from([None, "campaign"])),
        performed_on=datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=minute),
        performed_by_unit=draw(st.sampled_from(UNITS)),
        evaluated=False,
        raw=json.dumps(details),
    )
    segments = draw(st.lists(st.sampled_from(["gold", "silver", "staff", "new"]), unique=True))
    counts = draw(st.dictionaries(st.sampled_from(["windowed", "other"]), st.integers(0, 3)))
    return record, segments, counts


@pytest.fixture(scope="module")
def windowed() -> Rulesets:
    """Purchase offers with a max_awards window (its count is a fact field) and per-line
    offers, beside the shipped ones' kinds."""
    return rulesets(
        offer(
            "increase_revenue_transaction",
            "windowed",
            award={"amount": 1},
            conditions={"max_awards": {"count": 2, "window_days": 30}, "total_amount": {"min": 5}},
        ),
        offer(
            "increase_revenue_product",
            "beans",
            award={"percentage": 10},
            conditions={"products": [{"sku": "BEANS-*", "amount": {"min": 1}}]},
        ),
        offer("utilise_free_capacity", "coffee", conditions={"products": [{"sku": "COFFEE-*"}]}),
    )


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(purchases())
def test_purchase_fact_is_build_fact_of_build_facts(
    shipped: Rulesets, windowed: Rulesets, case: tuple[EventRecord, list[str], dict[str, int]]
) -> None:
    record, segments, counts = case
    for loaded in (shipped, windowed):
        compiled = loaded.compiled
        fast = purchase_fact(compiled, record, segments, counts)
        try:
            expected = build_fact(compiled, build_facts(None, record, segments, counts))  # type: ignore[arg-type]
        except Exception:  # the general path refuses these details: so must the fast one
            assert fast is None
            continue
        if fast is None:  # details the typed decoder refuses: the general path is used
            continue
        assert fast == expected
        assert json.dumps(fast) == json.dumps(expected)  # same key order: same JSON
        assert (
            prepare_fact(compiled, fast).payloads
            == prepare(
                compiled,
                build_facts(None, record, segments, counts),  # type: ignore[arg-type]
            ).payloads
        )


def test_the_usual_purchases_take_the_fast_path(shipped: Rulesets) -> None:
    details = {
        "products": [{"sku": "COFFEE-LATTE", "quantity": "2", "total_amount": "6.99"}],
        "total_amount": "6.99",
        "payment_medium": {"brand": "visa", "type": "credit"},
    }
    record = EventRecord(
        1, "e", "purchase", "c", None, datetime(2025, 3, 3, 12, tzinfo=UTC), "store-001",
        False, json.dumps(details),
    )  # fmt: skip
    fact = purchase_fact(shipped.compiled, record, ["gold"], {})
    assert fact is not None
    assert fact["ln"] == [{"s": "COFFEE-LATTE", "a": 699}]
    assert (fact["tot"], fact["pb"], fact["pt"], fact["seg"]) == (
        699,
        "visa",
        "credit",
        ["", "gold"],
    )


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(purchases(), min_size=1, max_size=20))
def test_evaluate_prepared_decides_like_evaluate_many(
    shipped: Rulesets,
    windowed: Rulesets,
    cases: list[tuple[EventRecord, list[str], dict[str, int]]],
) -> None:
    for loaded in (shipped, windowed):
        evaluator = Evaluator(loaded)
        facts, prepared = [], []
        for record, segments, counts in cases:
            fast = purchase_fact(loaded.compiled, record, segments, counts)
            if fast is None:
                continue
            facts.append(build_facts(None, record, segments, counts))  # type: ignore[arg-type]
            prepared.append(prepare_fact(loaded.compiled, fast))
        for mode in ("immediate", "batch", "all"):
            expected = evaluator.evaluate_many(facts, mode=mode)
            decided = evaluator.evaluate_prepared(prepared, mode=mode)
            assert [summary(d) for d in decided] == [summary(d) for d in expected]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    purchases(),
    st.decimals(0, 400, places=2),
    st.integers(0, 20),
    st.decimals(0, 30, places=3),
)
def test_aggregate_rulesets_alone_decide_the_aggregate_offers(
    shipped: Rulesets,
    case: tuple[EventRecord, list[str], dict[str, int]],
    total: Decimal,
    count: int,
    quantity: Decimal,
) -> None:
    """The shipped aggregate offers are in no exclusive group: evaluating only the
    aggregate rulesets (what runs do) gives their decisions unchanged."""
    record, segments, counts = case
    evaluator = Evaluator(shipped)
    aggregate_ids = [o.id for o in shipped.offers if o.classification.startswith("loyalty_")]
    assert not any(o.exclusive_group for o in shipped.offers if o.id in aggregate_ids)
    facts = build_facts(None, record, segments, counts)  # type: ignore[arg-type]
    for offer_id in aggregate_ids:
        facts.period_totals = {
            offer_id: PeriodTotals(total_amount=total, count=count, quantity=quantity)
        }
        full = evaluator.evaluate_many([facts], mode="batch", aggregates=True)[0]
        alone = evaluator.evaluate_many([facts], mode="batch", aggregates=True, per_event=False)[0]
        assert summary([d for d in alone if d.offer_id == offer_id]) == summary(
            [d for d in full if d.offer_id == offer_id]
        )
        assert {d.offer_id for d in alone} <= set(aggregate_ids)


@st.composite
def priced_purchases(draw: Any) -> tuple[Any, list[tuple[str, int]], int, list[str]]:
    """A purchase as intake has it before writing: priced lines (cents), the stored
    details (decimal text) and the payment medium after automation."""
    cents = st.integers(0, 100_000)
    skus = st.sampled_from([s for s in SKUS if isinstance(s, str)])
    priced = draw(st.lists(st.tuples(skus, cents), min_size=1, max_size=5))
    total = sum(c for _, c in priced)
    medium = draw(mediums)
    details: dict[str, Any] = {
        "products": [
            {"sku": sku, "quantity": "1", "total_amount": f"{c // 100}.{c % 100:02d}"}
            for sku, c in priced
        ],
        "total_amount": f"{total // 100}.{total % 100:02d}",
    }
    if medium is not None:
        details["payment_medium"] = medium
    event = EventRecord(
        number=1,
        id="e-1",
        type="purchase",
        contact_id="c-1",
        classification=draw(st.sampled_from([None, "campaign"])),
        performed_on=datetime(2025, 1, 1, tzinfo=UTC)
        + timedelta(minutes=draw(st.integers(0, 365 * 24 * 60))),
        performed_by_unit=draw(st.sampled_from(UNITS)),
        evaluated=False,
        raw=json.dumps(details),
    )
    segments = draw(st.lists(st.sampled_from(["gold", "silver", "staff"]), unique=True))
    return event, priced, total, segments


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(priced_purchases())
def test_intake_fact_is_the_runs_fact(shipped: Rulesets, case: Any) -> None:
    """Intake builds a purchase's fact from its priced lines (``priced_purchase_fact``),
    runs from its stored JSON (``purchase_fact``): both the general ``build_fact``."""
    event, priced, total, segments = case
    compiled = shipped.compiled
    stored = json.loads(event.raw)

    class Recorded:  # what intake holds: the event with its details as a dict
        type = "purchase"
        performed_on = event.performed_on
        classification = event.classification
        performed_by_unit = event.performed_by_unit
        details = stored

    intake = priced_purchase_fact(compiled, Recorded(), priced, total, segments, {})
    assert intake == purchase_fact(compiled, event, segments, {})
    assert intake == build_fact(compiled, build_facts(None, Recorded(), segments, {}))
