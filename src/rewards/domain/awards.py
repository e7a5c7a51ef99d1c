"""Award arithmetic (DOMAIN.md "Reward offer classifications"): plain Decimal functions.

An award is a fixed ``amount`` or a ``percentage`` of the amount the classification
names, optionally capped by ``max``, rounded half-up to cents:

- per event (``event_award``): fixed amount, or percentage of the event's base amount
  (purchase total, financial achievement amount, period total);
- per line (``line_awards``): each matching line earns the fixed amount or the
  percentage of its line total, each rounded to cents; ``max`` caps the offer's award
  for the event, filled line by line in purchase order (the line that crosses the cap
  gets the remainder, later lines nothing), so the lines always add up to the award.

``choose_exclusive`` applies ``exclusive_group``/``priority`` precedence.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Protocol, TypeVar

from rewards.domain.money import quantize

ZERO = Decimal("0.00")
_HUNDRED = Decimal(100)


def _cap(amount: Decimal, cap: Decimal | None) -> Decimal:
    return amount if cap is None or amount <= cap else quantize(cap)


def event_award(
    *,
    amount: Decimal | None,
    percentage: Decimal | None,
    base: Decimal | None,
    cap: Decimal | None = None,
) -> Decimal:
    """A once-per-event award: ``amount``, or ``percentage`` of ``base`` (0 without a base)."""
    if amount is not None:
        value = quantize(amount)
    elif percentage is not None and base is not None:
        value = quantize(base * percentage / _HUNDRED)
    else:
        value = ZERO
    return max(_cap(value, cap), ZERO)


def line_awards(
    lines: Sequence[tuple[int, Decimal]],
    *,
    amount: Decimal | None,
    percentage: Decimal | None,
    cap: Decimal | None = None,
) -> list[tuple[int, Decimal]]:
    """Per-line awards for the matching ``(index, line total)`` pairs, capped in line order.

    Lines that earn nothing (0.00) are left out.
    """
    result: list[tuple[int, Decimal]] = []
    left = None if cap is None else quantize(cap)
    for index, total in lines:
        if amount is not None:
            value = quantize(amount)
        elif percentage is not None:
            value = quantize(total * percentage / _HUNDRED)
        else:
            value = ZERO
        value = max(value, ZERO)
        if left is not None:
            value = min(value, left)
            left -= value
        if value > ZERO:
            result.append((index, value))
    return result


class Ranked(Protocol):
    @property
    def exclusive_group(self) -> str | None: ...

    @property
    def priority(self) -> int: ...


R = TypeVar("R", bound=Ranked)


def choose_exclusive(candidates: Iterable[R]) -> list[R]:
    """Keep, per exclusive group, only the highest priority candidate (ties: the first).

    ``candidates`` must be in file order; those without a group are all kept; the result
    keeps the input order.
    """
    items = list(candidates)
    winners: dict[str, R] = {}
    for item in items:
        group = item.exclusive_group
        if group is not None and (group not in winners or item.priority > winners[group].priority):
            winners[group] = item
    return [
        item
        for item in items
        if item.exclusive_group is None or winners[item.exclusive_group] is item
    ]
