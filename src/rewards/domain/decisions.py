"""What the rules engine decides, as plain values: the awards of an event
(``AwardDecision``) and why each offer did or did not apply (``Explanation``).

The engine produces them; offers, money, runs and the API read them."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

Mode = Literal["immediate", "batch", "all"]
Beneficiary = Literal["contact", "referred", "referrer"]
Status = Literal["applied", "not_applied"]


class AwardLine(msgspec.Struct, kw_only=True, frozen=True):
    index: int  # position of the line in the event's products
    sku: str
    amount: Decimal


class BudgetCharge(msgspec.Struct, kw_only=True, frozen=True):
    """The budget an award draws on: the offer's limit in cents for one period
    (``total``, ``2026``, ``2026-12``, ``2026-W49`` or ``2026-12-05``, business zone)."""

    limit_cents: int
    period: str


class AwardDecision(msgspec.Struct, kw_only=True, frozen=True):
    offer_id: str
    offer_name: str
    classification: str
    ruleset_version: str
    amount: Decimal  # 2 decimals, > 0
    lines: list[AwardLine] | None = None  # per-line classifications only
    instant_spend: bool = False
    beneficiary: Beneficiary = "contact"
    budget: BudgetCharge | None = None  # money.budgets charges it when the award is written


class FailedCondition(msgspec.Struct, kw_only=True, frozen=True):
    """One condition the event does not meet: its key and what was found."""

    condition: str  # the condition key, e.g. transaction_amount, segments, schedule
    message: str  # e.g. "transaction_amount 42.00 < min 50.00"


class OfferOutcome(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """What one offer did with the event."""

    offer_id: str
    offer_name: str
    classification: str
    evaluation: str  # immediate | batch
    status: Status
    amount: Decimal | None = None  # applied: what the offer awards (referrals: both parts)
    failed: list[FailedCondition] = []  # not_applied: every condition the event fails
    note: str | None = None  # not_applied without a failed condition: why


class Explanation(msgspec.Struct, kw_only=True, frozen=True):
    """The awards of one event and, per offer of its type, why it did or did not apply."""

    ruleset_version: str
    event_type: str
    mode: str
    awards: list[AwardDecision]
    total_awarded: Decimal
    offers: list[OfferOutcome]
    # Whether ``ruleset_version`` is the version serving now. A recorded event is
    # explained under the version that evaluated it: ``ruleset_chosen_by`` says how that
    # version was found (awards | evaluation_run | loaded_when_recorded), or ``serving``
    # when none was (``ruleset_note`` says why); simulations leave both out (null).
    ruleset_serving: bool = True
    ruleset_chosen_by: str | None = None
    ruleset_note: str | None = None
