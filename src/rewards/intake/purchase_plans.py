"""The purchase fast path: decide, then write.

``plan_purchases`` runs before any write lock (reads only, at driver speed): the
idempotency probe, the totals, identification, the facts (and, batched by the group
commit, the engine's decisions). ``write_purchase`` runs in the batch's write
transaction and only inserts and applies conditional updates, re-checking what a
concurrent request could have changed since the plan: the external reference (the
unique key: a conflict becomes the replay answer), the ``max_awards`` windows (counted
again under the contact's lock; the engine decides again when they moved) and funds
(instant spends are conditional debits).

Purchases this path does not take (an OTP to consume, a spend, an estimate, a replay)
go through ``events.record_event`` in the same batch; both write with the same row,
award and ledger functions.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from rewards.db.bulk import BulkInsert
from rewards.db.tables import Event, EventLine
from rewards.db.types import table_of, utcnow
from rewards.domain.decisions import AwardDecision
from rewards.domain.money import from_cents
from rewards.domain.purchase import PricedLine
from rewards.engine import Evaluator
from rewards.errors import DomainError
from rewards.intake import rows
from rewards.intake.events import check_business_time, new_event, request_hash
from rewards.intake.identify import ContactRow, contact_of, find_contacts
from rewards.intake.matching import is_matched_on_intake
from rewards.intake.purchases import new_classification, purchase_details
from rewards.money.awards import MadeAward, write_awards
from rewards.money.ledger import held_by
from rewards.money.purchase_batch import AwardedPurchase, BatchPurchaseAwards
from rewards.money.spending import MadeSpend, instant_spends
from rewards.money.wallets import event_wallet
from rewards.offers.evaluation import Decided, awards_in_window, beneficiary_of, decide_facts
from rewards.offers.facts import priced_purchase_fact
from rewards.runtime.context import Runtime
from rewards.runtime.metrics import metrics
from rewards.wire import EventWallet, PurchaseIn


@dataclass
class PurchasePlan:
    """A purchase decided before its write: everything ``write_purchase`` inserts."""

    event: Event  # the row, not yet written
    contact: ContactRow
    lines: list[PricedLine]
    new_skus: list[str]  # the lines' SKUs not known to be in the catalogue yet
    classification: str | None  # an undeclared classification to add to the catalogue
    fact: dict[str, Any] | None  # the engine fact; None: not evaluated on intake
    counts: dict[str, int]  # the awards in each max_awards window the fact saw
    decisions: list[AwardDecision] = field(default_factory=list)  # set by the group commit

    @property
    def charges_budget(self) -> bool:
        """Whether an award of this purchase draws on an offer's budget: it is written
        alone (``write_purchase``), where the budget is charged under its row's lock."""
        return any(decision.budget is not None for decision in self.decisions)


@dataclass(frozen=True)
class WrittenPurchase:
    """A purchase as written, for its 201 answer (``answers.render_event``)."""

    event: Event
    awards: list[MadeAward]
    spends: list[MadeSpend]
    wallet: EventWallet
    now: datetime


def _takes(runtime: Runtime, body: PurchaseIn) -> bool:
    """Whether the fast path takes this purchase (see the module). A purchase named by
    its terminal, or made at a unit of a merchant whose card transactions are matched to
    POS purchases, takes the full path: it is matched under the merchant's lock
    (``intake.matching``)."""
    identifier = body.contact
    if identifier is None or identifier.otp is not None:
        return False  # the schema requires a contact; an OTP is consumed by the full path
    if body.performed_by_terminal is not None or is_matched_on_intake(
        runtime.rulesets, body.performed_by_unit
    ):
        return False
    return body.spend is None and body.estimate_id is None


def plan_purchases(
    connection: Connection,
    runtime: Runtime,
    bodies: Sequence[PurchaseIn],
    catalogue: Container[str] = (),
) -> list[PurchasePlan | DomainError | None]:
    """Per purchase its plan, its refusal (raised by the full path in the same order:
    totals, currency, classification, then the contact), or None when the full path
    records it. Two queries for all of them: the external references already recorded
    (their replays are answered by the full path) and the contacts.
    ``catalogue``: SKUs known to be in the catalogue already."""
    taken = [body for body in bodies if _takes(runtime, body)]
    recorded = rows.recorded_references(
        connection,
        [(b.external_system or "", b.external_reference) for b in taken if b.external_reference],
    )
    fresh = [
        body
        for body in taken
        if (body.external_system or "", body.external_reference) not in recorded
    ]
    contacts = find_contacts(connection, [body.contact for body in fresh if body.contact])
    chosen = {id(body) for body in fresh}
    plans: list[PurchasePlan | DomainError | None] = []
    for body in bodies:
        if id(body) not in chosen:
            plans.append(None)
            continue
        try:
            plans.append(_plan(runtime, body, contacts, catalogue))
        except DomainError as error:
            plans.append(error)
    return plans


