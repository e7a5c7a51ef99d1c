"""Identification: an event names its contact by exactly one identifier."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import msgspec
from sqlalchemy import BindParameter, Connection, Select, bindparam, select, update
from sqlalchemy.engine import Dialect
from sqlmodel import Session, col

from rewards.db.driver import DriverStatement, driver_cursor
from rewards.db.tables import Contact, GiftCard, Otp, PaymentCard, Wallet
from rewards.db.types import table_of
from rewards.errors import ContactNotFound, DomainError, FieldError, OtpInvalid
from rewards.runtime.context import Runtime
from rewards.runtime.ratelimit import otp_attempts
from rewards.wire import BulkItemIn, ContactIdentifier

IDENTIFIER_KINDS = (
    "wallet_code",
    "contact_id",
    "contact_code",
    "cim",
    "otp",
    "gift_card",
    "payment_card",
)


@dataclass(frozen=True)
class Identified:
    contact: Contact
    otp: Otp | None  # the OTP that identified the contact; consumed by consume_otp()


@cache
def _contact_queries() -> dict[str, Select[Contact]]:
    """The contact by each kind of identifier (``:value``), built once per process on
    first use: building a query costs about as much as running it."""
    value: BindParameter[str] = bindparam("value")
    return {
        "wallet_code": select(Contact)
        .join(Wallet, col(Wallet.contact_id) == Contact.id)
        .where(col(Wallet.code) == value),
        "contact_id": select(Contact).where(col(Contact.id) == value),
        "contact_code": select(Contact).where(col(Contact.code) == value),
        "cim": select(Contact).where(col(Contact.cim) == value),
        "gift_card": select(Contact)
        .join(GiftCard, col(GiftCard.contact_id) == Contact.id)
        .where(col(GiftCard.number) == value),
        "payment_card": select(Contact)
        .join(PaymentCard, col(PaymentCard.contact_id) == Contact.id)
        .where(col(PaymentCard.token) == value),
    }


def _kind_and_value(identifier: ContactIdentifier) -> tuple[str, str]:
    for kind in IDENTIFIER_KINDS:
        value = getattr(identifier, kind)
        if value is not None:
            return kind, value
    raise AssertionError("the schema requires exactly one identifier")


@cache
def _identifier_fields(body_type: type[msgspec.Struct]) -> tuple[str, ...]:
    """The fields of a request body type that hold a contact identifier."""
    return tuple(
        field.name
        for field in msgspec.structs.fields(body_type)
        if ContactIdentifier in (field.type, *getattr(field.type, "__args__", ()))
    )


def otp_identifiers(body: msgspec.Struct) -> int:
    """How many of a request body's contact identifiers are OTPs: the attempts its
    request reserves (runtime.ratelimit.OtpLimits.attempts). On every event request:
    the fields to look at are found once per body type."""
    count = 0
    for name in _identifier_fields(type(body)):
        identifier = getattr(body, name)
        if identifier is not None and identifier.otp is not None:
            count += 1
    return count


def otp_identifiers_in_bulk(items: Sequence[BulkItemIn]) -> int:
    """At least the OTP attempts of a bulk's items, before they are validated: every
    object in an event's fields that has an ``otp``."""
    return sum(
        1
        for item in items
        for value in item.event.values()
        if isinstance(value, dict) and "otp" in value
    )


def identify(
    session: Session, runtime: Runtime, identifier: ContactIdentifier, path: str
) -> Identified:
    """Find the contact; an unknown identifier is a 422 pointing at ``path/<kind>``.
    An OTP uses one of the attempts its request reserved (429 when none is left) and
    stays a miss unless it identifies a contact."""
    kind, value = _kind_and_value(identifier)
    now = runtime.now()
    otp: Otp | None = None
    query = _contact_queries().get(kind)
    if query is None:  # otp
        attempts = otp_attempts()
        attempts.attempt(identifier)
        otp = session.scalars(
            select(Otp).where(
                col(Otp.code) == value, col(Otp.used_at).is_(None), col(Otp.expires_at) > now
            )
        ).first()
        if otp is None:
            raise OtpInvalid(
                "The one-time password is unknown, used or expired.",
                errors=[FieldError(path=f"{path}/otp", message="unknown, used or expired")],
            )
        attempts.identified(identifier)
        query, value = _contact_queries()["contact_id"], otp.contact_id
    contact = session.scalars(query, {"value": value}).first()
    if contact is None:
        raise not_found(kind, value, path)
    return Identified(contact=contact, otp=otp)


