"""Card transactions from transaction processors (PLATFORM.md): recorded once per
(processor, transaction_id), routed to every merchant listing the terminal, each route
handled by its merchant's ``processor_mode``. A transaction becomes a purchase through
``events.record_event``, the path every purchase takes; matching lives in ``matching``,
claims in ``claims``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

import msgspec
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from rewards.db import outbox
from rewards.db.database import Database
from rewards.db.ids import time_ordered_id
from rewards.db.pages import decode_cursor, encode_cursor
from rewards.db.tables import ProcessorRoute, ProcessorTransaction
from rewards.db.types import table_of
from rewards.domain.money import from_cents, to_cents
from rewards.engine.model import Merchant
from rewards.errors import (
    FieldError,
    IdempotencyConflict,
    TransactionNotFound,
    UnknownCurrency,
    UnknownTerminal,
)
from rewards.intake import events, matching
from rewards.intake.contacts import payment_card_owner
from rewards.runtime.context import Runtime
from rewards.wire import (
    CardOut,
    ContactIdentifier,
    PaymentMedium,
    ProcessorTransactionIn,
    ProcessorTransactionOut,
    ProcessorTransactionPage,
    ProcessorTransactionRecorded,
    ProductLineIn,
    PurchaseIn,
    RouteOut,
)

_encoder = msgspec.json.Encoder(decimal_format="string")


@dataclass(frozen=True)
class Posted:
    transaction: ProcessorTransactionOut
    created: bool  # False: an idempotent replay


def post_transaction(database: Database, runtime: Runtime, body: ProcessorTransactionIn) -> Posted:
    """``record_transaction`` in a write transaction of its own, done again when
    PostgreSQL picked it as a deadlock's victim (it waits for merchants' matching locks
    that POS purchases also take)."""
    return database.write_retrying(lambda session: record_transaction(session, runtime, body))


def record_transaction(session: Session, runtime: Runtime, body: ProcessorTransactionIn) -> Posted:
    """Record and route one transaction in the caller's transaction (201), or answer the
    one its key names (200; another body: 409). Unknown terminal: 422, nothing stored."""
    digest = hashlib.sha256(_encoder.encode(body)).hexdigest()
    existing = _by_key(session, body.processor, body.transaction_id)
    if existing is not None:
        return _replay(session, existing, digest)
    merchants = runtime.rulesets.terminal_merchants(body.terminal_id)
    if not merchants:
        raise UnknownTerminal(
            f"No merchant lists terminal {body.terminal_id!r}.",
            errors=[FieldError(path="/terminal_id", message="no merchant lists this terminal")],
        )
    now = runtime.now()
    events.check_performed_on(body.performed_on, now)
    definition = runtime.rulesets.definition
    if body.currency not in (None, definition.currency, *definition.exchange_rates):
        # refused now, not when the transaction is claimed or recorded later
        raise UnknownCurrency(
            f"No exchange rate from {body.currency} to {definition.currency}.",
            errors=[FieldError(path="/currency", message=f"no exchange rate for {body.currency}")],
        )
    row = ProcessorTransaction(
        id=time_ordered_id(),
        processor=body.processor,
        transaction_id=body.transaction_id,
        terminal_id=body.terminal_id,
        performed_on=body.performed_on,
        amount_cents=to_cents(body.amount),
        currency=body.currency,
        card_token=body.card.token,
        card_brand=body.card.brand,
        card_type=body.card.type,
        card_last4=body.card.last4,
        request_hash=digest,
        created_at=now,
    )
    if not _insert(session, row):  # a concurrent twin committed first
        twin = _by_key(session, body.processor, body.transaction_id)
        assert twin is not None  # only the key is unique
        return _replay(session, twin, digest)
    row = _by_id(session, row.id)
    owner = payment_card_owner(session, row.card_token)
    for merchant in merchants:
        session.add(_route(session, runtime, row, merchant, owner))
    session.flush()
    answer = transaction_out(session, row)
    outbox.emit(
        session,
        [
            outbox.notice(
                "processor_transaction.recorded",
                answer.contact_id,
                ProcessorTransactionRecorded(
                    processor=answer.processor,
                    transaction_id=answer.transaction_id,
                    merchant_id=route.merchant_id,
                    status=route.status,
                    contact_id=answer.contact_id,
                    event_id=route.event_id,
                    amount=answer.amount,
                ),
            )
            for route in answer.routes
        ],
        now,
    )
    return Posted(transaction=answer, created=True)


def _insert(session: Session, row: ProcessorTransaction) -> bool:
    """INSERT unless the (processor, transaction_id) key is taken (PostgreSQL waits for
    an uncommitted twin, then skips)."""
    on = postgresql if session.connection().dialect.name == "postgresql" else sqlite
    values = {c.name: getattr(row, c.name) for c in table_of(ProcessorTransaction).columns}
    values.pop("number")
    table = table_of(ProcessorTransaction)
    statement = (
        on.insert(table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["processor", "transaction_id"])
        .returning(table.c.number)
    )
    return session.execute(statement).first() is not None


def _route(
    session: Session,
    runtime: Runtime,
    row: ProcessorTransaction,
    merchant: Merchant,
    owner: str | None,
) -> ProcessorRoute:
    route = ProcessorRoute(
        transaction_id=row.id,
        merchant_id=merchant.id,
        mode=merchant.processor_mode,
        status="unidentified",
        performed_on=row.performed_on,
        amount_cents=row.amount_cents,
        card_last4=row.card_last4,
        updated_at=runtime.now(),
    )
    if merchant.processor_mode == "matching":
        matching.lock_merchant(session, merchant.id)
        purchase = matching.find_purchase(session, merchant, row, owner)
        if purchase is not None:
            route.status, route.event_id = "matched", purchase.id
        else:
            route.status = "awaiting_match"
            route.match_until = row.performed_on + timedelta(minutes=merchant.match_window_minutes)
    elif owner is not None:
        route.status, route.event_id = (
            "recorded",
            record_purchase(session, runtime, row, merchant, owner),
        )
    elif merchant.processor_mode == "claim":
        route.status = "unclaimed"
    return route


def record_purchase(
    session: Session,
    runtime: Runtime,
    row: ProcessorTransaction,
    merchant: Merchant,
    contact_id: str,
) -> str:
    """The purchase a transaction becomes at the merchant's first unit (evaluated at
    once); its external reference is the transaction and merchant, so a transaction
    becomes at most one purchase per merchant. Returns the event's id."""
    body = PurchaseIn(
        contact=ContactIdentifier(contact_id=contact_id),
        performed_on=row.performed_on,
        performed_by_unit=merchant.units[0],
        reference_number=row.transaction_id,
        currency=row.currency,
        products=[ProductLineIn(sku=merchant.default_sku, net_amount=from_cents(row.amount_cents))],
        payment_medium=PaymentMedium(
            brand=row.card_brand, type=row.card_type, identifier=row.card_last4
        )
        if row.card_brand or row.card_type or row.card_last4
        else None,
        external_system=row.processor,
        external_reference=f"{row.transaction_id}/{merchant.id}",
        process_immediately=True,
    )
    return events.record_event(session, runtime, "purchase", body).event.id


