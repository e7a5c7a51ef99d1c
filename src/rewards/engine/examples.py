"""Offers carry their own tests: every ``examples`` entry is run on load.

An example is an event written like the API's event body (docs/rulesets.md), plus the
contact context (``segments``; ``prior_awards``: a number, the awards the offer being
tested already gave in its ``max_awards`` window, or ``{offer id: number}`` for several
offers, as in simulations), and what the offer must award for it:
``expect: {award: 2.50}`` (``referrer:`` for referrals, ``lines: [{index, amount}]``
for per-line classifications; ``award: 0`` means not awarded) or ``not_awarded: true``.
The event is evaluated by the real compiler and engine (the host of the load being
checked) against the whole folder in mode ``all`` (period aggregate offers with their
``period_totals``), so exclusive groups count; the offer's own decision is compared.
A disagreement refuses the folder at the example's line and column.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from rewards.domain.decisions import AwardDecision
from rewards.domain.money import quantize
from rewards.engine.adapter import EngineError, EngineHost
from rewards.engine.compiler import CompileError
from rewards.engine.evaluator import Evaluator
from rewards.engine.facts import EventFacts, KpiValue, PeriodTotals, ProductLine
from rewards.engine.model import CLASSIFICATION_EVENT_TYPES, Definition, Example, Offer
from rewards.engine.rulesets import RulesetProblem, Rulesets
from rewards.engine.sources import Path_, Position, describe_path


class ExampleError(ValueError):
    def __init__(self, path: Path_, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _decimal(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _event_type(offer: Offer, event: dict[str, Any]) -> str:
    types = CLASSIFICATION_EVENT_TYPES[offer.classification]
    if "type" in event:
        return str(event["type"])
    if len(types) == 1:
        return types[0]
    return "web" if "website" in event else "social_media"


def _prior_awards(offer: Offer, value: Any) -> dict[str, int]:
    """A number counts for the offer being tested; a mapping names the offers."""
    if isinstance(value, dict):
        return {str(key): int(count) for key, count in value.items()}
    return {offer.id: int(value)}


def example_facts(definition: Definition, offer: Offer, event: dict[str, Any]) -> EventFacts:
    """The ``EventFacts`` an example event stands for (raises ``ExampleError``)."""
    try:
        performed_on = datetime.fromisoformat(str(event["performed_on"]))
    except ValueError as error:
        raise ExampleError(
            ("event", "performed_on"), f"not an RFC 3339 timestamp: {error}"
        ) from error
    if performed_on.tzinfo is None:
        raise ExampleError(("event", "performed_on"), "performed_on needs a zone (Z or +02:00)")
    event_type = _event_type(offer, event)
    medium = event.get("payment_medium") or {}
    facts = EventFacts(
        event_type=event_type,
        performed_on=performed_on,
        classification=event.get("classification"),
        unit=event.get("performed_by_unit"),
        segments=list(event.get("segments", [])),
        awards_in_window=_prior_awards(offer, event.get("prior_awards", 0)),
        payment_brand=medium.get("brand"),
        payment_type=medium.get("type"),
        platform=event.get("platform"),
        action=event.get("action"),
        website=event.get("website"),
    )
    if event_type == "purchase":
        currency = event.get("currency", definition.currency)
        if currency == definition.currency:
            rate = Decimal(1)
        elif currency in definition.exchange_rates:
            rate = definition.exchange_rates[currency]
        else:
            raise ExampleError(("event", "currency"), f"no exchange rate for {currency}")
        products = []
        for line in event.get("products", []):
            if "total_amount" in line:
                total = _decimal(line["total_amount"])
            else:
                quantity = _decimal(line.get("quantity", 1))
                total = quantity * _decimal(line.get("net_amount", 0)) + _decimal(
                    line.get("vat_amount", 0)
                )
            products.append(
                ProductLine(
                    sku=line["sku"],
                    quantity=_decimal(line.get("quantity", 1)),
                    total_amount=quantize(total * rate),
                )
            )
        facts.products = products
        lines_total = sum((p.total_amount for p in products), Decimal(0))
        if "total_amount" in event:
            total = quantize(_decimal(event["total_amount"]) * rate)
            if products and total != lines_total:
                raise ExampleError(
                    ("event", "total_amount"),
                    f"total_amount {total} disagrees with the lines (they add up to {lines_total})",
                )
            facts.total_amount = total
        else:
            facts.total_amount = lines_total
        if "period_totals" in event:
            totals = event["period_totals"]
            facts.period_totals = {
                offer.id: PeriodTotals(
                    total_amount=_decimal(totals.get("total_amount", 0)),
                    count=int(totals.get("count", 0)),
                    quantity=_decimal(totals.get("quantity", 0)),
                )
            }
    if "amount" in event:
        facts.amount = _decimal(event["amount"])
    if "kpis" in event:
        facts.kpis = [
            KpiValue(kpi=k["kpi"], product=k.get("product"), value=_decimal(k["value"]))
            for k in event["kpis"]
        ]
    return facts


def check_example_outcome(
    rulesets: Rulesets, evaluator: Evaluator, offer: Offer, example: Example
) -> str | None:
    """None when the example holds, else what went wrong (``ExampleError``: a bad event)."""
    facts = example_facts(rulesets.definition, offer, example.event)
    decisions = evaluator.evaluate(
        facts, mode="all", aggregates=offer.classification in _AGGREGATES
    )
    mine = [d for d in decisions if d.offer_id == offer.id]
    main = next((d for d in mine if d.beneficiary != "referrer"), None)
    referrer = next((d for d in mine if d.beneficiary == "referrer"), None)
    got = main.amount if main else Decimal("0.00")
    if example.not_awarded:
        want, want_referrer, want_lines = Decimal(0), None, None
    else:
        assert example.expect is not None
        want, want_referrer, want_lines = (
            example.expect.award,
            example.expect.referrer,
            example.expect.lines,
        )
    problems = []
    if got != want:
        problems.append(
            f"expected award {quantize(want)}, got {got}{_why(rulesets, evaluator, offer, facts, mine)}"
        )
    if (offer.classification == "referral" and main is not None) or want_referrer is not None:
        got_referrer = referrer.amount if referrer else Decimal("0.00")
        if got_referrer != (want_referrer or 0):
            problems.append(
                f"expected referrer award {quantize(want_referrer or Decimal(0))}, got {got_referrer}"
            )
    if want_lines is not None:
        got_lines = [(line.index, line.amount) for line in (main.lines or [])] if main else []
        expected = [(line.index, quantize(line.amount)) for line in want_lines if line.amount > 0]
        if got_lines != expected:
            shown = ", ".join(f"{i}: {a}" for i, a in got_lines) or "none"
            problems.append(
                f"expected lines {', '.join(f'{i}: {a}' for i, a in expected) or 'none'}, got {shown}"
            )
    return "; ".join(problems) or None


def _why(
    rulesets: Rulesets,
    evaluator: Evaluator,
    offer: Offer,
    facts: EventFacts,
    mine: list[AwardDecision],
) -> str:
    if mine:
        return ""
    matched = evaluator.matched_offers(facts, aggregates=offer.classification in _AGGREGATES)
    if offer.id not in matched:
        return " (the offer's conditions do not match this event)"
    if offer.exclusive_group:
        return f" (the offer matched but another offer of exclusive group '{offer.exclusive_group}' won)"
    return " (the offer matched but its award comes to 0.00)"


_AGGREGATES = frozenset(
    {"loyalty_transaction_amount", "loyalty_transaction_number", "loyalty_item_quantity"}
)


def check_rulesets(
    rulesets: Rulesets, display: Callable[[str], str], *, run_examples: bool = True
) -> list[RulesetProblem]:
    """Create the engine host (reporting offers it refuses) and run every example."""

    try:
        rulesets.host  # noqa: B018
    except CompileError as error:
        return [_offer_problem(rulesets, display, error.offer_id, ("conditions",), str(error))]
    except EngineError:
        return _refused_offers(rulesets, display)
    if not run_examples:
        return []
    evaluator = Evaluator(rulesets)
    problems: list[RulesetProblem] = []
    positions: dict[str, int] = {}
    for offer in rulesets.offers:
        index = positions.get(offer.ruleset_file, 0)
        positions[offer.ruleset_file] = index + 1
        sources = rulesets._sources.get(offer.ruleset_file)
        for number, example in enumerate(offer.examples):
            path: Path_ = ("offers", index, "examples", number)
            try:
                message = check_example_outcome(rulesets, evaluator, offer, example)
            except ExampleError as error:
                path, message = (*path, *error.path), error.message
            if message is None:
                continue
            position = sources.value(path) if sources else Position(1, 1)
            problems.append(
                RulesetProblem(
                    display(offer.ruleset_file),
                    position.line,
                    position.column,
                    f"{describe_path(path, offer.id)}: the example fails: {message}",
                )
            )
    return problems


def _refused_offers(rulesets: Rulesets, display: Callable[[str], str]) -> list[RulesetProblem]:
    """Find which offers durable-rules refuses, one scratch host per rule (error path only)."""
    compiled = rulesets.compiled
    problems = []
    positions: dict[str, int] = {}
    for item in compiled.offers:
        offer = item.offer
        index = positions.get(offer.ruleset_file, 0)
        positions[offer.ruleset_file] = index + 1
        for name, rules in compiled.rulesets.items():
            if item.rule not in rules or not (
                name == item.ruleset or name.startswith(item.ruleset + "__")
            ):
                continue
            try:
                EngineHost({f"check_{item.rule}_{name}": {item.rule: rules[item.rule]}}).close()
            except EngineError as error:
                sources = rulesets._sources.get(offer.ruleset_file)
                path: Path_ = ("offers", index, "conditions")
                position = sources.value(path) if sources else Position(1, 1)
                problems.append(
                    RulesetProblem(
                        display(offer.ruleset_file),
                        position.line,
                        position.column,
                        f"{describe_path(path, offer.id)}: the rules engine cannot compile "
                        f"these conditions ({error})",
                    )
                )
                break
    return problems or [RulesetProblem(display("."), 1, 1, "the rules engine refused the rulesets")]


def _offer_problem(
    rulesets: Rulesets, display: Callable[[str], str], offer_id: str, suffix: Path_, message: str
) -> RulesetProblem:
    offer = rulesets.offer(offer_id)
    assert offer is not None
    index = [o.id for o in rulesets.offers if o.ruleset_file == offer.ruleset_file].index(offer_id)
    path: Path_ = ("offers", index, *suffix)
    sources = rulesets._sources.get(offer.ruleset_file)
    position = sources.value(path) if sources else Position(1, 1)
    return RulesetProblem(
        display(offer.ruleset_file),
        position.line,
        position.column,
        f"{describe_path(path, offer_id)}: {message}",
    )
