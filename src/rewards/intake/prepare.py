"""Per event type, before anything is written: identification, the rules of DOMAIN.md
for that type, and the steps that run once the event row exists (spends, catalogue
entries, statement periods). ``PREPARE[event_type](session, runtime, body)`` gives the
``Draft`` that ``events.record_event`` writes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from rewards.db.tables import Contact, Event, StatementPeriod
from rewards.domain import purchase as purchase_math
from rewards.domain.details import (
    EventDetails,
    FinancialAchievementDetails,
    FinancialStatementDetails,
    NoDetails,
    ReferralDetails,
    SocialMediaDetails,
    SpendRequestDetails,
    StoredKpi,
    WebDetails,
)
from rewards.domain.money import decimal_text, money_text
from rewards.domain.payment_medium import automate
from rewards.engine.model import Definition
from rewards.errors import (
    DuplicateStatement,
    FieldError,
    PurchaseNotFound,
    PurchaseNotPosted,
    ReferralLimitExceeded,
    SelfReferral,
    refusal,
)
from rewards.intake import estimates, matching, rows
from rewards.intake.identify import Identified, identify
from rewards.intake.purchases import check_classification, new_classification, purchase_details
from rewards.money import spending
from rewards.runtime.context import Runtime
from rewards.wire import (
    AchievementIn,
    EventIn,
    FinancialAchievementIn,
    FinancialStatementIn,
    PurchaseIn,
    ReferralIn,
    SocialMediaIn,
    SpendRequestIn,
    WebIn,
)

UnknownKpi = refusal("kpi_not_found", "KPI not declared in the definition")
DuplicateKpi = refusal("duplicate_kpi", "KPI listed twice for the same product")


@dataclass
class Draft:
    """Everything an event will write, computed before anything is written."""

    contact: Contact
    identified: list[tuple[Identified, str]]  # (identification, body path) whose OTPs get used
    amount_cents: int | None = None
    details: EventDetails = field(default_factory=NoDetails)
    lines: list[purchase_math.PricedLine] = field(default_factory=list)
    after_insert: list[Callable[[Session, Event], None]] = field(default_factory=list)
    spends: list[spending.MadeSpend] = field(default_factory=list)  # made by after_insert


def _contact(session: Session, runtime: Runtime, body: EventIn) -> Draft:
    assert body.contact is not None  # the schema requires it for every type but referral
    found = identify(session, runtime, body.contact, "/contact")
    return Draft(contact=found.contact, identified=[(found, "/contact")])


def _prepare_purchase(session: Session, runtime: Runtime, body: PurchaseIn) -> Draft:
    priced, details = purchase_details(runtime, body)
    draft = _contact(session, runtime, body)
    draft.amount_cents = priced.total_cents
    draft.lines = priced.lines
    if body.estimate_id is not None:
        details = msgspec.structs.replace(details, estimate_id=body.estimate_id)
    draft.details = details
    otp = draft.identified[0][0].otp
    estimate = (
        estimates.usable(session, runtime, body.estimate_id, draft.contact.id)
        if body.estimate_id
        else None
    )

    def create_catalogue_entries(session: Session, _event: Event) -> None:
        rows.add_to_catalogue(
            session.connection(),
            [line.sku for line in priced.lines],
            new_classification(runtime, body.classification),
        )

    def consume_and_spend(session: Session, event: Event) -> None:
        """Before the purchase's own awards: a spend it carries, an OTP's spend amount,
        or an estimate's reservation."""
        if estimate is not None:
            estimates.consume(session, runtime, estimate, event.id)
        requested: int | None = None
        if body.spend is not None and body.spend.amount is not None:
            requested = purchase_math.exact_cents(body.spend.amount, "/spend/amount")
        elif otp is not None and otp.spend_amount_cents is not None:
            requested = otp.spend_amount_cents
        elif estimate is not None and body.spend is None:
            requested = min(estimate.reserved_cents, priced.total_cents) or None
            if requested is None:
                return
        elif body.spend is None:
            return
        spend = spending.spend_on_purchase(
            session,
            runtime,
            contact=draft.contact,
            purchase=event,
            event_id=event.id,
            performed_on=event.performed_on,
            ask=spending.SpendAsk(
                requested_cents=requested,
                path="/spend/amount",
                only_if_fully_covered=bool(body.spend and body.spend.only_if_fully_covered),
                otp=otp,
                excluding_estimate=estimate.id if estimate is not None else None,
            ),
        )
        draft.spends.append(spend)

    draft.after_insert += [create_catalogue_entries, consume_and_spend]
    if matching.is_matched_on_intake(runtime.rulesets, body.performed_by_unit):

        def match_transaction(session: Session, event: Event) -> None:
            matching.match_purchase(session, runtime, event)

        draft.after_insert.append(match_transaction)
    return draft


