"""What an event stores beside its columns (``events.details``), per event type.

Amounts and quantities are decimal text (exact in JSON columns); absent optional fields
are left out of the stored JSON. Intake builds these; the event row stores
``msgspec.to_builtins`` of them, and answers and facts read the stored JSON."""

from __future__ import annotations

from typing import Any

import msgspec


class _Details(msgspec.Struct, kw_only=True, omit_defaults=True):
    pass


class StoredLine(_Details):
    sku: str
    quantity: str
    net_amount: str
    vat_amount: str
    total_amount: str


class PurchaseDetails(_Details, kw_only=True):  # kw_only again for type checkers
    """A purchase (or an estimate's probe) in the business currency."""

    currency: str
    reference_number: str | None = None
    original_currency: str | None = None  # the currency sent, when it was converted
    original_total_amount: str | None = None
    products: list[StoredLine]
    net_amount: str
    vat_amount: str
    total_amount: str
    payment_medium: dict[str, Any] | None = None  # after the definition's automation
    estimate_id: str | None = None


class ReferralDetails(_Details):
    referred_contact_id: str
    referrer_contact_id: str


class NoDetails(_Details):
    """An achievement: everything it says is in the event's columns."""


class FinancialAchievementDetails(_Details):
    amount: str
    product: str | None = None
    payment_medium: dict[str, Any] | None = None


class StoredKpi(_Details):
    kpi: str
    value: str
    product: str | None = None


class FinancialStatementDetails(_Details):
    period: str
    kpis: list[StoredKpi]


class SocialMediaDetails(_Details):
    platform: str
    action: str
    profile: str | None = None


class WebDetails(_Details):
    website: str


class SpendRequestDetails(_Details):
    purchase_event_id: str
    requested_amount: str | None = None


EventDetails = (
    PurchaseDetails
    | ReferralDetails
    | NoDetails
    | FinancialAchievementDetails
    | FinancialStatementDetails
    | SocialMediaDetails
    | WebDetails
    | SpendRequestDetails
)
