"""Webhook subscriptions: made through the API (``POST /v1/webhooks``, source ``api``) or
listed in the webhooks file (``REWARDS_WEBHOOKS_FILE``, source ``config``, synced at
start-up), their deliveries, and redelivery. The dispatcher (``notify.dispatcher``)
reads the subscriptions and works the deliveries; here they are only managed.

A subscription's secret is shown once, in the answer that creates it; nothing else ever
returns it. Subscriptions are never edited through the API: delete and create again
(config ones change with the file)."""

from __future__ import annotations

import base64
import binascii
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from sqlalchemy import update
from sqlmodel import Session, col, select

from rewards.db.database import Database
from rewards.db.notify_tables import Delivery, OutboxRow, WebhookSubscription
from rewards.db.pages import decode_cursor, encode_cursor
from rewards.db.types import utcnow
from rewards.errors import ValidationFailed, refusal
from rewards.notify import signing
from rewards.schemas import SchemaRegistry
from rewards.wire import (
    DeliveryOut,
    DeliveryPage,
    DeliveryStatus,
    RedeliveryOut,
    WebhookCreate,
    WebhookCreated,
    WebhookOut,
    WebhookPage,
)

WebhookNotFound = refusal("webhook_not_found", "Webhook subscription not found", 404)
DeliveryNotFound = refusal("delivery_not_found", "Delivery not found for this subscription", 404)
WebhookFromConfig = refusal(
    "webhook_from_config",
    "This subscription comes from the webhooks file (REWARDS_WEBHOOKS_FILE): remove it there",
    409,
)
WebhookFromBroker = refusal(
    "webhook_from_broker",
    "This subscription is the broker's (REWARDS_BROKER_URL): unset the variable instead",
    409,
)
SECRET_BYTES = (24, 64)
SCHEMA = "webhook_create"  # schemas/webhook_create.json: API bodies and file entries alike


class WebhooksFileError(Exception):
    """The webhooks file cannot be used: the service does not start with it."""


def secret_problem(secret: str) -> str | None:
    """Why ``secret`` is not ``whsec_`` and the base64 of 24 to 64 bytes (None: it is).
    The schema's pattern says the same; file entries and the dispatcher's key rely on it."""
    if not secret.startswith(signing.PREFIX):
        return f"must start with {signing.PREFIX}"
    try:
        key = base64.b64decode(secret.removeprefix(signing.PREFIX), validate=True)
    except (binascii.Error, ValueError):
        return f"must be {signing.PREFIX} and base64"
    if not SECRET_BYTES[0] <= len(key) <= SECRET_BYTES[1]:
        return f"the key must be {SECRET_BYTES[0]} to {SECRET_BYTES[1]} bytes, not {len(key)}"
    return None