def _business_day_bounds(runtime: Runtime, moment: datetime) -> tuple[datetime, datetime]:
    zone = ZoneInfo(runtime.rulesets.definition.time_zone)
    day = moment.astimezone(zone).date()
    start = datetime.combine(day, time.min, tzinfo=zone)
    return start, datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone)


def _prepare_referral(session: Session, runtime: Runtime, body: ReferralIn) -> Draft:
    check_classification(runtime, "referral", body.classification)
    referred = identify(session, runtime, body.referred, "/referred")
    referrer = identify(session, runtime, body.referred_by, "/referred_by")
    if referred.contact.id == referrer.contact.id:
        raise SelfReferral(
            "The referred contact and the referrer are the same contact.",
            errors=[FieldError(path="/referred", message="same contact as referred_by")],
        )
    # Serialise referrals of one referrer (PostgreSQL row lock; SQLite writers are serial).
    session.execute(
        select(col(Contact.id)).where(col(Contact.id) == referrer.contact.id).with_for_update()
    )
    start, end = _business_day_bounds(runtime, body.performed_on)
    count = (
        session.scalar(
            select(func.count())
            .select_from(Event)
            .where(
                col(Event.type) == "referral",
                col(Event.state) == "posted",
                col(Event.contact_id) == referrer.contact.id,
                col(Event.performed_on) >= start,
                col(Event.performed_on) < end,
            )
        )
        or 0
    )
    limit = runtime.rulesets.definition.referrals_per_day
    if count >= limit:
        raise ReferralLimitExceeded(
            f"The referrer already made {count} referral(s) on {start.date()} (limit {limit}).",
            errors=[
                FieldError(
                    path="/referred_by", message=f"limit of {limit} referrals per day reached"
                )
            ],
        )
    return Draft(
        contact=referrer.contact,
        identified=[(referred, "/referred"), (referrer, "/referred_by")],
        details=ReferralDetails(
            referred_contact_id=referred.contact.id, referrer_contact_id=referrer.contact.id
        ),
    )


def _prepare_achievement(session: Session, runtime: Runtime, body: AchievementIn) -> Draft:
    check_classification(runtime, "achievement", body.classification)
    return _contact(session, runtime, body)


def _prepare_financial_achievement(
    session: Session, runtime: Runtime, body: FinancialAchievementIn
) -> Draft:
    check_classification(runtime, "financial_achievement", body.classification)
    amount = purchase_math.exact_cents(body.amount, "/amount")
    draft = _contact(session, runtime, body)
    draft.amount_cents = amount
    medium = None
    if body.payment_medium is not None:
        medium = automate(
            msgspec.to_builtins(body.payment_medium), runtime.rulesets.definition.payment_medium
        )
    draft.details = FinancialAchievementDetails(
        amount=money_text(amount), product=body.product, payment_medium=medium
    )
    return draft


def check_kpis(definition: Definition, body: FinancialStatementIn) -> None:
    """Each KPI declared, once per product, its value exact to the cent (simulations
    check a statement the same way)."""
    known = {kpi.code for kpi in definition.kpis}
    seen: set[tuple[str, str | None]] = set()
    for i, item in enumerate(body.kpis):
        if item.kpi not in known:
            raise UnknownKpi(
                f"KPI {item.kpi!r} is not declared.",
                errors=[FieldError(path=f"/kpis/{i}/kpi", message="unknown KPI")],
            )
        if (item.kpi, item.product) in seen:
            raise DuplicateKpi(
                f"KPI {item.kpi!r} appears twice for product {item.product!r}.",
                errors=[FieldError(path=f"/kpis/{i}", message="duplicate (kpi, product)")],
            )
        seen.add((item.kpi, item.product))
        purchase_math.exact_cents(item.value, f"/kpis/{i}/value")