def _plan(
    runtime: Runtime,
    body: PurchaseIn,
    contacts: dict[tuple[str, str], ContactRow],
    catalogue: Container[str],
) -> PurchasePlan:
    now = runtime.now()
    check_business_time(body, now)
    priced, details = purchase_details(runtime, body)
    assert body.contact is not None  # _takes
    contact = contact_of(contacts, body.contact, "/contact")
    digest = request_hash("purchase", body)
    event = new_event(
        runtime, "purchase", body, digest, contact.id, priced.total_cents, details, now
    )
    return PurchasePlan(
        event=event,
        contact=contact,
        lines=priced.lines,
        new_skus=sorted({line.sku for line in priced.lines if line.sku not in catalogue}),
        classification=new_classification(runtime, body.classification),
        fact=None,
        counts={},
    )


def add_fact(
    connection: Connection, runtime: Runtime, evaluator: Evaluator, plan: PurchasePlan
) -> None:
    """The engine fact a purchase evaluated on intake is decided with, for ``evaluator``'s
    rulesets (awards in the ``max_awards`` windows counted without a lock:
    ``write_purchase`` counts again)."""
    event = plan.event
    if event.evaluated:
        plan.counts = awards_in_window(connection, runtime, event, lock=False)
        plan.fact = _fact(evaluator, plan, plan.counts)


def _fact(evaluator: Evaluator, plan: PurchasePlan, counts: dict[str, int]) -> dict[str, Any]:
    return priced_purchase_fact(
        evaluator.rulesets.compiled,
        plan.event,
        [(line.sku, line.total_cents) for line in plan.lines],
        plan.event.amount_cents or 0,
        plan.contact.segments,
        counts,
    )


def write_purchase(
    connection: Connection, runtime: Runtime, evaluator: Evaluator, plan: PurchasePlan
) -> WrittenPurchase | None:
    """Write a planned purchase in the caller's transaction; None when its external
    reference is taken (the caller answers with the replay)."""
    event = plan.event
    if not rows.insert_event(connection, event):
        return None
    rows.insert_lines(connection, event.id, plan.lines)
    rows.add_to_catalogue(connection, plan.new_skus, plan.classification)
    decisions = plan.decisions
    if plan.fact is not None and evaluator.rulesets.award_windows(event.type):
        # Awards of this contact committed since the plan count against the windows.
        counts = awards_in_window(connection, runtime, event)
        if counts != plan.counts:
            decisions = decide_facts(evaluator, [_fact(evaluator, plan, counts)])[0]
    decided = [Decided(decision, beneficiary_of(event, decision)) for decision in decisions]
    awards = write_awards(connection, event, decided, {plan.contact.id: plan.contact.wallet_id})
    spends = []
    if any(award.instant_spend for award in awards):
        blocked = {plan.contact.id: plan.contact.spend_blocked}  # as identified
        spends = instant_spends(connection, runtime, event, awards, 0, blocked)
    now = event.created_at
    wallet = event_wallet(connection, event.contact_id, now)
    metrics().events.labels(type=event.type).inc()
    return WrittenPurchase(event=event, awards=awards, spends=spends, wallet=wallet, now=now)


class PurchaseBatchWriter:
    """Many planned purchases written at once (``write``): a statement per table for
    the whole batch instead of a dozen per purchase. Built once per intake writer."""

    def __init__(self, dialect: Any) -> None:
        self.lines = BulkInsert(dialect, table_of(EventLine), rows.LINE_COLUMNS)
        self.money = BatchPurchaseAwards(dialect)

    def write(
        self, connection: Connection, runtime: Runtime, plans: Sequence[PurchasePlan]
    ) -> list[WrittenPurchase | None]:
        """Each plan written, in the caller's transaction, or None when its external
        reference is taken (the caller answers with the replay). Their ``max_awards``
        windows are not counted again: only for purchases no such offer applies to.
        Raises (nothing of the batch must then be kept) on a database error or an
        instant spend not covered: the caller writes each purchase alone."""
        now = utcnow()
        inserted = rows.insert_events(connection, [plan.event for plan in plans])
        kept = [plan for plan in plans if plan.event.id in inserted]
        self.lines.run(
            connection,
            [
                (plan.event.id, i, line.sku, int(line.quantity * 1000), line.net_cents,
                 line.vat_cents, line.total_cents)
                for plan in kept
                for i, line in enumerate(plan.lines)
            ],
        )  # fmt: skip
        rows.add_to_catalogue(connection, sorted({sku for plan in kept for sku in plan.new_skus}))
        for plan in kept:
            if plan.classification is not None:
                rows.add_to_catalogue(connection, [], plan.classification)
        # Open reservations at the service's clock, as the one-by-one path reads them.
        held = held_by(connection, [plan.contact.wallet_id for plan in kept], runtime.now())
        reserved = {plan.contact.id: held.get(plan.contact.wallet_id, 0) for plan in kept}
        made = self.money.write(
            connection,
            runtime,
            [
                AwardedPurchase(
                    plan.event, plan.contact.id, plan.contact.spend_blocked, plan.decisions
                )
                for plan in kept
            ],
            reserved,
            now,
        )
        written: dict[str, WrittenPurchase] = {}
        for plan, money in zip(kept, made, strict=True):
            wallet = EventWallet(
                code=plan.contact.wallet_code,
                balance=from_cents(money.balance_cents),
                available=from_cents(money.balance_cents - reserved[plan.contact.id]),
            )
            metrics().events.labels(type=plan.event.type).inc()
            written[plan.event.id] = WrittenPurchase(
                plan.event, money.awards, money.spends, wallet, plan.event.created_at
            )
        return [written.get(plan.event.id) for plan in plans]
