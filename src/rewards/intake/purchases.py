"""A purchase (or an estimate, a purchase not yet made) as it is stored and evaluated:
checked totals, the business currency, the payment medium after the definition's
automation; and which classifications an event type may carry."""

from __future__ import annotations

import msgspec

from rewards.domain import purchase as purchase_math
from rewards.domain.details import PurchaseDetails, StoredLine
from rewards.domain.money import decimal_text, money_text
from rewards.domain.payment_medium import automate
from rewards.errors import ClassificationNotAllowed, FieldError, UnknownCurrency
from rewards.runtime.context import Runtime
from rewards.wire import EstimateIn, PurchaseIn


def declared_types(runtime: Runtime, code: str) -> set[str] | None:
    """The event types the definition declares a classification for (None: undeclared)."""
    for declared in runtime.rulesets.definition.event_classifications:
        if declared.code == code:
            return set(declared.types)
    return None


def new_classification(runtime: Runtime, code: str | None) -> str | None:
    """A purchase classification the definition does not declare (added to the catalogue)."""
    if code is not None and declared_types(runtime, code) is None:
        return code
    return None


def check_classification(runtime: Runtime, event_type: str, code: str | None) -> None:
    if code is None:
        return
    if event_type not in (declared_types(runtime, code) or ()):
        raise ClassificationNotAllowed(
            f"Classification {code!r} is not declared for {event_type} events.",
            errors=[
                FieldError(path="/classification", message=f"not declared for {event_type} events")
            ],
        )


def purchase_details(
    runtime: Runtime, body: PurchaseIn | EstimateIn
) -> tuple[purchase_math.PricedPurchase, PurchaseDetails]:
    """Totals (checked), conversion to the business currency and the payment medium after
    the definition's automation: the stored fields of a purchase (or an estimate)."""
    definition = runtime.rulesets.definition
    if body.classification is not None:
        declared_for = declared_types(runtime, body.classification)
        if declared_for is not None and "purchase" not in declared_for:
            check_classification(runtime, "purchase", body.classification)
    priced = purchase_math.price(
        body.products, (body.net_amount, body.vat_amount, body.total_amount)
    )
    currency = body.currency or definition.currency
    original_currency = original_total = None
    if currency != definition.currency:
        rate = definition.exchange_rates.get(currency)
        if rate is None:
            raise UnknownCurrency(
                f"No exchange rate from {currency} to {definition.currency}.",
                errors=[FieldError(path="/currency", message=f"no exchange rate for {currency}")],
            )
        original_currency = currency
        original_total = money_text(priced.total_cents)
        priced = purchase_math.convert(priced, rate)
    medium = None
    if body.payment_medium is not None:
        medium = automate(msgspec.to_builtins(body.payment_medium), definition.payment_medium)
    details = PurchaseDetails(
        currency=definition.currency,
        reference_number=body.reference_number,
        original_currency=original_currency,
        original_total_amount=original_total,
        products=[
            StoredLine(
                sku=line.sku,
                quantity=decimal_text(line.quantity),
                net_amount=money_text(line.net_cents),
                vat_amount=money_text(line.vat_cents),
                total_amount=money_text(line.total_cents),
            )
            for line in priced.lines
        ],
        net_amount=money_text(priced.net_cents),
        vat_amount=money_text(priced.vat_cents),
        total_amount=money_text(priced.total_cents),
        payment_medium=medium,
    )
    return priced, details
