"""Backtests: replay the recorded events of a window against two ruleset folders.

``backtest(session, current, new, start, end)`` reads the posted events performed in
``[start, end)`` (never writing: the caller's read-only session is rolled back), builds
each event's facts exactly as the server does (``offers.facts.build_facts``: the contact's
segments, amounts, payment medium...) and evaluates it against both sets, in mode
``all`` (what the event earns in the end: immediate and batch offers). Per offer: the
awards count and amount under each set and the difference.

``max_awards`` windows are replayed too: each set counts the awards it gave itself in
the replay, plus the awards recorded before the window (so an offer already exhausted
for a contact stays exhausted). Limits: segments are the contacts' segments today (no
history is kept); period aggregate offers are evaluated by evaluation runs over whole
calendar periods and are listed as not replayed; cancelled events are left out (their
awards were reversed).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import msgspec
from sqlalchemy import ColumnElement, func, select
from sqlmodel import Session, col

from rewards.db.tables import Award, Contact, Event
from rewards.engine import AwardDecision, Evaluator, Rulesets
from rewards.engine.model import AGGREGATE_CLASSIFICATIONS, Offer
from rewards.offers.evaluation import NOT_EVALUATED
from rewards.offers.facts import build_facts

Progress = Callable[[int, int], None]  # (events done, events in the window)
CHUNK = 500
_ZERO = Decimal("0.00")


class OfferDifference(msgspec.Struct, kw_only=True):
    offer_id: str
    # The change touches this offer: its definition differs between the two sets (added,
    # removed, or any key but its description and examples), or what it would cost does.
    changed: bool
    definition_changed: bool
    offer_name: str
    classification: str
    current_count: int
    current_amount: Decimal
    new_count: int
    new_amount: Decimal
    count_difference: int
    amount_difference: Decimal


class BacktestOut(msgspec.Struct, kw_only=True):
    window_from: datetime  # inclusive
    window_to: datetime  # exclusive
    events: int  # events replayed
    current_version: str
    new_version: str
    offers: list[OfferDifference]  # the changed offers first
    changed_offers: int
    current_count: int
    current_amount: Decimal
    new_count: int
    new_amount: Decimal
    count_difference: int
    amount_difference: Decimal
    not_replayed: list[str]  # period aggregate offers (evaluated by runs)


@dataclass
class _Totals:
    count: int = 0
    amount: Decimal = _ZERO


@dataclass
class _Replay:
    """One ruleset set's side of the replay: its evaluator, totals and award history."""

    rulesets: Rulesets
    evaluator: Evaluator
    windows: dict[str, int]  # offer id -> window days (offers with max_awards)
    history: dict[tuple[str, str], list[datetime]] = field(default_factory=dict)
    totals: dict[str, _Totals] = field(default_factory=dict)

    def prior_awards(self, event: Event) -> dict[str, int]:
        counts = {}
        for offer_id, days in self.rulesets.award_windows(event.type).items():
            times = self.history.get((event.contact_id, offer_id))
            if not times:
                continue
            since = event.performed_on - timedelta(days=days)
            upto = bisect_right(times, event.performed_on)
            count = sum(1 for moment in times[:upto] if moment > since)
            if count:
                counts[offer_id] = count
        return counts

    def record(self, event: Event, decisions: Sequence[AwardDecision]) -> None:
        for decision in decisions:
            totals = self.totals.setdefault(decision.offer_id, _Totals())
            totals.count += 1
            totals.amount += decision.amount
            if decision.beneficiary != "referred" and decision.offer_id in self.windows:
                self.history.setdefault((event.contact_id, decision.offer_id), []).append(
                    event.performed_on
                )


def _windows(rulesets: Rulesets) -> dict[str, int]:
    return {
        o.id: o.conditions.max_awards.window_days
        for o in rulesets.offers
        if o.conditions.max_awards is not None
    }


def _load_history(session: Session, replays: list[_Replay], start: datetime) -> None:
    """Awards recorded before the window that still count in a max_awards window."""
    offer_ids = {offer_id for r in replays for offer_id in r.windows}
    if not offer_ids:
        return
    longest = max(days for r in replays for days in r.windows.values())
    rows = session.execute(
        select(col(Award.contact_id), col(Award.offer_id), col(Award.performed_on))
        .join(Event, col(Event.id) == Award.event_id)
        .where(
            col(Award.offer_id).in_(sorted(offer_ids)),
            col(Award.beneficiary) != "referred",
            col(Award.performed_on) >= start - timedelta(days=longest),
            col(Award.performed_on) < start,
            col(Event.state) == "posted",
        )
        .order_by(col(Award.performed_on))
    ).all()
    for contact_id, offer_id, performed_on in rows:
        for replay in replays:
            if offer_id in replay.windows:
                replay.history.setdefault((contact_id, offer_id), []).append(performed_on)


