"""Money: ``Decimal`` in the currency's major unit at the edges, integer cents inside.

Amounts are stored and compared as integer minor units (cents) so that SQL sums, the
rules engine (which only knows int64 and double) and ledger arithmetic are exact.
Conversion to cents rounds half-up, the business rounding rule.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import msgspec

CENT = Decimal("0.01")
_HUNDRED = Decimal(100)


def quantize(amount: Decimal) -> Decimal:
    """Round a major-unit amount half-up to two decimals."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def to_cents(amount: Decimal) -> int:
    """Major units to integer cents, rounding half-up (12.345 -> 1235)."""
    return int((amount * _HUNDRED).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def from_cents(cents: int) -> Decimal:
    """Integer cents to a two-decimal major-unit amount (1235 -> Decimal('12.35'))."""
    return (Decimal(cents) / _HUNDRED).quantize(CENT)


def has_at_most_two_decimals(amount: Decimal) -> bool:
    """True when the amount is exact in cents (no sub-cent digits)."""
    exponent = amount.as_tuple().exponent
    return isinstance(exponent, int) and (exponent >= -2 or amount == amount.quantize(CENT))


def money_text(cents: int) -> str:
    """Cents as the decimal string stored inside ``Event.details`` (exact in JSON):
    ``str(from_cents(cents))`` (1235 -> "12.35", -5 -> "-0.05"), without the Decimal."""
    units, rest = divmod(abs(cents), 100)
    return f"{'-' if cents < 0 else ''}{units}.{rest:02d}"


def decimal_text(value: Decimal) -> str:
    return str(value)


# Money in answers: a field typed ``Money`` in a ``MoneyStruct`` always holds exactly two
# decimals (``1`` -> ``1.00``), whatever computed it (a definition's ``min_amount: 1``, a
# request's ``1``, cents): the one place answers' money is formatted.
MONEY = msgspec.Meta(description="An amount in the currency's major unit, with two decimals.")
Money = Annotated[Decimal, MONEY]


def _is_money(annotation: Any) -> bool:
    if get_origin(annotation) is Annotated:
        return MONEY in get_args(annotation)[1:]
    if get_origin(annotation) in (Union, UnionType):
        return any(_is_money(member) for member in get_args(annotation))
    return False


_force_setattr = msgspec.structs.force_setattr


@cache
def _money_fields(struct: type[msgspec.Struct]) -> tuple[str, ...]:
    return tuple(f.name for f in msgspec.structs.fields(struct) if _is_money(f.type))


class MoneyStruct(msgspec.Struct, kw_only=True):
    """Base of the answer structs that carry money: their ``Money`` fields are rounded
    half-up to two decimals when the struct is made (built, converted or replaced)."""

    def __post_init__(self) -> None:
        # On every answer struct made: kept lean (no helper calls in the loop).
        for name in _money_fields(type(self)):
            value = getattr(self, name)
            if value is not None:
                _force_setattr(self, name, value.quantize(CENT, ROUND_HALF_UP))