def shown_url(url: str) -> str:
    """A URL as answers show it: a password in it (a broker's URL may carry one) hidden."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _out(row: WebhookSubscription) -> WebhookOut:
    return WebhookOut(
        id=row.id,
        url=shown_url(row.url),
        event_types=list(row.event_types),
        source=row.source,  # type: ignore[arg-type]
        active=row.active,
        created_at=row.created_at,
        description=row.description,
    )


def _subscription(session: Session, webhook_id: str) -> WebhookSubscription:
    row = session.get(WebhookSubscription, webhook_id)
    if row is None:
        raise WebhookNotFound(f"No webhook subscription with id {webhook_id!r}.")
    return row


# ---- the API's subscriptions ----------------------------------------------------------


def create_subscription(session: Session, body: WebhookCreate) -> WebhookCreated:
    """A new subscription (source ``api``), active at once; its secret is the one given
    or a fresh one, and this answer is the only one that shows it."""
    secret = body.secret if body.secret is not None else signing.new_secret()
    if (problem := secret_problem(secret)) is not None:  # the schema's pattern says it too
        raise ValidationFailed.at("/secret", problem)
    row = WebhookSubscription(
        id=str(uuid.uuid4()),
        url=body.url,
        event_types=list(body.event_types),
        secret=secret,
        source="api",
        description=body.description,
        active=True,
    )
    session.add(row)
    session.flush()
    out = _out(row)
    return WebhookCreated(**{f: getattr(out, f) for f in out.__struct_fields__}, secret=secret)


def list_subscriptions(session: Session, limit: int, cursor: str | None) -> WebhookPage:
    """Every subscription (active or not, of every source), oldest first. Few rows: the
    cursor is a position."""
    start = decode_cursor(cursor) or 0
    rows = session.scalars(
        select(WebhookSubscription)
        .order_by(col(WebhookSubscription.created_at), col(WebhookSubscription.id))
        .offset(start)
        .limit(limit + 1)
    ).all()
    more = len(rows) > limit
    return WebhookPage(
        items=[_out(row) for row in rows[:limit]],
        next_cursor=encode_cursor(start + limit) if more else None,
    )


def get_subscription(session: Session, webhook_id: str) -> WebhookOut:
    return _out(_subscription(session, webhook_id))


def delete_subscription(session: Session, webhook_id: str) -> None:
    """Remove an API subscription with its deliveries (whatever their state: nothing more
    is sent to it). The file's and the broker's are managed where they come from: 409."""
    row = _subscription(session, webhook_id)
    if row.source == "config":
        raise WebhookFromConfig(
            f"Subscription {webhook_id!r} is listed in the webhooks file; remove it from the "
            "file and restart (it is then switched off)."
        )
    if row.source == "broker":
        raise WebhookFromBroker(f"Subscription {webhook_id!r} publishes to the broker.")
    session.execute(
        Delivery.__table__.delete().where(  # type: ignore[attr-defined]
            col(Delivery.subscription_id) == webhook_id
        )
    )
    session.delete(row)
    session.flush()


# ---- deliveries -----------------------------------------------------------------------


def _delivery_out(delivery: Delivery, message: OutboxRow | None) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.id or 0,
        outbox_id=str(delivery.outbox_id),
        type=message.type if message else None,
        contact_id=message.contact_id if message else None,
        status=delivery.status,  # type: ignore[arg-type]
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at,
        first_attempt_at=delivery.first_attempt_at,
        last_attempt_at=delivery.last_attempt_at,
        last_status=delivery.last_status,
        last_error=delivery.last_error,
        delivered_at=delivery.delivered_at,
    )


def _with_messages() -> Any:
    return select(Delivery, OutboxRow).outerjoin(
        OutboxRow,
        col(OutboxRow.id) == col(Delivery.outbox_id),
    )


def list_deliveries(
    session: Session,
    webhook_id: str,
    status: DeliveryStatus | None,
    limit: int,
    cursor: str | None,
) -> DeliveryPage:
    """A subscription's deliveries, newest first (by delivery id), optionally of one
    status."""
    _subscription(session, webhook_id)
    before = decode_cursor(cursor)
    query = _with_messages().where(col(Delivery.subscription_id) == webhook_id)
    if status is not None:
        query = query.where(col(Delivery.status) == status)
    if before is not None:
        query = query.where(col(Delivery.id) < before)
    rows = session.execute(query.order_by(col(Delivery.id).desc()).limit(limit + 1)).all()
    items = [_delivery_out(delivery, message) for delivery, message in rows[:limit]]
    next_cursor = encode_cursor(items[-1].id) if len(rows) > limit else None
    return DeliveryPage(items=items, next_cursor=next_cursor)


def redeliver(
    session: Session, webhook_id: str, delivery_id: int, now: datetime | None = None
) -> DeliveryOut:
    """Send a delivery again: pending, due now, with a fresh retry budget (its attempt
    count and first attempt start again; the last attempt, status, error and
    ``delivered_at`` stay, as what happened). Dead ones and delivered ones alike (a
    receiver that lost a message asks for it again; it dedupes on the id)."""
    _subscription(session, webhook_id)
    found = session.execute(
        _with_messages()
        .where(col(Delivery.id) == delivery_id, col(Delivery.subscription_id) == webhook_id)
        .with_for_update(of=Delivery)
    ).first()
    if found is None:
        raise DeliveryNotFound(f"No delivery {delivery_id} of webhook subscription {webhook_id!r}.")
    delivery, message = found
    delivery.status = "pending"
    delivery.next_attempt_at = now or utcnow()
    delivery.attempts, delivery.first_attempt_at = 0, None
    session.add(delivery)
    session.flush()
    return _delivery_out(delivery, message)


def redeliver_dead(session: Session, webhook_id: str, now: datetime | None = None) -> RedeliveryOut:
    """Every dead delivery of the subscription pending again, due now."""
    _subscription(session, webhook_id)
    result = session.execute(
        update(Delivery)
        .where(col(Delivery.subscription_id) == webhook_id, col(Delivery.status) == "dead")
        .values(
            status="pending", next_attempt_at=now or utcnow(), attempts=0, first_attempt_at=None
        )
    )
    return RedeliveryOut(redelivered=int(getattr(result, "rowcount", 0) or 0))


# ---- the webhooks file ----------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    id: str
    body: WebhookCreate


@dataclass(frozen=True)
class SyncReport:
    created: int
    updated: int
    deactivated: int


_ID_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_ENTRY_KEYS = {"id", "url", "event_types", "secret", "secret_env", "description"}


def _entry(index: int, raw: Any, registry: SchemaRegistry, environ: Mapping[str, str]) -> FileEntry:
    where = f"entry {index + 1}"
    if not isinstance(raw, dict):
        raise WebhooksFileError(f"{where}: not a mapping of id, url, event_types, secret")
    webhook_id = raw.get("id")
    if (
        not isinstance(webhook_id, str)
        or not 1 <= len(webhook_id) <= 36
        or not set(webhook_id) <= _ID_ALPHABET
    ):
        raise WebhooksFileError(f"{where}: id must be 1-36 letters, digits, '.', '_' or '-'")
    where = f"entry {index + 1} ({webhook_id})"
    if unknown := sorted(set(raw) - _ENTRY_KEYS):
        raise WebhooksFileError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}")
    fields = {k: v for k, v in raw.items() if k not in ("id", "secret_env")}
    if "secret_env" in raw:
        if "secret" in raw:
            raise WebhooksFileError(f"{where}: give secret or secret_env, not both")
        name = raw["secret_env"]
        if not isinstance(name, str) or not environ.get(name):
            raise WebhooksFileError(f"{where}: the variable {name!r} of secret_env is not set")
        fields["secret"] = environ[name]
    if "secret" not in fields:
        raise WebhooksFileError(
            f"{where}: a secret is required (secret, or secret_env naming a variable): "
            "the receiver needs it to verify signatures"
        )
    try:
        body = registry.convert(SCHEMA, fields, WebhookCreate)
    except ValidationFailed as error:
        problems = "; ".join(f"{e.path}: {e.message}" for e in error.errors or [])
        raise WebhooksFileError(f"{where}: {problems or error.detail}") from None
    assert body.secret is not None
    if (problem := secret_problem(body.secret)) is not None:
        raise WebhooksFileError(f"{where}: secret {problem}")
    return FileEntry(id=webhook_id, body=body)


def read_webhooks_file(
    path: Path, registry: SchemaRegistry, environ: Mapping[str, str]
) -> list[FileEntry]:
    """The file's subscriptions, each checked as a ``POST /v1/webhooks`` body is (and
    with its ``id``); any fault is a :class:`WebhooksFileError` naming the entry."""
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise WebhooksFileError(f"{path}: {error}") from None
    if loaded is None:
        loaded = []
    if not isinstance(loaded, list):
        raise WebhooksFileError(f"{path}: expected a list of subscriptions")
    try:
        entries = [_entry(i, raw, registry, environ) for i, raw in enumerate(loaded)]
    except WebhooksFileError as error:
        raise WebhooksFileError(f"{path}: {error}") from None
    ids = [entry.id for entry in entries]
    if duplicated := sorted({i for i in ids if ids.count(i) > 1}):
        raise WebhooksFileError(f"{path}: id(s) listed twice: {', '.join(duplicated)}")
    return entries


def sync_webhooks_file(
    database: Database,
    registry: SchemaRegistry,
    path: Path | None,
    environ: Mapping[str, str] | None = None,
) -> SyncReport:
    """Make the table's ``config`` subscriptions what the file says: new ids created,
    changed ones updated (and active again), those no longer listed switched off (their
    delivery history stays). No file (``REWARDS_WEBHOOKS_FILE`` unset): every config
    subscription is switched off. ``secret_env`` names are read from ``environ`` (the
    process environment): the one read of it outside the settings, as only the file
    knows the names."""
    env = os.environ if environ is None else environ
    entries = read_webhooks_file(path, registry, env) if path is not None else []
    created = updated = deactivated = 0
    with database.transaction() as session:
        existing = {
            row.id: row
            for row in session.scalars(
                select(WebhookSubscription).where(
                    col(WebhookSubscription.id).in_([entry.id for entry in entries])
                    | (col(WebhookSubscription.source) == "config")
                )
            )
        }
        for entry in entries:
            body = entry.body
            wanted: dict[str, Any] = {
                "url": body.url,
                "event_types": list(body.event_types),
                "secret": body.secret,
                "description": body.description,
                "active": True,
            }
            row = existing.get(entry.id)
            if row is None:
                session.add(WebhookSubscription(id=entry.id, source="config", **wanted))
                created += 1
                continue
            if row.source != "config":
                raise WebhooksFileError(
                    f"{path}: id {entry.id!r} is taken by a subscription of source {row.source}"
                )
            if any(getattr(row, name) != value for name, value in wanted.items()):
                for name, value in wanted.items():
                    setattr(row, name, value)
                session.add(row)
                updated += 1
        listed = {entry.id for entry in entries}
        for row in existing.values():
            if row.source == "config" and row.id not in listed and row.active:
                row.active = False
                session.add(row)
                deactivated += 1
    return SyncReport(created=created, updated=updated, deactivated=deactivated)
