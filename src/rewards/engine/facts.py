"""What the offers tell the engine about one event: ``EventFacts``.

The engine is stateless (ENGINE-NOTES.md): everything an offer's conditions need is
computed by ``offers.facts`` from the event and the database and handed over flat, in the
business currency, with ``Decimal`` money:

``event_type``
    purchase | referral | achievement | financial_achievement | financial_statement |
    social_media | web
``performed_on``
    timezone-aware timestamp; validity dates, schedules (weekday, minute of day) are
    taken in the definition's ``time_zone``
``classification``
    the event's classification code, or None
``unit``
    ``performed_by_unit`` (its group comes from the definition)
``segments``
    the contact's segments; for a referral, the referrer's (``referred_by``)
``awards_in_window``
    offer id -> number of awards the contact already received from that offer within
    the offer's ``max_awards`` window before ``performed_on``
    (``Rulesets.award_windows(event_type)`` says which offers and how many days);
    a missing offer counts as 0
``total_amount``
    purchase total, converted to the business currency (None: the sum of the lines)
``products``
    purchase lines: ``sku``, ``quantity``, ``total_amount`` (line total = quantity x
    net + vat, converted); their order is the line ``index`` in awards
``payment_brand``, ``payment_type``
    the payment medium (purchase, financial_achievement), after the brand/type rules
``amount``
    financial_achievement amount
``kpis``
    financial_statement entries: ``kpi``, ``product`` (optional), ``value``
``platform``, ``action``
    social_media
``website``
    web (the URL)
``period_totals``
    only for the period-aggregate offers (evaluation runs; see ``Evaluator``): offer id ->
    the contact's totals over that offer's calendar period (not yet rewarded by it)

Amounts are compared at cent precision (rounded half-up), like every award.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import msgspec


class ProductLine(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    sku: str
    quantity: Decimal = Decimal(1)
    total_amount: Decimal


class KpiValue(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    kpi: str
    product: str | None = None
    value: Decimal


class PeriodTotals(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """A contact's purchases in one calendar period, for one aggregate offer."""

    total_amount: Decimal = Decimal(0)
    count: int = 0
    quantity: Decimal = Decimal(0)  # of the items matching the offer's products


class EventFacts(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    event_type: str
    performed_on: datetime
    classification: str | None = None
    unit: str | None = None
    segments: list[str] = []
    awards_in_window: dict[str, int] = {}
    total_amount: Decimal | None = None
    products: list[ProductLine] = []
    payment_brand: str | None = None
    payment_type: str | None = None
    amount: Decimal | None = None
    kpis: list[KpiValue] = []
    platform: str | None = None
    action: str | None = None
    website: str | None = None
    period_totals: dict[str, PeriodTotals] = {}
