"""Property: on generated offers and events, the engine path and the reference agree.

Each example generates 1-5 offers of the classifications of one event type and a few
events of that type; every event is evaluated in every mode (and with the period
aggregates for purchases) by ``Evaluator`` and by ``tests.unit.engine.reference``: the
offers matched and the decisions (amounts, lines, order) must be equal.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewards.engine import Evaluator, EventFacts, KpiValue, PeriodTotals, ProductLine
from rewards.engine.model import (
    AGGREGATE_CLASSIFICATIONS,
    CLASSIFICATION_EVENT_TYPES,
    WEEKDAYS,
)
from rewards.engine.schema import PERCENTAGE_CLASSIFICATIONS, condition_keys
from tests.unit.engine import reference
from tests.unit.engine.builders import DEFINITION, offer, rulesets, summary

SEGMENTS = ["gold", "silver", "staff", "new"]
UNITS = ["store-001", "store-002", "store-003"]
UNIT_ENTRIES = [*UNITS, "north", "south"]
BRANDS = ["visa", "mastercard", "electron"]
TYPES = ["credit", "debit"]
SKU_GLOBS = [
    "C*",
    "*E*",
    "COFFEE-*",
    "TEA-?",
    "GC-[0-9][0-9]",
    "*",
    "PASTRY-CROISSANT",
    "50%.OFF*",
    "A.B*",
    "(X)*",
    "[a-c-]x",
]
SKUS = [
    "COFFEE-LATTE",
    "COFFEE-",
    "TEA-X",
    "TEA-XY",
    "GC-25",
    "GC-5",
    "PASTRY-CROISSANT",
    "50%.OFF-1",
    "50%xOFF",
    "A.Bc",
    "AxBc",
    "(X)1",
    "MUFFIN",
    "bx",
    "-x",
]
WEBSITE_GLOBS = [
    "https://*.example.com/*",
    "https://example.com/summer*",
    "*",
    "http?://a.test/[a-c]*",
]
WEBSITES = [
    "https://shop.example.com/x",
    "https://example.com/summer-1",
    "https://a.test/b1",
    "http://a.test/d",
    "x",
    "",
]
PLATFORMS = ["facebook", "instagram", "x"]
ACTIONS = ["like", "share", "comment"]
CLASSIFICATION_CODES = {
    "achievement": ["5-star-service", "course-completed"],
    "financial_achievement": ["top-up", "loan-repayment"],
    "financial_statement": ["monthly-statement"],
    "referral": ["friend-referral"],
}
NICOSIA = ZoneInfo("Europe/Nicosia")
ZONES = [
    UTC,
    timezone(timedelta(hours=2)),
    timezone(timedelta(hours=3)),
    timezone(timedelta(hours=-5)),
    timezone(timedelta(hours=5, minutes=30)),
]


def money(low: int = 0, high: int = 20000, places: int = 2) -> st.SearchStrategy[Decimal]:
    scale = 10**places
    return st.integers(low * scale // 100, high * scale // 100).map(lambda n: Decimal(n) / scale)


GRID = Decimal("2.5")
NUDGES = [
    Decimal(0),
    Decimal(0),
    Decimal(0),
    Decimal("0.005"),
    Decimal("-0.005"),
    Decimal("0.004"),
    Decimal("-0.004"),
    Decimal("0.01"),
    Decimal("-0.01"),
]


def bound(high: int) -> st.SearchStrategy[Decimal]:
    """A range bound on a coarse grid, so that generated amounts often sit right on it."""
    return st.integers(0, int(high / GRID)).map(lambda n: n * GRID)


def near_bound(high: int) -> st.SearchStrategy[Decimal]:
    """An event amount on the grid, or a hair (sub-cent or a cent) off it."""
    return st.tuples(bound(high), st.sampled_from(NUDGES)).map(
        lambda t: max(t[0] + t[1], Decimal(0))
    )


@st.composite
def ranges(draw: st.DrawFn, low: int = 0, high: int = 20000) -> dict[str, Any]:
    bounds = sorted(draw(st.lists(bound(high), min_size=2, max_size=2)))
    result = {}
    if draw(st.booleans()):
        result["min"] = bounds[0]
    if draw(st.booleans()) or not result:
        result["max"] = bounds[1]
    return result


def subset(items: list[str], min_size: int = 1) -> st.SearchStrategy[list[str]]:
    if not items:
        return st.just([])
    return st.lists(st.sampled_from(items), min_size=min_size, max_size=len(items), unique=True)


@st.composite
def schedules(draw: st.DrawFn) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if draw(st.booleans()):
        result["days"] = draw(subset(list(WEEKDAYS)))
    if draw(st.booleans()) or not result:
        windows = []
        for _ in range(draw(st.integers(1, 2))):
            start = draw(st.integers(0, 46)) * 30
            end = draw(st.integers(start // 30 + 1, 48)) * 30
            windows.append(
                {
                    "from": f"{start // 60:02d}:{start % 60:02d}",
                    "until": f"{end // 60:02d}:{end % 60:02d}",
                }
            )
        result["hours"] = windows
    return result


@st.composite
def conditions(draw: st.DrawFn, classification: str) -> dict[str, Any]:
    keys = condition_keys(classification)
    result: dict[str, Any] = {}
    for key in keys:
        chance = 7 if key == "products" else 3  # products drive the per-line paths: more often
        if key != "period" and not draw(st.integers(0, 9)) < chance:
            continue
        if key == "segments":
            include = draw(subset(SEGMENTS, 0))
            exclude = draw(subset([s for s in SEGMENTS if s not in include], 0))
            if include or exclude:
                result[key] = {k: v for k, v in (("include", include), ("exclude", exclude)) if v}
        elif key == "units":
            result[key] = draw(subset(UNIT_ENTRIES))
        elif key == "payment_medium":
            value = {}
            if draw(st.booleans()):
                value["brands"] = draw(subset(BRANDS))
            if draw(st.booleans()) or not value:
                value["types"] = draw(subset(TYPES))
            result[key] = value
        elif key == "schedule":
            result[key] = draw(schedules())
        elif key == "products":
            result[key] = [
                {
                    "sku": draw(st.sampled_from(SKU_GLOBS)),
                    **({"amount": draw(ranges(0, 60))} if draw(st.booleans()) else {}),
                }
                for _ in range(draw(st.integers(1, 3)))
            ]
        elif key in ("transaction_amount", "amount", "total_amount", "quantity"):
            result[key] = draw(ranges(0, 300))
        elif key == "count":
            bounds = sorted(draw(st.lists(st.integers(0, 12), min_size=2, max_size=2)))
            result[key] = (
                {"min": bounds[0], "max": bounds[1]} if draw(st.booleans()) else {"min": bounds[0]}
            )
        elif key == "period":
            result[key] = draw(st.sampled_from(["day", "week", "month", "year"]))
        elif key == "event_classifications":
            result[key] = draw(subset(CLASSIFICATION_CODES[classification]))
        elif key == "kpis":
            result[key] = [
                {"kpi": kpi, "min": draw(st.one_of(bound(300), money(-50, 300)))}
                for kpi in draw(subset(["loan-balance", "savings-balance"]))
            ]
        elif key == "platforms":
            result[key] = draw(subset(PLATFORMS))
        elif key == "actions":
            result[key] = draw(subset(ACTIONS))
        elif key == "websites":
            result[key] = draw(subset(WEBSITE_GLOBS))
        elif key == "max_awards":
            result[key] = {"count": draw(st.integers(1, 3)), "window_days": 30}
    return result


@st.composite
def awards(draw: st.DrawFn, classification: str) -> dict[str, Any]:
    if classification == "referral":
        award = {"referred": {"amount": draw(money(1, 20))}}
        if draw(st.booleans()):
            award["referrer"] = {"amount": draw(money(1, 20))}
        return award
    if classification in PERCENTAGE_CLASSIFICATIONS and draw(st.booleans()):
        award: dict[str, Any] = {"percentage": draw(money(1, 50, places=1))}
    else:
        award = {"amount": draw(money(1, 10))}
    if classification in PERCENTAGE_CLASSIFICATIONS and draw(st.booleans()):
        award["max"] = draw(money(1, 8))
    return award


@st.composite
def offers(draw: st.DrawFn, event_type: str) -> list:
    classifications = (
        ["behaviour"]
        if event_type == "behaviour"
        else [c for c, types in CLASSIFICATION_EVENT_TYPES.items() if event_type in types]
    )
    result = []
    for index in range(draw(st.integers(1, 5))):
        per_line = [
            c for c in classifications if c in ("utilise_free_capacity", "increase_revenue_product")
        ]
        classification = draw(st.sampled_from(classifications + per_line * 2))
        fields: dict[str, Any] = {
            "award": draw(awards(classification)),
            "conditions": draw(conditions(classification)),
            "priority": draw(st.integers(0, 2)),
        }
        if classification not in AGGREGATE_CLASSIFICATIONS:
            fields["evaluation"] = draw(st.sampled_from(["immediate", "batch"]))
        group = draw(st.sampled_from([None, None, "g1", "g2"]))
        if group:
            fields["exclusive_group"] = group
        if draw(st.integers(0, 3)) == 0:
            start = datetime(2026, 3, 20) + timedelta(days=draw(st.integers(0, 20)))
            end = start + timedelta(days=draw(st.integers(0, 8)))
            fields["valid"] = {"from": start.date().isoformat(), "until": end.date().isoformat()}
        result.append(offer(classification, f"o{index}", **fields))
    return result


def _near(draw: st.DrawFn, value: Decimal) -> Decimal:
    return max(value + draw(st.sampled_from(NUDGES)), Decimal(0))


def _inside(draw: st.DrawFn, bounds: Any) -> Decimal:
    """A value at, just around, or between the bounds of a range (often on an edge)."""
    edges = [b for b in (bounds.min, bounds.max) if b is not None]
    low = bounds.min if bounds.min is not None else Decimal(0)
    high = bounds.max if bounds.max is not None else low + 50
    middle = ((low + high) / 2).quantize(Decimal("0.01"))
    return _near(draw, draw(st.sampled_from([*edges, middle])))


def _aim(draw: st.DrawFn, target: Any, facts: EventFacts) -> None:
    """Make ``facts`` likely to satisfy (or to just miss) the conditions of ``target``."""
    c = target.conditions
    if c.segments is not None:
        chosen = set(facts.segments) - set(c.segments.exclude)
        if c.segments.include:
            chosen.add(draw(st.sampled_from(c.segments.include)))
        if c.segments.exclude and draw(st.integers(0, 4)) == 0:
            chosen.add(draw(st.sampled_from(c.segments.exclude)))
        facts.segments = sorted(chosen)
    if c.units:
        entry = draw(st.sampled_from(c.units))
        group = [u.code for u in DEFINITION.units if u.group == entry]
        facts.unit = draw(st.sampled_from(group)) if group else entry
    if c.payment_medium is not None:
        if c.payment_medium.brands:
            facts.payment_brand = draw(st.sampled_from(c.payment_medium.brands))
        if c.payment_medium.types:
            facts.payment_type = draw(st.sampled_from(c.payment_medium.types))
    if c.event_classifications:
        facts.classification = draw(st.sampled_from(c.event_classifications))
    local = facts.performed_on.astimezone(NICOSIA)
    if target.valid is not None and draw(st.booleans()):
        day = draw(st.sampled_from([d for d in (target.valid.from_, target.valid.until) if d]))
        local = local.replace(year=day.year, month=day.month, day=day.day)
        if draw(st.booleans()):
            local = local.replace(
                hour=draw(st.sampled_from([0, 23])), minute=draw(st.sampled_from([0, 59]))
            )
    if c.schedule is not None:
        if c.schedule.hours:
            window = draw(st.sampled_from(c.schedule.hours))
            start = int(window.from_[:2]) * 60 + int(window.from_[3:])
            end = int(window.until[:2]) * 60 + int(window.until[3:])
            minute = min(
                max(draw(st.sampled_from([start, start - 1, end - 1, end, (start + end) // 2])), 0),
                1439,
            )
            local = local.replace(hour=minute // 60, minute=minute % 60)
        if c.schedule.days:
            wanted = WEEKDAYS.index(draw(st.sampled_from(c.schedule.days)))
            local = local + timedelta(days=(wanted - local.weekday()) % 7)
    facts.performed_on = (
        local.replace(tzinfo=None).replace(tzinfo=NICOSIA).astimezone(draw(st.sampled_from(ZONES)))
    )
    if c.products and facts.event_type == "purchase":
        lines = list(facts.products)
        for product in c.products:
            skus = [sku for sku in SKUS if fnmatchcase(sku, product.sku)] or SKUS
            total = _inside(draw, product.amount) if product.amount else draw(near_bound(60))
            lines.insert(
                draw(st.integers(0, len(lines))),
                ProductLine(sku=draw(st.sampled_from(skus)), total_amount=total),
            )
        facts.products = lines[:6]
    if c.transaction_amount is not None:
        facts.total_amount = _inside(draw, c.transaction_amount)
    if c.amount is not None:
        facts.amount = _inside(draw, c.amount)
    for target_kpi in c.kpis or []:
        value = _near(draw, target_kpi.min)
        product = draw(st.sampled_from(["LOAN-HOME", "LOAN-BUSINESS", None, "LOAN-CAR"]))
        half = (value / 2).quantize(Decimal("0.01"))
        facts.kpis = [
            *facts.kpis,
            KpiValue(kpi=target_kpi.kpi, product=product, value=half),
            KpiValue(kpi=target_kpi.kpi, product="LOAN-HOME", value=value - half),
        ]
    if c.platforms:
        facts.platform = draw(st.sampled_from(c.platforms))
    if c.actions:
        facts.action = draw(st.sampled_from(c.actions))
    if c.platforms or c.actions:
        facts.event_type = "social_media"
    if c.websites:
        facts.event_type = "web"
        facts.website = draw(st.sampled_from(WEBSITES))
    if c.max_awards is not None:
        facts.awards_in_window = {
            **facts.awards_in_window,
            target.id: draw(st.sampled_from([c.max_awards.count - 1, c.max_awards.count])),
        }
    if target.classification in AGGREGATE_CLASSIFICATIONS:
        totals = PeriodTotals(
            total_amount=_inside(draw, c.total_amount) if c.total_amount else draw(near_bound(300)),
            count=int(_inside(draw, c.count)) if c.count else draw(st.integers(0, 12)),
            quantity=_inside(draw, c.quantity) if c.quantity else draw(near_bound(300)),
        )
        facts.period_totals = {**facts.period_totals, target.id: totals}


@st.composite
def events(draw: st.DrawFn, event_type: str, generated: list) -> EventFacts:
    offer_ids = [o.id for o in generated]
    if event_type == "behaviour":
        event_type = draw(st.sampled_from(["social_media", "web"]))
    day = datetime(2026, 3, 20) + timedelta(days=draw(st.integers(0, 20)))  # crosses the DST change
    minute = draw(st.integers(0, 1439))
    performed_on = (day + timedelta(minutes=minute)).replace(tzinfo=NICOSIA)
    facts = EventFacts(
        event_type=event_type,
        performed_on=performed_on.astimezone(draw(st.sampled_from(ZONES))),
        unit=draw(st.sampled_from([*UNITS, "store-999", None])),
        segments=draw(subset(SEGMENTS, 0)),
        awards_in_window={i: draw(st.integers(0, 3)) for i in offer_ids if draw(st.booleans())},
    )
    codes = CLASSIFICATION_CODES.get(event_type, [])
    facts.classification = draw(st.sampled_from([*codes, "other", None]))
    if event_type in ("purchase", "financial_achievement"):
        facts.payment_brand = draw(st.sampled_from([*BRANDS, None]))
        facts.payment_type = draw(st.sampled_from([*TYPES, None]))
    if event_type == "purchase":
        facts.products = [
            ProductLine(sku=draw(st.sampled_from(SKUS)), total_amount=draw(near_bound(60)))
            for _ in range(draw(st.integers(0, 4)))
        ]
        if draw(st.integers(0, 3)) == 0:
            facts.total_amount = draw(near_bound(300))
        facts.period_totals = {
            i: PeriodTotals(
                total_amount=draw(near_bound(300)),
                count=draw(st.integers(0, 12)),
                quantity=draw(near_bound(300)),
            )
            for i in offer_ids
            if draw(st.booleans())
        }
    if event_type == "financial_achievement" and draw(st.integers(0, 4)):
        facts.amount = draw(near_bound(300))
    if event_type == "financial_statement":
        facts.kpis = [
            KpiValue(
                kpi=draw(st.sampled_from(["loan-balance", "savings-balance", "other"])),
                product=draw(st.sampled_from([None, "LOAN-HOME", "LOAN-BUSINESS", "LOAN-CAR"])),
                value=draw(st.one_of(near_bound(300), money(-100, 300))),
            )
            for _ in range(draw(st.integers(0, 3)))
        ]
    if event_type == "social_media":
        facts.platform = draw(st.sampled_from([*PLATFORMS, None]))
        facts.action = draw(st.sampled_from([*ACTIONS, None]))
    if event_type == "web":
        facts.website = draw(st.sampled_from([*WEBSITES, None]))
    if generated and draw(st.integers(0, 3)):  # most events are aimed at one of the offers
        _aim(draw, draw(st.sampled_from(generated)), facts)
    return facts


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list, list[EventFacts]]:
    event_type = draw(
        st.sampled_from(
            [
                "purchase",
                "purchase",
                "purchase",
                "referral",
                "achievement",
                "financial_achievement",
                "financial_statement",
                "behaviour",
            ]
        )
    )
    generated = draw(offers(event_type))
    return generated, draw(st.lists(events(event_type, generated), min_size=1, max_size=6))


@settings(
    derandomize=True,
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios())
def test_engine_agrees_with_the_reference(scenario: tuple[list, list[EventFacts]]) -> None:
    generated, facts_list = scenario
    loaded = rulesets(*generated, definition=DEFINITION)
    try:
        evaluator = Evaluator(loaded)
        for facts in facts_list:
            for aggregates in (False, True) if facts.event_type == "purchase" else (False,):
                expected_matches = [
                    o.id
                    for o in loaded.offers
                    if (aggregates or o.classification not in AGGREGATE_CLASSIFICATIONS)
                    and reference.matches(loaded, o, facts)
                ]
                assert evaluator.matched_offers(facts, aggregates=aggregates) == expected_matches, (
                    facts
                )
                for mode in ("all", "immediate", "batch"):
                    got = summary(evaluator.evaluate(facts, mode=mode, aggregates=aggregates))
                    want = reference.evaluate(loaded, facts, mode=mode, aggregates=aggregates)
                    assert got == want, (mode, aggregates, msgspec.to_builtins(facts))
    finally:
        loaded.host.close()


@settings(
    derandomize=True,
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios())
def test_merged_rulesets_agree_with_the_reference(
    scenario: tuple[list, list[EventFacts]],
) -> None:
    """Evaluation runs assert an event once into its event type's merged rulesets
    (``compiler.merge_rulesets``): the decisions are the reference's, in every mode."""
    generated, facts_list = scenario
    loaded = rulesets(*generated, definition=DEFINITION)
    evaluator = Evaluator(loaded)
    try:
        for mode in ("all", "immediate", "batch"):
            decided = evaluator.evaluate_many(facts_list, mode=mode, merged=True)
            for facts, got in zip(facts_list, decided, strict=True):
                want = reference.evaluate(loaded, facts, mode=mode)
                assert summary(got) == want, (mode, msgspec.to_builtins(facts))
    finally:
        evaluator.close_merged()
        loaded.host.close()