def record_overdue(session: Session, runtime: Runtime, limit: int = 500) -> int:
    """Transactions still awaiting a POS purchase after their merchant's window become
    purchases as in direct mode (``recorded``; ``unidentified`` when no contact holds
    the card), so a customer is rewarded whether or not the POS reported. The
    evaluation run calls it first. Returns how many routes it settled."""
    now = runtime.now()
    overdue = session.execute(
        select(ProcessorRoute, ProcessorTransaction)
        .join(ProcessorTransaction, col(ProcessorTransaction.id) == ProcessorRoute.transaction_id)
        .where(
            col(ProcessorRoute.status) == "awaiting_match", col(ProcessorRoute.match_until) < now
        )
        .order_by(col(ProcessorRoute.id))
        .limit(limit)
    ).all()
    settled = 0
    for route, row in overdue:
        matching.lock_merchant(session, route.merchant_id)
        owner = payment_card_owner(session, row.card_token)
        merchant = runtime.rulesets.merchant(route.merchant_id)
        status = "recorded" if owner is not None and merchant is not None else "unidentified"
        changed = session.exec(
            update(ProcessorRoute)
            .where(
                col(ProcessorRoute.id) == route.id, col(ProcessorRoute.status) == "awaiting_match"
            )
            .values(status=status, updated_at=now)
        ).rowcount
        if changed != 1:  # matched meanwhile
            continue
        if status == "recorded":
            assert owner is not None and merchant is not None
            event_id = record_purchase(session, runtime, row, merchant, owner)
            session.exec(
                update(ProcessorRoute)
                .where(col(ProcessorRoute.id) == route.id)
                .values(event_id=event_id)
            )
        settled += 1
    return settled


