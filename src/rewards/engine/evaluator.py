"""Evaluate one event against the loaded offers: the engine matches, Python pays out.

``Evaluator(rulesets).evaluate(facts, mode=...)`` returns the ``AwardDecision``s of one
event, in offer file order (a referral's referred decision right before its referrer):

1. ``compiler.prepare`` flattens the ``EventFacts`` (caller's thread);
2. on the engine thread the event fact is asserted into every ruleset of its event
   type, and for per-line classifications with a match, the line facts into
   ``<classification>__lines`` (see :mod:`rewards.engine.compiler`);
3. back on the caller's thread: the matched offers of the wanted ``mode``, amounts from
   :mod:`rewards.domain.awards`, zero awards dropped, then exclusive-group precedence.

Modes: ``immediate`` = offers with ``evaluation: immediate`` (what a request applies
at once); ``batch`` = offers with ``evaluation: batch`` only; ``all`` = every per-event
offer (what an evaluation run applies to an event nobody evaluated yet; the awards'
unique (event, offer, beneficiary) keeps immediate awards from being given twice). The period
aggregates (loyalty_transaction_amount/_number/loyalty_item_quantity) are left out
unless ``aggregates=True`` and ``EventFacts.period_totals`` holds their totals.

Exclusive groups compare the offers that actually award the event in this call (a
match worth 0.00 does not block its group).

Many events (evaluation runs): ``evaluate_many`` makes one trip to the engine thread for
all of them; ``evaluate_prepared`` takes events a caller flattened itself
(``compiler.prepare_fact``: runs build purchase facts from the stored JSON), and
``per_event=False`` matches only the period-aggregate offers. Each event is still
asserted and retracted on its own: asserting many events' facts in one ``assert_facts``
call was measured (bench on 20,000 purchases, batches of 10 to 5,000) and is no faster,
the engine's cost being per fact, not per call.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import date
from decimal import Decimal

from rewards.domain.awards import choose_exclusive, event_award, line_awards
from rewards.domain.budgets import budget_period
from rewards.domain.decisions import AwardDecision, AwardLine, Beneficiary, BudgetCharge, Mode
from rewards.domain.money import from_cents, to_cents
from rewards.engine.adapter import EngineHost, Hit, call
from rewards.engine.compiler import (
    EVENT_FACT_ID,
    RETRACT_EVENT,
    CompiledOffer,
    CompiledRulesets,
    MergedRulesets,
    PreparedEvent,
    merge_rulesets,
    prepare,
)
from rewards.engine.facts import EventFacts
from rewards.engine.rulesets import Rulesets

_MODES = ("immediate", "batch", "all")


class _Candidate:
    __slots__ = ("decisions", "exclusive_group", "priority")

    def __init__(self, offer: CompiledOffer, decisions: list[AwardDecision]) -> None:
        self.exclusive_group = offer.offer.exclusive_group
        self.priority = offer.offer.priority
        self.decisions = decisions


def _wanted(offer: CompiledOffer, mode: str, aggregates: bool) -> bool:
    if offer.aggregate:
        return aggregates
    return mode == "all" or offer.offer.evaluation == mode


class Evaluator:
    """Decides the awards of events against one loaded ``Rulesets`` (thread-safe)."""

    def __init__(self, rulesets: Rulesets) -> None:
        self.rulesets = rulesets
        self._compiled: CompiledRulesets = rulesets.compiled
        self._host: EngineHost = rulesets.host
        self._merged: MergedRulesets | None = None  # see merged()
        self._merged_host: EngineHost | None = None
        self._merging = threading.Lock()

    def merged(self) -> MergedRulesets:
        """The per-event rulesets merged per event type (``compiler.MergedRulesets``, for
        evaluation runs: pass it to ``prepare``/``prepare_fact``), built on first use."""
        with self._merging:
            if self._merged is None:
                merged = merge_rulesets(self._compiled)
                self._merged_host = EngineHost(merged.definitions)
                self._merged = merged
        return self._merged

    def close_merged(self) -> None:
        """Release the merged rulesets' engine rulesets now (``EngineHost.close``: only for
        an evaluator nothing uses any more, e.g. tests building many small sets)."""
        with self._merging:
            host, self._merged_host, self._merged = self._merged_host, None, None
        if host is not None:
            host.close()

    def evaluate(
        self, facts: EventFacts, *, mode: Mode, aggregates: bool = False
    ) -> list[AwardDecision]:
        """The awards ``facts`` earns (empty when no offer applies)."""
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, not {mode!r}")
        prepared = prepare(self._compiled, facts, aggregates=aggregates)
        hits = call(self._match, prepared, mode, aggregates, False)
        return self._decide(prepared, hits, mode, aggregates)

    def evaluate_many(
        self,
        events: Sequence[EventFacts],
        *,
        mode: Mode,
        aggregates: bool = False,
        per_event: bool = True,
        merged: bool = False,
    ) -> list[list[AwardDecision]]:
        """``evaluate`` for many events with one trip to the engine thread (batch runs).

        ``per_event=False`` (with ``aggregates``): only the period-aggregate offers are
        matched. Only for a caller that keeps nothing but aggregate decisions and whose
        aggregate offers are in no exclusive group (a per-event offer of their group
        could otherwise win over them). ``merged``: through the merged rulesets
        (``merged()``), as evaluation runs do."""
        compiled = self._compiled
        together = self.merged() if merged else None
        prepared = [
            prepare(compiled, facts, aggregates=aggregates, per_event=per_event, merged=together)
            for facts in events
        ]
        return self.evaluate_prepared(prepared, mode=mode, aggregates=aggregates)

    def evaluate_prepared(
        self, prepared: Sequence[PreparedEvent], *, mode: Mode, aggregates: bool = False
    ) -> list[list[AwardDecision]]:
        """``evaluate_many`` of events already flattened by ``compiler.prepare`` or
        ``compiler.prepare_fact`` (evaluation runs build purchase facts themselves)."""
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, not {mode!r}")
        hits = call(self._match_many, prepared, mode, aggregates)
        return [self._decide(p, h, mode, aggregates) for p, h in zip(prepared, hits, strict=True)]

    def matched_offers(self, facts: EventFacts, *, aggregates: bool = False) -> list[str]:
        """Ids of every offer the engine matched, in file order (any mode, before amounts and groups)."""
        prepared = prepare(self._compiled, facts, aggregates=aggregates)
        hits = call(self._match, prepared, "all", aggregates, False)
        by_rule = self._compiled.by_rule
        matched = sorted({by_rule[(r, rule)].index for r, rule, f in hits if f == EVENT_FACT_ID})
        return [self._compiled.offers[index].offer.id for index in matched]

    # --- engine thread ---

    def _match_many(
        self, prepared: Sequence[PreparedEvent], mode: str, aggregates: bool
    ) -> list[list[tuple[str, str, str]]]:
        return [self._match(p, mode, aggregates, False) for p in prepared]

    def _match(
        self, prepared: PreparedEvent, mode: str, aggregates: bool, stock: bool
    ) -> list[tuple[str, str, str]]:
        """(ruleset, rule, fact id) of every rule that fired for this event (a merged
        ruleset's hits as the rules of the rulesets merged into it)."""
        result: list[tuple[str, str, str]] = []
        merged = self._merged
        for ruleset, payload in prepared.payloads:
            if merged is not None and ruleset in merged.definitions:
                assert self._merged_host is not None
                fired = self._fire(self._merged_host, ruleset, payload, stock)
                found: dict[str, list[Hit]] = {}
                for rule, fact in fired:
                    original, original_rule = merged.rules[(ruleset, rule)]
                    found.setdefault(original, []).append((original_rule, fact))
                for original, hits in found.items():
                    self._add_hits(prepared, original, hits, mode, aggregates, stock, result)
                continue
            hits = self._fire(self._host, ruleset, payload, stock)
            if hits:
                self._add_hits(prepared, ruleset, hits, mode, aggregates, stock, result)
        return result

    @staticmethod
    def _fire(host: EngineHost, ruleset: str, payload: str, stock: bool) -> list[Hit]:
        if stock:
            return host.fire(ruleset, payload, RETRACT_EVENT, stock=True)
        return host.fire_event(ruleset, payload, RETRACT_EVENT)

    def _add_hits(
        self,
        prepared: PreparedEvent,
        ruleset: str,
        hits: list[Hit],
        mode: str,
        aggregates: bool,
        stock: bool,
        result: list[tuple[str, str, str]],
    ) -> None:
        """The event fact's hits in ``ruleset``, and the line facts' when a per-line offer
        of it matched."""
        by_rule = self._compiled.by_rule
        result += [(ruleset, rule, fact) for rule, fact in hits]
        if prepared.skus and any(
            by_rule[(ruleset, rule)].per_line
            and _wanted(by_rule[(ruleset, rule)], mode, aggregates)
            for rule, _ in hits
        ):
            for lines in self._compiled.line_rulesets[ruleset]:
                line_hits = self._host.fire(
                    lines,
                    prepared.lines_json(),
                    prepared.retract_lines_json(),
                    many=True,
                    stock=stock,
                )
                result += [(lines, rule, fact) for rule, fact in line_hits]

    # --- caller thread ---

    def _decide(
        self, prepared: PreparedEvent, hits: list[tuple[str, str, str]], mode: str, aggregates: bool
    ) -> list[AwardDecision]:
        if not hits:
            return []
        by_rule = self._compiled.by_rule
        matched: dict[int, CompiledOffer] = {}
        lines: dict[int, set[int]] = {}
        for ruleset, rule, fact in hits:
            offer = by_rule[(ruleset, rule)]
            if fact == EVENT_FACT_ID:
                matched[offer.index] = offer
            else:  # a rule fires once per matching $or alternative: a set
                lines.setdefault(offer.index, set()).add(int(fact))
        candidates = []
        for index in sorted(matched):
            offer = matched[index]
            if not _wanted(offer, mode, aggregates):
                continue
            decisions = self._award(offer, prepared, sorted(lines.get(index, ())))
            if decisions:
                candidates.append(_Candidate(offer, decisions))
        if len(candidates) == 1:
            return candidates[0].decisions
        return [d for c in choose_exclusive(candidates) for d in c.decisions]

    def _award(
        self, item: CompiledOffer, prepared: PreparedEvent, line_indexes: list[int]
    ) -> list[AwardDecision]:
        offer = item.offer
        award = offer.award
        version = self.rulesets.version
        charge = None
        if offer.budget is not None:
            local = prepared.fact["d"]  # the event's business-zone date, yyyymmdd
            day = date(local // 10000, local // 100 % 100, local % 100)
            charge = BudgetCharge(
                limit_cents=to_cents(offer.budget.amount),
                period=budget_period(offer.budget.period, day),
            )

        def decision(
            amount: Decimal,
            beneficiary: Beneficiary = "contact",
            lines: list[AwardLine] | None = None,
        ) -> AwardDecision:
            return AwardDecision(
                offer_id=offer.id,
                offer_name=offer.name,
                classification=offer.classification,
                ruleset_version=version,
                amount=amount,
                lines=lines,
                instant_spend=award.instant_spend,
                beneficiary=beneficiary,
                budget=charge,
            )

        if offer.classification == "referral":
            assert award.referred is not None
            referred = event_award(amount=award.referred.amount, percentage=None, base=None)
            if referred <= 0:
                return []  # never the referrer alone
            result = [decision(referred, "referred")]
            if award.referrer is not None:
                referrer = event_award(amount=award.referrer.amount, percentage=None, base=None)
                if referrer > 0:
                    result.append(decision(referrer, "referrer"))
            return result
        if item.per_line:
            paid = line_awards(
                [(i, from_cents(prepared.line_cents[i])) for i in line_indexes],
                amount=award.amount,
                percentage=award.percentage,
                cap=award.max,
            )
            if not paid:
                return []
            total = sum((amount for _, amount in paid), Decimal("0.00"))
            award_lines = [AwardLine(index=i, sku=prepared.skus[i], amount=a) for i, a in paid]
            return [decision(total, lines=award_lines)]
        amount = event_award(
            amount=award.amount,
            percentage=award.percentage,
            base=self._base(item, prepared),
            cap=award.max,
        )
        return [decision(amount)] if amount > 0 else []

    @staticmethod
    def _base(item: CompiledOffer, prepared: PreparedEvent) -> Decimal | None:
        """The amount a percentage award is taken of, for per-event classifications."""
        fact = prepared.fact
        classification = item.offer.classification
        if classification == "increase_revenue_transaction":
            return from_cents(fact["tot"])
        if classification == "financial_achievement":
            return from_cents(fact["amt"]) if fact.get("ha") else None
        if classification == "loyalty_transaction_amount":
            return from_cents(fact[f"at{item.key}"])
        return None
