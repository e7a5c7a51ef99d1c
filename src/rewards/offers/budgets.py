"""Offer budgets as analysts read them: per offer with a ``budget``, the period under way
(business time zone) and what its awards used of it (``money.budgets`` charges them)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import msgspec
from sqlalchemy import select, tuple_
from sqlmodel import Session, col

from rewards.db.tables import OfferBudgetUse
from rewards.domain.budgets import budget_period, left
from rewards.domain.decisions import Explanation, FailedCondition
from rewards.domain.money import from_cents, to_cents
from rewards.engine import Rulesets
from rewards.engine.model import Offer
from rewards.wire import BudgetOut, OfferBudgetOut


def current_budgets(
    session: Session, rulesets: Rulesets, offers: list[Offer], now: datetime
) -> dict[str, BudgetOut]:
    """offer id -> its budget now, for the offers of ``offers`` that have one."""
    today = now.astimezone(rulesets.time_zone).date()
    periods = {
        offer.id: budget_period(offer.budget.period, today)
        for offer in offers
        if offer.budget is not None
    }
    if not periods:
        return {}
    used = {
        offer_id: cents
        for offer_id, _period, cents in session.execute(
            select(
                col(OfferBudgetUse.offer_id),
                col(OfferBudgetUse.period),
                col(OfferBudgetUse.used_cents),
            ).where(
                tuple_(col(OfferBudgetUse.offer_id), col(OfferBudgetUse.period)).in_(
                    list(periods.items())
                )
            )
        ).all()
    }
    result = {}
    for offer in offers:
        if offer.budget is None:
            continue
        limit = to_cents(offer.budget.amount)
        spent = int(used.get(offer.id, 0))
        result[offer.id] = BudgetOut(
            amount=offer.budget.amount,
            period=offer.budget.period,
            current_period=periods[offer.id],
            used=from_cents(spent),
            left=left(limit, spent),
        )
    return result


def budget_list(session: Session, rulesets: Rulesets, now: datetime) -> list[OfferBudgetOut]:
    """Every offer with a budget, in file order, as of ``now``."""
    return [
        OfferBudgetOut(offer_id=offer_id, **{f: getattr(b, f) for f in b.__struct_fields__})
        for offer_id, b in current_budgets(session, rulesets, rulesets.offers, now).items()
    ]


def mark_exhausted(
    session: Session,
    rulesets: Rulesets,
    explanation: Explanation,
    performed_on: datetime,
    awarded: set[str] | None = None,
) -> Explanation:
    """The explanation with every offer the engine applies but whose budget for the
    event's period is used up shown as not applied, "budget exhausted" (``awarded``: a
    recorded event's offers that did award it, which stand)."""
    day = performed_on.astimezone(rulesets.time_zone).date()
    exhausted: dict[str, FailedCondition] = {}
    for outcome in explanation.offers:
        offer = rulesets.offer(outcome.offer_id)
        if outcome.status != "applied" or offer is None or offer.budget is None:
            continue
        if awarded is not None and offer.id in awarded:
            continue
        period = budget_period(offer.budget.period, day)
        used = session.scalar(
            select(col(OfferBudgetUse.used_cents)).where(
                col(OfferBudgetUse.offer_id) == offer.id, col(OfferBudgetUse.period) == period
            )
        )
        if int(used or 0) >= to_cents(offer.budget.amount):
            exhausted[offer.id] = FailedCondition(
                condition="budget",
                message=f"budget exhausted: {from_cents(int(used or 0))} of "
                f"{from_cents(to_cents(offer.budget.amount))} awarded in {period}",
            )
    if not exhausted:
        return explanation
    awards = [a for a in explanation.awards if a.offer_id not in exhausted]
    return msgspec.structs.replace(
        explanation,
        awards=awards,
        total_awarded=sum((a.amount for a in awards), Decimal("0.00")),
        offers=[
            msgspec.structs.replace(
                o, status="not_applied", amount=None, failed=[exhausted[o.offer_id]]
            )
            if o.offer_id in exhausted
            else o
            for o in explanation.offers
        ],
    )