def consume_otp(session: Session, identified: Identified, path: str, now: datetime) -> None:
    """Mark the identifying OTP used; a concurrent use of the same OTP loses (422)."""
    if identified.otp is None:
        return
    used = session.exec(
        update(Otp)
        .where(col(Otp.id) == identified.otp.id, col(Otp.used_at).is_(None))
        .values(used_at=now)
    ).rowcount
    if used != 1:
        raise OtpInvalid(
            "The one-time password was used by another request.",
            errors=[FieldError(path=f"{path}/otp", message="already used")],
        )


def not_found(kind: str, value: str, path: str) -> DomainError:
    return ContactNotFound(
        f"No contact with {kind} {value!r}.",
        errors=[FieldError(path=f"{path}/{kind}", message=f"no contact with this {kind}")],
    )


# ---- at driver speed (the purchase fast path) ------------------------------------------


@dataclass(frozen=True)
class ContactRow:
    """What the purchase fast path needs of the identified contact and its wallet."""

    id: str
    segments: list[str]
    spend_blocked: bool
    wallet_id: int
    wallet_code: str


@cache
def _contacts_by(dialect: Dialect, kind: str, count: int) -> DriverStatement:
    """Contact and wallet of ``count`` identifiers of one kind (``:v0`` ... ``:v<n-1>``),
    the identifier first; compiled once per dialect, kind and count."""
    contacts, wallets = table_of(Contact).c, table_of(Wallet).c
    cards, tokens = table_of(GiftCard).c, table_of(PaymentCard).c
    key = {
        "wallet_code": wallets.code,
        "contact_id": contacts.id,
        "contact_code": contacts.code,
        "cim": contacts.cim,
        "gift_card": cards.number,
        "payment_card": tokens.token,
    }[kind]
    statement = select(
        key, contacts.id, contacts.segments, contacts.spend_blocked, wallets.id, wallets.code
    ).join_from(table_of(Contact), table_of(Wallet), wallets.contact_id == contacts.id)
    if kind == "gift_card":
        statement = statement.join(table_of(GiftCard), cards.contact_id == contacts.id)
    elif kind == "payment_card":
        statement = statement.join(table_of(PaymentCard), tokens.contact_id == contacts.id)
    values: list[Any] = [bindparam(f"v{i}") for i in range(count)]
    return DriverStatement(statement.where(key.in_(values)), dialect)


_segments = msgspec.json.Decoder(list[str]).decode


def find_contacts(
    connection: Connection, identifiers: Sequence[ContactIdentifier]
) -> dict[tuple[str, str], ContactRow]:
    """The contacts of identifiers that are not OTPs, in one query per kind, by
    (kind, value); an unknown identifier is missing from the answer."""
    wanted: dict[str, set[str]] = {}
    for identifier in identifiers:
        kind, value = _kind_and_value(identifier)
        if kind != "otp":
            wanted.setdefault(kind, set()).add(value)
    found: dict[tuple[str, str], ContactRow] = {}
    cursor = driver_cursor(connection)
    for kind, values in wanted.items():
        ordered = sorted(values)
        statement = _contacts_by(connection.dialect, kind, len(ordered))
        parameters = {f"v{i}": value for i, value in enumerate(ordered)}
        for key, contact_id, segments, blocked, wallet_id, code in statement.run(
            cursor, parameters
        ).fetchall():
            if isinstance(segments, str | bytes):  # SQLite keeps JSON as text
                segments = _segments(segments)
            found[(kind, key)] = ContactRow(
                id=contact_id,
                segments=segments,
                spend_blocked=bool(blocked),
                wallet_id=wallet_id,
                wallet_code=code,
            )
    return found


def contact_of(
    found: dict[tuple[str, str], ContactRow], identifier: ContactIdentifier, path: str
) -> ContactRow:
    """The identifier's contact in ``find_contacts``' answer; else the 422 of ``identify``."""
    kind, value = _kind_and_value(identifier)
    contact = found.get((kind, value))
    if contact is None:
        raise not_found(kind, value, path)
    return contact
