"""Why an offer did or did not apply to an event: ``explain(rulesets, facts)``.

The rules engine decides (``Evaluator``): the awards and the offers whose conditions
matched come from it. For every offer of the event's type that did not award, this
module then reads the offer's conditions in plain Python and lists each one the event
fails, with the actual value: ``transaction_amount 42.00 < min 50.00``,
``segment: contact in staff (excluded)``. Values are compared exactly as the engine
compares them (amounts rounded half-up to cents, schedules and validity in the
definition's time zone), and a property test checks that "no failed condition" and
"the engine matched" always agree. An offer that matched and still earned nothing says
why (another offer of its exclusive group won, the award comes to 0.00, or its
``evaluation`` is not part of the simulated mode).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

from rewards.domain.decisions import AwardDecision, Explanation, FailedCondition, Mode, OfferOutcome
from rewards.engine import globs
from rewards.engine.evaluator import Evaluator
from rewards.engine.facts import EventFacts
from rewards.engine.model import (
    AGGREGATE_CLASSIFICATIONS,
    PER_LINE_CLASSIFICATIONS,
    WEEKDAYS,
    Offer,
    ProductCondition,
    Range,
)
from rewards.engine.rulesets import Rulesets

_CENT = Decimal("0.01")


def explain(
    rulesets: Rulesets,
    facts: EventFacts,
    *,
    mode: Mode = "all",
    aggregates: bool | None = None,
    evaluator: Evaluator | None = None,
) -> Explanation:
    """Evaluate ``facts`` (no side effects) and explain every offer of its event type.

    ``aggregates`` (default: when ``facts.period_totals`` is given) includes the period
    aggregate offers, which need the contact's period totals.
    """
    evaluator = evaluator or Evaluator(rulesets)
    if aggregates is None:
        aggregates = bool(facts.period_totals)
    decisions = evaluator.evaluate(facts, mode=mode, aggregates=aggregates)
    matched = set(evaluator.matched_offers(facts, aggregates=aggregates))
    by_offer: dict[str, list[AwardDecision]] = {}
    for decision in decisions:
        by_offer.setdefault(decision.offer_id, []).append(decision)
    outcomes = []
    for offer in rulesets.offers_for_event_type(facts.event_type):
        mine = by_offer.get(offer.id)
        amount = sum((d.amount for d in mine), Decimal("0.00")) if mine else None
        failed: list[FailedCondition] = []
        note = None
        if mine:
            pass  # applied: the amount says it all
        elif offer.classification in AGGREGATE_CLASSIFICATIONS and not aggregates:
            note = (
                "period aggregate: evaluated by evaluation runs over the contact's purchases "
                "of the period (give period_totals to simulate it)"
            )
        elif offer.id not in matched:
            failed = failed_conditions(rulesets, offer, facts)
            if not failed:  # pragma: no cover - the property test keeps both in agreement
                note = "the rules engine did not match this event (no failed condition found)"
        else:
            note = _why_matched_offer_earned_nothing(offer, mode, decisions, rulesets)
        outcomes.append(
            OfferOutcome(
                offer_id=offer.id,
                offer_name=offer.name,
                classification=offer.classification,
                evaluation=offer.evaluation or "immediate",
                status="applied" if mine else "not_applied",
                amount=amount,
                failed=failed,
                note=note,
            )
        )
    return Explanation(
        ruleset_version=rulesets.version,
        event_type=facts.event_type,
        mode=mode,
        awards=decisions,
        total_awarded=sum((d.amount for d in decisions), Decimal("0.00")),
        offers=outcomes,
    )


def _why_matched_offer_earned_nothing(
    offer: Offer, mode: str, decisions: list[AwardDecision], rulesets: Rulesets
) -> str:
    evaluation = offer.evaluation or "immediate"
    if offer.classification not in AGGREGATE_CLASSIFICATIONS and mode not in ("all", evaluation):
        return (
            f"conditions met, but its evaluation is {evaluation} and this evaluation applies "
            f"{mode} offers only"
        )
    if offer.exclusive_group is not None:
        for decision in decisions:
            other = rulesets.offer(decision.offer_id)
            if other is not None and other.exclusive_group == offer.exclusive_group:
                return (
                    f"conditions met, but offer '{other.id}' (priority {other.priority}) of "
                    f"exclusive group '{offer.exclusive_group}' applied instead (this offer: "
                    f"priority {offer.priority})"
                )
    return "conditions met, but the award comes to 0.00"


# --- the conditions, read in plain Python -------------------------------------------


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    return globs.to_regex(pattern)


def _matches(value: str, pattern: str) -> bool:
    return _glob(pattern).fullmatch(value) is not None


def _cents(value: Decimal) -> Decimal:
    return Decimal(value).quantize(_CENT, rounding=ROUND_HALF_UP)


def number(value: Decimal | int) -> str:
    """An amount as analysts write it: two decimals, more only when the value has them."""
    value = Decimal(value)
    if value == value.quantize(_CENT):
        return str(value.quantize(_CENT))
    return format(value.normalize(), "f")


def _range_failures(
    name: str, value: Decimal | None, bounds: Range | None, show: str | None = None
) -> list[str]:
    """``name 42.00 < min 50.00`` / ``name 250.00 > max 200.00``; nothing when inside."""
    if bounds is None:
        return []
    if value is None:
        return [f"{name}: none given"]
    shown = show if show is not None else number(value)
    if bounds.min is not None and value < bounds.min:
        return [f"{name} {shown} < min {_bound(bounds.min, show)}"]
    if bounds.max is not None and value > bounds.max:
        return [f"{name} {shown} > max {_bound(bounds.max, show)}"]
    return []


def _bound(value: Decimal, show: str | None) -> str:
    if show is not None and value == value.to_integral_value():  # counts: 10, not 10.00
        return str(value.to_integral_value())
    return number(value)


def _names(values: Iterable[str]) -> str:
    return ", ".join(values)


def _local(rulesets: Rulesets, moment: datetime) -> datetime:
    return moment.astimezone(rulesets.time_zone)


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _line_reason(product_conditions: list[ProductCondition], sku: str, total: Decimal) -> str:
    for condition in product_conditions:
        if _matches(sku, condition.sku) and condition.amount is not None:
            [reason] = _range_failures("amount", total, condition.amount) or ["?"]
            return f"{reason} for {condition.sku}"
    return f"sku matches none of {_names(c.sku for c in product_conditions)}"


def failed_conditions(rulesets: Rulesets, offer: Offer, facts: EventFacts) -> list[FailedCondition]:
    """Every condition of ``offer`` that ``facts`` does not meet (empty: all are met)."""
    failed: list[FailedCondition] = []

    def fail(condition: str, message: str) -> None:
        failed.append(FailedCondition(condition=condition, message=message))

    c = offer.conditions
    local = _local(rulesets, facts.performed_on)
    day = local.date()
    if offer.valid is not None:
        if offer.valid.from_ is not None and day < offer.valid.from_:
            fail(
                "valid",
                f"valid: performed on {day} (business date), before from {offer.valid.from_}",
            )
        if offer.valid.until is not None and day > offer.valid.until:
            fail(
                "valid",
                f"valid: performed on {day} (business date), after until {offer.valid.until}",
            )
    if c.segments is not None:
        segments = list(dict.fromkeys(facts.segments))
        if c.segments.include and not set(segments) & set(c.segments.include):
            has = f"contact in {_names(segments)}" if segments else "contact has no segments"
            fail("segments", f"segments: {has}, none of {_names(c.segments.include)}")
        excluded = [s for s in segments if s in c.segments.exclude]
        if excluded:
            fail("segments", f"segment: contact in {_names(excluded)} (excluded)")
    if c.units:
        unit = rulesets.unit(facts.unit) if facts.unit else None
        groups = {u.group for u in rulesets.definition.units}
        if not facts.unit:
            fail("units", f"units: no performed_by_unit (needs {_names(c.units)})")
        elif not any(
            (unit is not None and unit.group == code) if code in groups else facts.unit == code
            for code in c.units
        ):
            where = f"group {unit.group}" if unit else "not in the definition"
            fail("units", f"units: {facts.unit} ({where}) not in {_names(c.units)}")
    if c.merchants:
        merchant = rulesets.merchant_of_unit(facts.unit)
        if merchant is None or merchant.id not in c.merchants:
            where = f"of merchant {merchant.id}" if merchant else "of no merchant"
            fail(
                "merchants",
                f"merchants: unit {facts.unit or '(none)'} {where}, not {_names(c.merchants)}",
            )
    if c.payment_medium is not None and facts.event_type in ("purchase", "financial_achievement"):
        for key, value, wanted in (
            ("brand", facts.payment_brand, c.payment_medium.brands),
            ("type", facts.payment_type, c.payment_medium.types),
        ):
            if wanted and value not in wanted:
                found = f"{key} {value} not in" if value else f"no {key} (needs"
                closing = "" if value else ")"
                fail("payment_medium", f"payment_medium: {found} {_names(wanted)}{closing}")
    if c.schedule is not None:
        weekday = WEEKDAYS[local.weekday()]
        if c.schedule.days and weekday not in c.schedule.days:
            fail("schedule", f"schedule: {weekday} not in {_names(c.schedule.days)}")
        minute = local.hour * 60 + local.minute
        windows = c.schedule.hours
        if windows and not any(_minutes(h.from_) <= minute < _minutes(h.until) for h in windows):
            shown = _names(f"{h.from_}-{h.until}" for h in windows)
            fail(
                "schedule",
                f"schedule: {local:%H:%M} ({rulesets.definition.time_zone}) not in {shown}",
            )
    if c.products and offer.classification in PER_LINE_CLASSIFICATIONS:
        lines = [(line.sku, _cents(line.total_amount)) for line in facts.products]
        matching = [
            sku
            for sku, total in lines
            if any(
                _matches(sku, p.sku) and not _range_failures("amount", total, p.amount)
                for p in c.products
            )
        ]
        if not lines:
            fail("products", "products: the purchase has no product lines")
        elif not matching:
            reasons = "; ".join(
                f"{sku} {number(total)}: {_line_reason(c.products, sku, total)}"
                for sku, total in lines
            )
            fail("products", f"products: no line matches ({reasons})")
    if c.transaction_amount is not None:
        total = (
            _cents(facts.total_amount)
            if facts.total_amount is not None
            else sum((_cents(p.total_amount) for p in facts.products), Decimal("0.00"))
        )
        for message in _range_failures("transaction_amount", total, c.transaction_amount):
            fail("transaction_amount", message)
    if c.amount is not None:
        amount = None if facts.amount is None else _cents(facts.amount)
        for message in _range_failures("amount", amount, c.amount):
            fail("amount", message)
    if c.event_classifications:
        names = _names(c.event_classifications)
        if facts.classification is None:
            fail(
                "event_classifications",
                f"event_classifications: no classification (needs {names})",
            )
        elif facts.classification not in c.event_classifications:
            fail(
                "event_classifications",
                f"event_classifications: {facts.classification} not in {names}",
            )
    for target in c.kpis or []:
        declared = next((k for k in rulesets.definition.kpis if k.code == target.kpi), None)
        products = declared.products if declared else []
        values = [
            e.value
            for e in facts.kpis
            if e.kpi == target.kpi and (not products or e.product in products)
        ]
        if not values:
            counted = f" (counted products: {_names(products)})" if products else ""
            fail("kpis", f"kpis: no {target.kpi} value{counted}")
        else:
            total = _cents(sum(values, Decimal(0)))
            if total < target.min:
                fail("kpis", f"kpis: {target.kpi} {number(total)} < min {number(target.min)}")
    if c.platforms or c.actions:
        if facts.event_type != "social_media":
            fail(
                "platforms" if c.platforms else "actions",
                f"platforms/actions: a {facts.event_type} event is not a social media event",
            )
        else:
            if c.platforms and facts.platform not in c.platforms:
                found = facts.platform or "no platform"
                fail("platforms", f"platforms: {found} not in {_names(c.platforms)}")
            if c.actions and facts.action not in c.actions:
                found = facts.action or "no action"
                fail("actions", f"actions: {found} not in {_names(c.actions)}")
    if c.websites:
        if facts.event_type != "web":
            fail("websites", f"websites: a {facts.event_type} event is not a web visit")
        elif not facts.website:
            fail("websites", "websites: no website given")
        elif not any(_matches(facts.website, w) for w in c.websites):
            fail("websites", f"websites: {facts.website} matches none of {_names(c.websites)}")
    if c.max_awards is not None:
        given = int(facts.awards_in_window.get(offer.id, 0))
        if given >= c.max_awards.count:
            fail(
                "max_awards",
                f"max_awards: {given} award(s) in the last {c.max_awards.window_days} days, "
                f"max {c.max_awards.count}",
            )
    if offer.classification in AGGREGATE_CLASSIFICATIONS:
        totals = facts.period_totals.get(offer.id)
        if totals is None:
            fail("period", f"period: no period totals given for this {c.period} offer")
        else:
            for key, measured, show in (
                ("total_amount", _cents(totals.total_amount), None),
                ("count", Decimal(totals.count), str(totals.count)),
                ("quantity", _cents(totals.quantity), None),
            ):
                for message in _range_failures(key, measured, getattr(c, key), show):
                    fail(key, message)
    return failed


__all__ = ["Explanation", "FailedCondition", "OfferOutcome", "explain", "failed_conditions"]
