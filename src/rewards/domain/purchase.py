"""Purchase arithmetic: line and event totals, checks of sent totals, currency conversion.

A line's ``net_amount`` is the unit net price and ``vat_amount`` the line's VAT:
line total = round_half_up(quantity x net) + vat. Event net/vat/total are the sums.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from rewards.domain.money import from_cents, quantize, to_cents
from rewards.errors import FieldError, TotalsMismatch, ValidationFailed

QUANTITY_STEP = Decimal("0.001")


class ProductLineIn(Protocol):
    """A purchase line as sent (the request body's product line)."""

    @property
    def sku(self) -> str: ...
    @property
    def quantity(self) -> Decimal: ...
    @property
    def net_amount(self) -> Decimal: ...
    @property
    def vat_amount(self) -> Decimal: ...
    @property
    def total_amount(self) -> Decimal | None: ...


@dataclass(frozen=True)
class PricedLine:
    sku: str
    quantity: Decimal
    net_cents: int  # quantity x unit net, rounded
    vat_cents: int
    total_cents: int


@dataclass(frozen=True)
class PricedPurchase:
    lines: list[PricedLine]
    net_cents: int
    vat_cents: int
    total_cents: int


def exact_cents(amount: Decimal, path: str) -> int:
    """Cents of an amount that must already be exact to the cent (else 422 at path)."""
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and -2 <= exponent <= 0:  # exact: no rounding to check
        return int(amount.scaleb(2))
    cents = to_cents(amount)
    if from_cents(cents) != amount:
        raise ValidationFailed.at(path, "at most 2 decimals")
    return cents


def price(
    lines: Sequence[ProductLineIn], sent: tuple[Decimal | None, Decimal | None, Decimal | None]
) -> PricedPurchase:
    """Compute totals; refuse sent totals that disagree to the cent (``totals_mismatch``)."""
    priced, mismatches = [], []
    for i, line in enumerate(lines):
        if line.quantity != line.quantity.quantize(QUANTITY_STEP):
            raise ValidationFailed.at(f"/products/{i}/quantity", "at most 3 decimals")
        unit_net = line.net_amount
        exact_cents(unit_net, f"/products/{i}/net_amount")
        net = to_cents(quantize(line.quantity * unit_net))
        vat = exact_cents(line.vat_amount, f"/products/{i}/vat_amount")
        total = net + vat
        if (
            line.total_amount is not None
            and exact_cents(line.total_amount, f"/products/{i}/total_amount") != total
        ):
            mismatches.append(
                FieldError(
                    path=f"/products/{i}/total_amount",
                    message=f"line total is {from_cents(total)} (quantity x net + vat), not {line.total_amount}",
                )
            )
        priced.append(PricedLine(line.sku, line.quantity, net, vat, total))
    purchase = PricedPurchase(
        lines=priced,
        net_cents=sum(line.net_cents for line in priced),
        vat_cents=sum(line.vat_cents for line in priced),
        total_cents=sum(line.total_cents for line in priced),
    )
    for name, value, computed in zip(
        ("net_amount", "vat_amount", "total_amount"),
        sent,
        (purchase.net_cents, purchase.vat_cents, purchase.total_cents),
        strict=True,
    ):
        if value is not None and exact_cents(value, f"/{name}") != computed:
            mismatches.append(
                FieldError(
                    path=f"/{name}",
                    message=f"the lines add up to {from_cents(computed)}, not {value}",
                )
            )
    if mismatches:
        raise TotalsMismatch("Sent totals disagree with the product lines.", errors=mismatches)
    return purchase


def convert(purchase: PricedPurchase, rate: Decimal) -> PricedPurchase:
    """Into the business currency: each line's net and VAT converted and rounded half-up,
    totals re-summed so the converted lines always add up to the converted event."""
    lines = []
    for line in purchase.lines:
        net = to_cents(quantize(from_cents(line.net_cents) * rate))
        vat = to_cents(quantize(from_cents(line.vat_cents) * rate))
        lines.append(PricedLine(line.sku, line.quantity, net, vat, net + vat))
    return PricedPurchase(
        lines=lines,
        net_cents=sum(line.net_cents for line in lines),
        vat_cents=sum(line.vat_cents for line in lines),
        total_cents=sum(line.total_cents for line in lines),
    )
