"""Contacts, their wallets (created with the contact), gift cards and OTPs."""

from __future__ import annotations

import base64
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from rewards.db.tables import Contact, GiftCard, Otp, PaymentCard, Wallet
from rewards.domain.money import from_cents, to_cents
from rewards.errors import (
    ContactNotFoundById,
    DuplicateContact,
    FieldError,
    ValidationFailed,
)
from rewards.intake.qr import qr_svg
from rewards.money.wallets import wallet_out
from rewards.runtime.context import Runtime
from rewards.wire import (
    ContactCreate,
    ContactMatch,
    ContactMatchedBy,
    ContactOut,
    ContactUpdate,
    OtpOut,
    OtpRequest,
)


def new_wallet_code() -> str:
    """16 random base32 characters: unguessable and easy to type on a POS."""
    return base64.b32encode(secrets.token_bytes(10)).decode()


def _wallet_of(session: Session, contact_id: str) -> Wallet:
    return session.scalars(select(Wallet).where(col(Wallet.contact_id) == contact_id)).one()


def contact_out(session: Session, contact: Contact, now: datetime) -> ContactOut:
    cards = session.scalars(
        select(col(GiftCard.number))
        .where(col(GiftCard.contact_id) == contact.id)
        .order_by(col(GiftCard.number))
    ).all()
    tokens = session.scalars(
        select(col(PaymentCard.token))
        .where(col(PaymentCard.contact_id) == contact.id)
        .order_by(col(PaymentCard.token))
    ).all()
    return ContactOut(
        id=contact.id,
        code=contact.code,
        cim=contact.cim,
        name=contact.name,
        segments=list(contact.segments),
        gift_cards=list(cards),
        payment_cards=list(tokens),
        spend_blocked=contact.spend_blocked,
        created_at=contact.created_at,
        wallet=wallet_out(session, _wallet_of(session, contact.id), now),
    )


def _refuse_taken(
    session: Session,
    contact_id: str | None,
    code: str | None,
    cim: str | None,
    cards: list[str],
    tokens: list[str],
) -> None:
    """Clear 409s for identifiers already used by another contact (the unique
    constraints still decide under concurrency)."""
    problems = []
    if (
        code is not None
        and session.scalars(
            select(col(Contact.id)).where(col(Contact.code) == code, col(Contact.id) != contact_id)
        ).first()
    ):
        problems.append(FieldError(path="/code", message="already used by another contact"))
    if (
        cim is not None
        and session.scalars(
            select(col(Contact.id)).where(col(Contact.cim) == cim, col(Contact.id) != contact_id)
        ).first()
    ):
        problems.append(FieldError(path="/cim", message="already used by another contact"))
    for i, card in enumerate(cards):
        owner = session.scalars(
            select(col(GiftCard.contact_id)).where(col(GiftCard.number) == card)
        ).first()
        if owner is not None and owner != contact_id:
            problems.append(
                FieldError(path=f"/gift_cards/{i}", message="already used by another contact")
            )
    for i, token in enumerate(tokens):
        owner = payment_card_owner(session, token)
        if owner is not None and owner != contact_id:
            problems.append(
                FieldError(path=f"/payment_cards/{i}", message="already used by another contact")
            )
    if problems:
        raise DuplicateContact("An identifier is already used by another contact.", errors=problems)


def payment_card_owner(session: Session, token: str) -> str | None:
    """The contact holding this payment card token, if any."""
    return session.scalars(
        select(col(PaymentCard.contact_id)).where(col(PaymentCard.token) == token)
    ).first()


def link_payment_card(session: Session, contact_id: str, token: str) -> bool:
    """Add the token to the contact's payment cards unless another contact holds it (a
    claim links the card it proved); False when it was not added. Inside a savepoint, so
    a concurrent link of the same token loses quietly instead of failing the caller."""
    owner = payment_card_owner(session, token)
    if owner is not None:
        return owner == contact_id
    try:
        with session.begin_nested():
            session.add(PaymentCard(token=token, contact_id=contact_id))
            session.flush()
    except IntegrityError:
        return False
    return True


def _flush_unique(session: Session) -> None:
    try:
        session.flush()
    except IntegrityError:
        raise DuplicateContact("An identifier is already used by another contact.") from None


def create_contact(session: Session, runtime: Runtime, body: ContactCreate) -> ContactOut:
    _refuse_taken(session, None, body.code, body.cim, body.gift_cards, body.payment_cards)
    contact = Contact(
        id=str(uuid.uuid4()),
        code=body.code,
        cim=body.cim,
        name=body.name,
        segments=list(body.segments),
        spend_blocked=body.spend_blocked,
    )
    session.add(contact)
    _flush_unique(session)
    session.add(
        Wallet(
            code=new_wallet_code(),
            contact_id=contact.id,
            currency=runtime.rulesets.definition.currency,
        )
    )
    session.add_all(GiftCard(number=card, contact_id=contact.id) for card in body.gift_cards)
    session.add_all(PaymentCard(token=token, contact_id=contact.id) for token in body.payment_cards)
    _flush_unique(session)
    return contact_out(session, contact, runtime.now())