def _window(start: datetime, end: datetime) -> list[ColumnElement[bool]]:
    return [
        col(Event.performed_on) >= start,
        col(Event.performed_on) < end,
        col(Event.state) == "posted",
        col(Event.type).not_in(sorted(NOT_EVALUATED)),
    ]


def _events(session: Session, start: datetime, end: datetime) -> Iterator[list[Event]]:
    """The window's events in performed_on order, a chunk at a time (keyset pagination)."""
    after: tuple[datetime, int] | None = None
    while True:
        query = select(Event).where(*_window(start, end))
        if after is not None:
            moment, number = after
            query = query.where(
                (col(Event.performed_on) > moment)
                | ((col(Event.performed_on) == moment) & (col(Event.number) > number))
            )
        chunk = list(
            session.scalars(query.order_by(col(Event.performed_on), col(Event.number)).limit(CHUNK))
        )
        if not chunk:
            return
        yield chunk
        after = (chunk[-1].performed_on, chunk[-1].number or 0)
        session.expunge_all()  # keep memory flat over long windows


def count_events(session: Session, start: datetime, end: datetime) -> int:
    return session.scalar(select(func.count()).select_from(Event).where(*_window(start, end))) or 0


def backtest(
    session: Session,
    current: Rulesets,
    new: Rulesets,
    start: datetime,
    end: datetime,
    *,
    progress: Progress | None = None,
) -> BacktestOut:
    """Replay ``[start, end)`` against ``current`` and ``new`` (reads only)."""
    replays = [
        _Replay(rulesets, Evaluator(rulesets), _windows(rulesets)) for rulesets in (current, new)
    ]
    _load_history(session, replays, start)
    total = count_events(session, start, end)
    done = 0
    if progress:
        progress(0, total)
    segments: dict[str, list[str]] = {}
    for chunk in _events(session, start, end):
        missing = sorted({e.contact_id for e in chunk} - segments.keys())
        if missing:
            for contact_id, contact_segments in session.execute(
                select(col(Contact.id), col(Contact.segments)).where(col(Contact.id).in_(missing))
            ):
                segments[contact_id] = list(contact_segments or [])
        for event in chunk:
            for replay in replays:
                facts = build_facts(
                    session, event, segments.get(event.contact_id, []), replay.prior_awards(event)
                )
                replay.record(event, replay.evaluator.evaluate(facts, mode="all"))
            done += 1
        if progress:
            progress(done, total)
    return _result(replays, start, end, done)


def _definition(rulesets: Rulesets, offer_id: str) -> Offer | None:
    """What an offer does (its description and examples left out), or None without it."""
    offer = rulesets.offer(offer_id)
    if offer is None:
        return None
    return msgspec.structs.replace(offer, description=None, examples=[])


def _result(replays: list[_Replay], start: datetime, end: datetime, events: int) -> BacktestOut:
    before, after = replays
    offers: dict[str, tuple[str, str]] = {}
    not_replayed: list[str] = []
    for rulesets in (after.rulesets, before.rulesets):
        for offer in rulesets.offers:
            if offer.classification in AGGREGATE_CLASSIFICATIONS:
                if offer.id not in not_replayed:
                    not_replayed.append(offer.id)
                continue
            offers.setdefault(offer.id, (offer.name, offer.classification))
    rows = []
    for offer_id, (name, classification) in offers.items():
        old = before.totals.get(offer_id, _Totals())
        cur = after.totals.get(offer_id, _Totals())
        redefined = _definition(before.rulesets, offer_id) != _definition(after.rulesets, offer_id)
        rows.append(
            OfferDifference(
                offer_id=offer_id,
                changed=redefined or (old.count, old.amount) != (cur.count, cur.amount),
                definition_changed=redefined,
                offer_name=name,
                classification=classification,
                current_count=old.count,
                current_amount=old.amount,
                new_count=cur.count,
                new_amount=cur.amount,
                count_difference=cur.count - old.count,
                amount_difference=cur.amount - old.amount,
            )
        )
    rows.sort(key=lambda r: not r.changed)  # stable: the changed first, each in file order
    current_count = sum(r.current_count for r in rows)
    new_count = sum(r.new_count for r in rows)
    current_amount = sum((r.current_amount for r in rows), _ZERO)
    new_amount = sum((r.new_amount for r in rows), _ZERO)
    return BacktestOut(
        window_from=start,
        window_to=end,
        events=events,
        current_version=before.rulesets.version,
        new_version=after.rulesets.version,
        offers=rows,
        changed_offers=sum(r.changed for r in rows),
        current_count=current_count,
        current_amount=current_amount,
        new_count=new_count,
        new_amount=new_amount,
        count_difference=new_count - current_count,
        amount_difference=new_amount - current_amount,
        not_replayed=not_replayed,
    )


__all__ = ["BacktestOut", "OfferDifference", "backtest", "count_events"]
