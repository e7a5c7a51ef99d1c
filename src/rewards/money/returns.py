"""Returns: some quantities of a purchase come back; the awards they earned go back in
proportion. Per-line awards follow the returned quantity of their line, event-level
awards the returned share of the purchase total. Reversals are computed on the
*cumulative* return so that rounding never reverses more than was awarded and a full
return reverses exactly everything."""

from __future__ import annotations

import uuid
from collections import defaultdict
from decimal import Decimal

from sqlalchemy import func, select
from sqlmodel import Session, col

from rewards.db.tables import Award, Contact, Event, EventLine, ReturnedLine, Wallet
from rewards.domain.money import from_cents, quantize, to_cents
from rewards.errors import (
    EventCancelled,
    EventNotFound,
    FieldError,
    NotAPurchase,
    ReturnExceedsPurchase,
    ValidationFailed,
)
from rewards.money.ledger import partly_reversed_cents, post_entry
from rewards.money.wallets import event_wallet
from rewards.runtime.context import Runtime
from rewards.wire import ReturnedLineOut, ReturnIn, ReturnOut, ReversalOut


def _returned_milli(session: Session, event_id: str) -> dict[int, int]:
    rows = session.execute(
        select(col(ReturnedLine.line_no), func.sum(ReturnedLine.quantity_milli))
        .where(col(ReturnedLine.event_id) == event_id)
        .group_by(col(ReturnedLine.line_no))
    ).all()
    return {line_no: int(total) for line_no, total in rows}


def _allocate(lines: list[EventLine], already: dict[int, int], body: ReturnIn) -> dict[int, int]:
    """Returned milli-quantities per line; a SKU bought on several lines fills them in
    order. More than is left to return: 422 at the item."""
    taken: dict[int, int] = defaultdict(int)
    for i, item in enumerate(body.products):
        if item.quantity != item.quantity.quantize(Decimal("0.001")):
            raise ValidationFailed.at(f"/products/{i}/quantity", "at most 3 decimals")
        wanted = int(item.quantity * 1000)
        for line in lines:
            if line.sku != item.sku or wanted == 0:
                continue
            room = line.quantity_milli - already.get(line.line_no, 0) - taken[line.line_no]
            step = min(room, wanted)
            if step > 0:
                taken[line.line_no] += step
                wanted -= step
        if wanted:
            raise ReturnExceedsPurchase(
                f"More {item.sku!r} returned than was bought and not yet returned.",
                errors=[
                    FieldError(
                        path=f"/products/{i}/quantity",
                        message="more than bought and not yet returned",
                    )
                ],
            )
    return dict(taken)


def _share(amount_cents: int, part: int, whole: int) -> int:
    return (
        to_cents(quantize(from_cents(amount_cents) * Decimal(part) / Decimal(whole)))
        if whole
        else 0
    )


def return_products(session: Session, runtime: Runtime, event_id: str, body: ReturnIn) -> ReturnOut:
    event = session.scalars(
        select(Event).where(col(Event.id) == event_id).with_for_update()
    ).first()
    if event is None:
        raise EventNotFound(f"No event with id {event_id!r}.")
    if event.type != "purchase":
        raise NotAPurchase(f"Event {event.id} is a {event.type}, not a purchase.")
    if event.state != "posted":
        raise EventCancelled(f"Event {event.id} is cancelled.")
    lines = list(
        session.scalars(
            select(EventLine)
            .where(col(EventLine.event_id) == event.id)
            .order_by(col(EventLine.line_no))
        )
    )
    by_no = {line.line_no: line for line in lines}
    before = _returned_milli(session, event.id)
    taken = _allocate(lines, before, body)
    after = {no: before.get(no, 0) + taken.get(no, 0) for no in by_no}
    return_id = str(uuid.uuid4())
    session.add_all(
        ReturnedLine(return_id=return_id, event_id=event.id, line_no=no, quantity_milli=milli)
        for no, milli in taken.items()
    )
    total = event.amount_cents or 0
    returned_value_after = sum(
        _share(by_no[no].total_cents, milli, by_no[no].quantity_milli)
        for no, milli in after.items()
    )
    reversals = []
    for award in session.scalars(
        select(Award).where(col(Award.event_id) == event.id).order_by(col(Award.ledger_entry_id))
    ):
        if award.lines is not None:
            target = sum(
                min(
                    to_cents(Decimal(item["amount"])),
                    _share(
                        to_cents(Decimal(item["amount"])),
                        after.get(item["index"], 0),
                        by_no[item["index"]].quantity_milli,
                    ),
                )
                for item in award.lines
            )
        else:
            target = _share(award.amount_cents, returned_value_after, total)
        target = min(target, award.amount_cents)
        due = target + partly_reversed_cents(session, award.id)  # partly reversed is <= 0
        if due <= 0:
            continue
        wallet_id = session.scalars(
            select(col(Wallet.id)).where(col(Wallet.contact_id) == award.contact_id)
        ).one()
        assert wallet_id is not None  # a primary key
        entry = post_entry(
            session,
            wallet_id=wallet_id,
            kind="award_reversal",
            amount_cents=-due,
            event_id=event.id,
            offer_id=award.offer_id,
            award_id=award.id,
        )
        reversals.append(
            ReversalOut(
                id=entry.id or 0,
                kind="award_reversal",
                amount=from_cents(entry.amount_cents),
                balance_after=from_cents(entry.balance_after_cents),
                reverses_id=None,
                offer_id=award.offer_id,
            )
        )
    session.flush()
    contact = session.get(Contact, event.contact_id)
    assert contact is not None
    return ReturnOut(
        id=return_id,
        event_id=event.id,
        products=[
            ReturnedLineOut(
                index=no,
                sku=by_no[no].sku,
                quantity=Decimal(milli) / 1000,
                amount=from_cents(_share(by_no[no].total_cents, milli, by_no[no].quantity_milli)),
            )
            for no, milli in sorted(taken.items())
        ],
        reversals=reversals,
        wallet=event_wallet(session, contact.id, runtime.now()),
    )