# ---- reading --------------------------------------------------------------------------


def _by_key(session: Session, processor: str, transaction_id: str) -> ProcessorTransaction | None:
    return session.scalars(
        select(ProcessorTransaction).where(
            col(ProcessorTransaction.processor) == processor,
            col(ProcessorTransaction.transaction_id) == transaction_id,
        )
    ).first()


def _by_id(session: Session, transaction_id: str) -> ProcessorTransaction:
    row = session.scalars(
        select(ProcessorTransaction).where(col(ProcessorTransaction.id) == transaction_id)
    ).first()
    if row is None:
        raise TransactionNotFound(f"No processor transaction with id {transaction_id!r}.")
    return row


def _replay(session: Session, row: ProcessorTransaction, digest: str) -> Posted:
    if row.request_hash != digest:
        raise IdempotencyConflict(
            f"transaction_id {row.transaction_id!r} of processor {row.processor!r} was posted "
            "with a different body.",
            errors=[
                FieldError(path="/transaction_id", message="already posted with a different body")
            ],
        )
    return Posted(transaction=transaction_out(session, row), created=False)


def transaction_out(session: Session, row: ProcessorTransaction) -> ProcessorTransactionOut:
    routes = session.scalars(
        select(ProcessorRoute)
        .where(col(ProcessorRoute.transaction_id) == row.id)
        .order_by(col(ProcessorRoute.id))
    ).all()
    return ProcessorTransactionOut(
        id=row.id,
        processor=row.processor,
        transaction_id=row.transaction_id,
        terminal_id=row.terminal_id,
        performed_on=row.performed_on,
        amount=from_cents(row.amount_cents),
        currency=row.currency,
        card=CardOut(brand=row.card_brand, type=row.card_type, last4=row.card_last4),
        contact_id=payment_card_owner(session, row.card_token),
        created_at=row.created_at,
        routes=[
            RouteOut(
                merchant_id=route.merchant_id,
                processor_mode=route.mode,  # type: ignore[arg-type]
                status=route.status,  # type: ignore[arg-type]
                event_id=route.event_id,
                match_until=route.match_until if route.status == "awaiting_match" else None,
            )
            for route in routes
        ],
    )


def get_transaction(session: Session, transaction_id: str) -> ProcessorTransactionOut:
    return transaction_out(session, _by_id(session, transaction_id))


def list_transactions(
    session: Session,
    status: str | None,
    merchant_id: str | None,
    limit: int,
    cursor: str | None,
) -> ProcessorTransactionPage:
    """Newest first; ``status`` and ``merchant_id`` select transactions with such a route."""
    query = select(ProcessorTransaction)
    if status is not None or merchant_id is not None:
        routes = select(col(ProcessorRoute.transaction_id))
        if status is not None:
            routes = routes.where(col(ProcessorRoute.status) == status)
        if merchant_id is not None:
            routes = routes.where(col(ProcessorRoute.merchant_id) == merchant_id)
        query = query.where(col(ProcessorTransaction.id).in_(routes))
    if (before := decode_cursor(cursor)) is not None:
        query = query.where(col(ProcessorTransaction.number) < before)
    rows = session.scalars(
        query.order_by(col(ProcessorTransaction.number).desc()).limit(limit + 1)
    ).all()
    items = [transaction_out(session, row) for row in rows[:limit]]
    last = rows[limit - 1].number if len(rows) > limit else None
    return ProcessorTransactionPage(
        items=items, next_cursor=encode_cursor(last) if last is not None else None
    )
