"""The purchase fast path: decide, then write.

``plan_purchase`` runs before any write lock (reads only, at driver speed): the
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

from collections.abc import Container
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection

from rewards.db.tables import Event
from rewards.domain.decisions import AwardDecision
from rewards.domain.purchase import PricedLine
from rewards.engine import Evaluator, EventFacts
from rewards.intake import rows
from rewards.intake.events import check_not_future, new_event, request_hash
from rewards.intake.identify import ContactRow, find_contact
from rewards.intake.purchases import new_classification, purchase_details
from rewards.money.awards import MadeAward, write_awards
from rewards.money.spending import MadeSpend, instant_spends
from rewards.money.wallets import event_wallet
from rewards.offers.evaluation import Decided, awards_in_window, beneficiary_of
from rewards.offers.facts import build_facts
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
    facts: EventFacts | None  # None: not evaluated on intake
    counts: dict[str, int]  # the awards in each max_awards window the facts saw
    decisions: list[AwardDecision] = field(default_factory=list)  # set by the group commit


@dataclass(frozen=True)
class WrittenPurchase:
    """A purchase as written, for its 201 answer (``answers.render_event``)."""

    event: Event
    awards: list[MadeAward]
    spends: list[MadeSpend]
    wallet: EventWallet
    now: datetime


def plan_purchase(
    connection: Connection, runtime: Runtime, body: PurchaseIn, catalogue: Container[str] = ()
) -> PurchasePlan | None:
    """The plan of a purchase, or None when it needs the full path (see the module).
    Refusals (422...) are raised here, in the order the full path raises them.
    ``catalogue``: SKUs known to be in the catalogue already."""
    identifier = body.contact
    if identifier is None or identifier.otp is not None:
        return None  # the schema requires a contact; an OTP is consumed by the full path
    if body.spend is not None or body.estimate_id is not None:
        return None
    system = body.external_system or ""
    if body.external_reference is not None and rows.external_event_id(
        connection, system, body.external_reference
    ):
        return None  # a replay: the full path answers it
    now = runtime.now()
    check_not_future(body, now)
    priced, details = purchase_details(runtime, body)
    contact = find_contact(connection, identifier, "/contact")
    if contact is None:  # pragma: no cover - OTPs were sent to the full path above
        return None
    digest = request_hash("purchase", body)
    event = new_event(
        runtime, "purchase", body, digest, contact.id, priced.total_cents, details, now
    )
    facts, counts = None, {}
    if event.evaluated:
        counts = awards_in_window(connection, runtime, event, lock=False)
        facts = build_facts(None, event, contact.segments, counts)
    return PurchasePlan(
        event=event,
        contact=contact,
        lines=priced.lines,
        new_skus=sorted({line.sku for line in priced.lines if line.sku not in catalogue}),
        classification=new_classification(runtime, body.classification),
        facts=facts,
        counts=counts,
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
    if plan.facts is not None and runtime.rulesets.award_windows(event.type):
        # Awards of this contact committed since the plan count against the windows.
        counts = awards_in_window(connection, runtime, event)
        if counts != plan.counts:
            facts = build_facts(None, event, plan.contact.segments, counts)
            decisions = evaluator.evaluate(facts, mode="immediate")
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
