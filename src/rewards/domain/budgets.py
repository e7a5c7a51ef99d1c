"""Offer budgets as plain values: the period an award counts in, and an award cut to
what a budget has left (``money.budgets`` charges them)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import msgspec

from rewards.domain.decisions import AwardDecision, AwardLine
from rewards.domain.money import from_cents, to_cents


def budget_period(period: str, day: date) -> str:
    """The key of the period ``day`` (a business-zone date) falls in."""
    if period == "total":
        return "total"
    if period == "year":
        return f"{day.year:04d}"
    if period == "month":
        return f"{day.year:04d}-{day.month:02d}"
    if period == "week":
        year, week, _ = day.isocalendar()
        return f"{year:04d}-W{week:02d}"
    return day.isoformat()


def cut(decision: AwardDecision, cents: int) -> AwardDecision:
    """``decision`` reduced to ``cents`` (0 < cents <= its amount); its lines are paid in
    purchase order until the amount runs out, as an award's ``max`` fills them."""
    if cents >= to_cents(decision.amount):
        return decision
    lines = None
    if decision.lines is not None:
        lines, left = [], cents
        for line in decision.lines:
            paid = min(to_cents(line.amount), left)
            if paid > 0:
                lines.append(AwardLine(index=line.index, sku=line.sku, amount=from_cents(paid)))
            left -= paid
    return msgspec.structs.replace(decision, amount=from_cents(cents), lines=lines)


def left(limit_cents: int, used_cents: int) -> Decimal:
    return from_cents(max(0, limit_cents - used_cents))
