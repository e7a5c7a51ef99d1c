"""Reference evaluator: the documented semantics in plain Python, no durable-rules.

It reads the same loaded model (``Rulesets``) and ``EventFacts`` as the engine path and
shares none of its code (globs via ``fnmatch``, arithmetic written out here), so the
property test catches compiler, fact-building and adapter mistakes. Amounts are rounded
half-up to cents before they are compared or used (docs/rulesets.md).
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from fnmatch import fnmatchcase
from zoneinfo import ZoneInfo

from rewards.engine import EventFacts, Rulesets
from rewards.engine.model import (
    AGGREGATE_CLASSIFICATIONS,
    CLASSIFICATION_EVENT_TYPES,
    PER_LINE_CLASSIFICATIONS,
    Offer,
    Range,
)

CENT = Decimal("0.01")
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

Decision = tuple[str, str, Decimal, tuple[tuple[int, Decimal], ...] | None]


def cents(value: Decimal) -> Decimal:
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def in_range(value: Decimal | None, bounds: Range | None) -> bool:
    if bounds is None:
        return True
    if value is None:
        return False
    if bounds.min is not None and value < bounds.min:
        return False
    return not (bounds.max is not None and value > bounds.max)


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def matching_lines(offer: Offer, facts: EventFacts) -> list[int]:
    products = offer.conditions.products
    result = []
    for index, line in enumerate(facts.products):
        total = cents(line.total_amount)
        if products is None or any(
            fnmatchcase(line.sku, p.sku) and in_range(total, p.amount) for p in products
        ):
            result.append(index)
    return result


def purchase_total(facts: EventFacts) -> Decimal:
    if facts.total_amount is not None:
        return cents(facts.total_amount)
    return sum((cents(line.total_amount) for line in facts.products), Decimal("0.00"))


def matches(rulesets: Rulesets, offer: Offer, facts: EventFacts) -> bool:
    c = offer.conditions
    definition = rulesets.definition
    if facts.event_type not in CLASSIFICATION_EVENT_TYPES[offer.classification]:
        return False
    local: datetime = facts.performed_on.astimezone(ZoneInfo(definition.time_zone))
    if offer.valid is not None:
        if offer.valid.from_ is not None and local.date() < offer.valid.from_:
            return False
        if offer.valid.until is not None and local.date() > offer.valid.until:
            return False
    if c.segments is not None:
        if c.segments.include and not set(facts.segments) & set(c.segments.include):
            return False
        if set(facts.segments) & set(c.segments.exclude):
            return False
    if c.units:
        group = next((u.group for u in definition.units if u.code == facts.unit), None)
        if facts.unit not in c.units and group not in c.units:
            return False
    if c.payment_medium is not None:
        if c.payment_medium.brands and facts.payment_brand not in c.payment_medium.brands:
            return False
        if c.payment_medium.types and facts.payment_type not in c.payment_medium.types:
            return False
    if c.schedule is not None:
        if c.schedule.days and DAYS[local.weekday()] not in c.schedule.days:
            return False
        minute = local.hour * 60 + local.minute
        if c.schedule.hours and not any(
            _minutes(h.from_) <= minute < _minutes(h.until) for h in c.schedule.hours
        ):
            return False
    if (
        offer.classification in PER_LINE_CLASSIFICATIONS
        and c.products
        and not matching_lines(offer, facts)
    ):
        return False
    if c.transaction_amount is not None and not in_range(
        purchase_total(facts), c.transaction_amount
    ):
        return False
    if c.amount is not None and not in_range(
        None if facts.amount is None else cents(facts.amount), c.amount
    ):
        return False
    if c.event_classifications and facts.classification not in c.event_classifications:
        return False
    for target in c.kpis or []:
        products = next(k.products for k in definition.kpis if k.code == target.kpi)
        entries = [
            e.value
            for e in facts.kpis
            if e.kpi == target.kpi and (not products or e.product in products)
        ]
        if not entries or cents(sum(entries, Decimal(0))) < target.min:
            return False
    if c.platforms or c.actions:
        if facts.event_type != "social_media":
            return False
        if c.platforms and facts.platform not in c.platforms:
            return False
        if c.actions and facts.action not in c.actions:
            return False
    if c.websites:
        if facts.event_type != "web" or not facts.website:
            return False
        if not any(fnmatchcase(facts.website, w) for w in c.websites):
            return False
    if c.max_awards is not None and facts.awards_in_window.get(offer.id, 0) >= c.max_awards.count:
        return False
    if offer.classification in AGGREGATE_CLASSIFICATIONS:
        totals = facts.period_totals.get(offer.id)
        if totals is None:
            return False
        if not in_range(cents(totals.total_amount), c.total_amount):
            return False
        if not in_range(Decimal(totals.count), c.count):
            return False
        if not in_range(cents(totals.quantity), c.quantity):
            return False
    return True


def _percent(base: Decimal, percentage: Decimal) -> Decimal:
    return (base * percentage / 100).quantize(CENT, rounding=ROUND_HALF_UP)


def awards(rulesets: Rulesets, offer: Offer, facts: EventFacts) -> list[Decision]:
    award = offer.award
    if offer.classification == "referral":
        assert award.referred is not None
        result: list[Decision] = [(offer.id, "referred", cents(award.referred.amount), None)]
        if award.referrer is not None:
            result.append((offer.id, "referrer", cents(award.referrer.amount), None))
        return [d for d in result if d[2] > 0] if result[0][2] > 0 else []
    if offer.classification in PER_LINE_CLASSIFICATIONS:
        left = None if award.max is None else cents(award.max)
        lines = []
        for index in matching_lines(offer, facts):
            total = cents(facts.products[index].total_amount)
            value = (
                cents(award.amount)
                if award.amount is not None
                else _percent(total, award.percentage)
            )
            if left is not None:
                value = min(value, left)
                left -= value
            if value > 0:
                lines.append((index, value))
        if not lines:
            return []
        return [(offer.id, "contact", sum((v for _, v in lines), Decimal("0.00")), tuple(lines))]
    if award.amount is not None:
        value = cents(award.amount)
    else:
        base = None
        if offer.classification == "increase_revenue_transaction":
            base = purchase_total(facts)
        elif offer.classification == "financial_achievement":
            base = None if facts.amount is None else cents(facts.amount)
        elif offer.classification == "loyalty_transaction_amount":
            base = cents(facts.period_totals[offer.id].total_amount)
        value = Decimal("0.00") if base is None else _percent(base, award.percentage)
    if award.max is not None:
        value = min(value, cents(award.max))
    return [(offer.id, "contact", value, None)] if value > 0 else []


def evaluate(
    rulesets: Rulesets, facts: EventFacts, *, mode: str = "all", aggregates: bool = False
) -> list[Decision]:
    candidates: list[tuple[Offer, list[Decision]]] = []
    for offer in rulesets.offers:
        if offer.classification in AGGREGATE_CLASSIFICATIONS:
            if not aggregates:
                continue
        elif mode != "all" and offer.evaluation != mode:
            continue
        if not matches(rulesets, offer, facts):
            continue
        decisions = awards(rulesets, offer, facts)
        if decisions:
            candidates.append((offer, decisions))
    winners: dict[str, Offer] = {}
    for offer, _ in candidates:
        group = offer.exclusive_group
        if group is not None and (group not in winners or offer.priority > winners[group].priority):
            winners[group] = offer
    return [
        d
        for offer, decisions in candidates
        if offer.exclusive_group is None or winners[offer.exclusive_group] is offer
        for d in decisions
    ]