def _prepare_financial_statement(
    session: Session, runtime: Runtime, body: FinancialStatementIn
) -> Draft:
    check_classification(runtime, "financial_statement", body.classification)
    check_kpis(runtime.rulesets.definition, body)
    kpis = [
        StoredKpi(kpi=item.kpi, value=decimal_text(item.value), product=item.product or None)
        for item in body.kpis
    ]
    draft = _contact(session, runtime, body)
    draft.details = FinancialStatementDetails(period=body.period, kpis=kpis)

    def claim_period(session: Session, event: Event) -> None:
        try:
            with session.begin_nested():
                session.add(
                    StatementPeriod(
                        contact_id=event.contact_id,
                        classification=body.classification or "",
                        period=body.period,
                        event_id=event.id,
                    )
                )
        except IntegrityError:
            raise DuplicateStatement(
                f"A {body.classification or 'financial'} statement for {body.period} is already recorded.",
                errors=[
                    FieldError(
                        path="/period",
                        message="already recorded for this contact and classification",
                    )
                ],
            ) from None

    draft.after_insert.append(claim_period)
    return draft


def _prepare_social_media(session: Session, runtime: Runtime, body: SocialMediaIn) -> Draft:
    check_classification(runtime, "social_media", body.classification)
    draft = _contact(session, runtime, body)
    draft.details = SocialMediaDetails(
        platform=body.platform, action=body.action, profile=body.profile or None
    )
    return draft


def _prepare_web(session: Session, runtime: Runtime, body: WebIn) -> Draft:
    check_classification(runtime, "web", body.classification)
    draft = _contact(session, runtime, body)
    draft.details = WebDetails(website=body.website)
    return draft


def _prepare_spend_request(session: Session, runtime: Runtime, body: SpendRequestIn) -> Draft:
    check_classification(runtime, "spend_request", body.classification)
    draft = _contact(session, runtime, body)
    purchase = session.scalars(select(Event).where(col(Event.id) == body.purchase_event_id)).first()
    where = [
        FieldError(path="/purchase_event_id", message="no purchase of this contact with this id")
    ]
    if purchase is None or purchase.type != "purchase" or purchase.contact_id != draft.contact.id:
        raise PurchaseNotFound("No purchase of this contact with that id.", errors=where)
    if purchase.state != "posted":
        raise PurchaseNotPosted(
            "The purchase is cancelled.",
            errors=[FieldError(path="/purchase_event_id", message="purchase is cancelled")],
        )
    requested = None
    if body.requested_amount is not None:
        requested = purchase_math.exact_cents(body.requested_amount, "/requested_amount")
    draft.details = SpendRequestDetails(
        purchase_event_id=purchase.id,
        requested_amount=None if requested is None else money_text(requested),
    )
    ask = spending.SpendAsk(
        requested_cents=requested, path="/requested_amount", otp=draft.identified[0][0].otp
    )

    def spend(session: Session, event: Event) -> None:
        made = spending.spend_on_purchase(
            session,
            runtime,
            contact=draft.contact,
            purchase=purchase,
            event_id=event.id,
            performed_on=event.performed_on,
            ask=ask,
        )
        draft.spends.append(made)

    draft.after_insert.append(spend)
    return draft


PREPARE: dict[str, Callable[[Session, Runtime, Any], Draft]] = {
    "purchase": _prepare_purchase,
    "referral": _prepare_referral,
    "achievement": _prepare_achievement,
    "financial_achievement": _prepare_financial_achievement,
    "financial_statement": _prepare_financial_statement,
    "social_media": _prepare_social_media,
    "web": _prepare_web,
    "spend_request": _prepare_spend_request,
}
