"""Money: ``Decimal`` in the currency's major unit at the edges, integer cents inside.

Amounts are stored and compared as integer minor units (cents) so that SQL sums, the
rules engine (which only knows int64 and double) and ledger arithmetic are exact.
Conversion to cents rounds half-up, the business rounding rule.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

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