def get_contact(session: Session, runtime: Runtime, contact_id: str) -> ContactOut:
    return contact_out(session, _contact(session, contact_id), runtime.now())


def _contact(session: Session, contact_id: str, *, for_update: bool = False) -> Contact:
    query = select(Contact).where(col(Contact.id) == contact_id)
    contact = session.scalars(query.with_for_update() if for_update else query).first()
    if contact is None:
        raise ContactNotFoundById(f"No contact with id {contact_id!r}.")
    return contact


def update_contact(
    session: Session, runtime: Runtime, contact_id: str, body: ContactUpdate
) -> ContactOut:
    contact = _contact(session, contact_id, for_update=True)
    if body.gift_cards is not None:
        _refuse_taken(session, contact.id, None, None, body.gift_cards, [])
        session.execute(delete(GiftCard).where(col(GiftCard.contact_id) == contact.id))
        session.add_all(GiftCard(number=card, contact_id=contact.id) for card in body.gift_cards)
    if body.payment_cards is not None:
        _refuse_taken(session, contact.id, None, None, [], body.payment_cards)
        session.execute(delete(PaymentCard).where(col(PaymentCard.contact_id) == contact.id))
        session.add_all(
            PaymentCard(token=token, contact_id=contact.id) for token in body.payment_cards
        )
    if body.name is not None:
        contact.name = body.name
    if body.segments is not None:
        contact.segments = list(body.segments)
    if body.spend_blocked is not None:
        contact.spend_blocked = body.spend_blocked
    contact.updated_at = runtime.now()
    session.add(contact)
    _flush_unique(session)
    return contact_out(session, contact, runtime.now())


def issue_otp(session: Session, runtime: Runtime, contact_id: str, body: OtpRequest) -> OtpOut:
    """A six-digit single-use code, unique among the codes still usable. (The API
    counts the request against the issuing limits first: runtime.ratelimit.)"""
    contact = _contact(session, contact_id)
    now = runtime.now()
    spend_cents = None
    if body.spend_amount is not None:
        spend_cents = to_cents(body.spend_amount)
        if from_cents(spend_cents) != body.spend_amount or spend_cents <= 0:
            raise ValidationFailed.at(
                "/spend_amount", "must be a positive amount with at most 2 decimals"
            )
    ttl = body.ttl_seconds or runtime.settings.otp_ttl_seconds
    while True:
        code = f"{secrets.randbelow(1_000_000):06d}"
        clash = session.scalars(
            select(col(Otp.id)).where(
                col(Otp.code) == code, col(Otp.used_at).is_(None), col(Otp.expires_at) > now
            )
        ).first()
        if clash is None:
            break
    otp = Otp(
        code=code,
        contact_id=contact.id,
        spend_amount_cents=spend_cents,
        expires_at=now + timedelta(seconds=ttl),
    )
    session.add(otp)
    session.flush()
    return OtpOut(
        otp=code,
        expires_at=otp.expires_at,
        spend_amount=body.spend_amount if spend_cents else None,
        qr_svg=qr_svg(code, title=f"One-time password {code}") if body.qr else None,
    )


def search_contacts(session: Session, text: str, limit: int = 50) -> list[ContactMatch]:
    """Contacts whose id, code, CIM, wallet code or gift card is ``text`` exactly, then
    those whose name contains it (any case), at most ``limit``; each once, with what
    matched."""
    text = text.strip()
    if not text:
        return []
    exact: list[tuple[ContactMatchedBy, Any]] = [
        ("id", col(Contact.id) == text),
        ("code", col(Contact.code) == text),
        ("cim", col(Contact.cim) == text),
        ("wallet_code", col(Wallet.code) == text.upper()),
        (
            "gift_card",
            col(Contact.id).in_(
                select(col(GiftCard.contact_id)).where(col(GiftCard.number) == text)
            ),
        ),
    ]
    pattern = "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    by_name: tuple[ContactMatchedBy, Any] = (
        "name",
        func.lower(col(Contact.name)).like(pattern, escape="\\"),
    )
    found: dict[str, ContactMatch] = {}
    for matched_by, condition in [*exact, by_name]:
        rows = session.execute(
            select(Contact, col(Wallet.code))
            .join(Wallet, col(Wallet.contact_id) == col(Contact.id))
            .where(condition)
            .order_by(col(Contact.name), col(Contact.id))
            .limit(limit)
        ).all()
        for contact, wallet_code in rows:
            found.setdefault(
                contact.id,
                ContactMatch(
                    id=contact.id,
                    code=contact.code,
                    cim=contact.cim,
                    name=contact.name,
                    wallet_code=wallet_code,
                    matched_by=matched_by,
                ),
            )
    return list(found.values())[:limit]
