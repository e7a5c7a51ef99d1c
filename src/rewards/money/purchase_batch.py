"""The awards and instant spends of a batch of purchases on intake, written in bulk
(``BatchPurchaseAwards``): what ``awards.write_awards`` and ``spending.instant_spends``
write one statement at a time, with the same amounts and rows."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection
from sqlmodel import Session

from rewards.db.bulk import BulkInsert
from rewards.db.ids import time_ordered_id
from rewards.db.tables import Award, Event, Spend
from rewards.db.types import table_of
from rewards.domain.decisions import AwardDecision
from rewards.money.awards import AWARD_COLUMNS, MadeAward, encode_lines, made_award
from rewards.money.ledger import BulkCredits, Credit
from rewards.money.spending import SPEND_COLUMNS, MadeSpend, instant_amounts, reduction_at
from rewards.runtime.context import Runtime
from rewards.runtime.metrics import metrics


class AwardedPurchase(NamedTuple):
    """A purchase of an intake batch with the awards decided for it (all to its contact)."""

    event: Event
    contact_id: str
    spend_blocked: bool  # as identified: its instant spends are skipped when blocked
    decisions: list[AwardDecision]


class PurchaseMoney(NamedTuple):
    """What one purchase of a batch wrote: its awards and instant spends, in order, and
    its contact's balance right after them (the batch's earlier purchases included)."""

    awards: list[MadeAward]
    spends: list[MadeSpend]
    balance_cents: int


class BatchPurchaseAwards:
    """The awards and instant spends of a batch of purchases on intake, in bulk: the rows
    ``write_awards`` and ``spending.instant_spends`` write one statement at a time, here
    one ledger bulk (``ledger.BulkCredits``: every wallet locked and read once, each
    instant spend checked against the available funds) and one insert per table. Built
    once per intake writer."""

    def __init__(self, dialect: Any) -> None:
        self.credits = BulkCredits(dialect)
        self.awards = BulkInsert(dialect, table_of(Award), AWARD_COLUMNS, ready=("lines",))
        self.spends = BulkInsert(dialect, table_of(Spend), SPEND_COLUMNS)

    def write(
        self,
        target: Session | Connection,
        runtime: Runtime,
        purchases: Sequence[AwardedPurchase],
        reserved: Mapping[str, int],
        now: datetime,
    ) -> list[PurchaseMoney]:
        """Raises ``ledger.InsufficientBalance`` (nothing written) when an instant spend
        is not covered; ``reserved``: contact -> cents its open reservations hold."""
        credits: list[Credit] = []
        made: list[tuple[list[MadeAward], list[MadeSpend]]] = []
        for purchase in purchases:
            event = purchase.event
            awards = [
                made_award(event, decision, purchase.contact_id, time_ordered_id())
                for decision in purchase.decisions
            ]
            blocked = {purchase.contact_id: purchase.spend_blocked}
            amounts = instant_amounts(awards, event.amount_cents or 0, blocked.__getitem__)
            reduction = reduction_at(runtime, event.performed_by_unit)
            spends = [
                MadeSpend(
                    id=str(uuid.uuid4()),
                    event_id=event.id,
                    purchase_event_id=event.id,
                    contact_id=purchase.contact_id,
                    requested_cents=award.amount_cents,
                    amount_cents=amount,
                    instant=True,
                    reduction=reduction,
                    ledger_entry_id=0,
                )
                for award, amount in zip(awards, amounts, strict=True)
                if amount is not None
            ]
            credits += [
                Credit(a.contact_id, a.amount_cents, event.id, a.offer_id, a.id) for a in awards
            ]
            credits += [
                Credit(s.contact_id, -s.amount_cents, event.id, None, None, "spend", s.id)
                for s in spends
            ]
            made.append((awards, spends))
        posted = self.credits.post(
            target,
            credits,
            now,
            also_read=[purchase.contact_id for purchase in purchases],
            reserved=reserved,
        )
        balances = dict(posted.balances_before)
        entries = iter(posted.entries)
        results = []
        award_rows, spend_rows = [], []
        for purchase, (awards, spends) in zip(purchases, made, strict=True):
            decisions = purchase.decisions
            for i, award in enumerate(awards):
                entry = next(entries)
                awards[i] = award = award._replace(
                    wallet_id=entry.wallet_id, ledger_entry_id=entry.id
                )
                balances[award.contact_id] = entry.balance_after_cents
                stored = None if award.lines is None else encode_lines(award.lines).decode()
                award_rows.append(
                    (award.id, award.event_id, award.offer_id, award.offer_name,
                     award.classification, award.beneficiary, award.contact_id,
                     award.amount_cents, stored, award.instant_spend,
                     decisions[i].ruleset_version, purchase.event.performed_on, entry.id, now)
                )  # fmt: skip
            for i, spend in enumerate(spends):
                entry = next(entries)
                spends[i] = spend = spend._replace(ledger_entry_id=entry.id)
                balances[spend.contact_id] = entry.balance_after_cents
                spend_rows.append((*spend, now))
            results.append(PurchaseMoney(awards, spends, balances[purchase.contact_id]))
            for award in awards:
                metrics().awards.labels(offer_id=award.offer_id).inc()
                metrics().awarded_cents.inc(award.amount_cents)
            if spends:
                metrics().spends.labels(instant="true").inc(len(spends))
        self.awards.run(target, award_rows)
        self.spends.run(target, spend_rows)
        return results
