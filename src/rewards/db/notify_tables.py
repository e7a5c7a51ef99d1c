"""Notifications out (the transactional outbox and its deliveries).

``outbox``: one row per notification, written in the transaction of the change it tells
(an award, a spend, a reversal, a cancellation, a run, a reload...), so nothing is told
that was not committed and nothing committed is lost. ``webhook_subscriptions``: where
notifications go (an HTTP endpoint, or the broker). ``deliveries``: one row per
(subscription, outbox row) with its attempts, made by the dispatcher's fan-out.
``dispatch_lease``: which process dispatches (one at a time across workers and machines).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from rewards.db.types import BigIntPK, UTCDateTime, utcnow


class OutboxRow(SQLModel, table=True):
    """A notification as committed. ``id`` orders one contact's notifications in commit
    order: every writer locks the contact's wallet row before its outbox rows (the ledger
    does), so two transactions of one contact cannot interleave. ``payload`` is the JSON
    of the message's ``data``, encoded once."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_fanned_out_id", "fanned_out", "id"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    type: str = Field(max_length=64)
    contact_id: str | None = Field(default=None, max_length=36)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    fanned_out: bool = Field(default=False)


class WebhookSubscription(SQLModel, table=True):
    """An endpoint and the notification types it wants (``["*"]``: all). ``source``: api
    (``POST /v1/webhooks``), config (the subscriptions file) or broker (the
    ``REWARDS_BROKER_URL`` publisher, which shares ordering and retries with webhooks)."""

    __tablename__ = "webhook_subscriptions"

    id: str = Field(primary_key=True, max_length=36)
    url: str = Field(max_length=2000)
    event_types: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    secret: str = Field(max_length=200)
    source: str = Field(default="api", max_length=16)
    description: str | None = Field(default=None, max_length=200)
    active: bool = Field(default=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Delivery(SQLModel, table=True):
    """One notification to one subscription. ``status``: pending, delivered or dead (its
    attempts ran out; ``POST .../redeliver`` makes it pending again). Per subscription,
    a contact's deliveries go out one at a time in outbox order (``contact_key``: the
    contact, or "" for notifications of no contact)."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("subscription_id", "outbox_id", name="uq_deliveries_subscription_outbox"),
        Index("ix_deliveries_chain", "subscription_id", "contact_key", "status", "outbox_id"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    subscription_id: str = Field(max_length=36)
    outbox_id: int = Field(sa_type=BigInteger)
    contact_key: str = Field(default="", max_length=36)
    status: str = Field(default="pending", max_length=12)
    attempts: int = Field(default=0)
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    first_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_status: int | None = Field(default=None)
    last_error: str | None = Field(default=None, max_length=500)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class DispatchLease(SQLModel, table=True):
    """The dispatcher's lease: whoever holds an unexpired one dispatches; ``fencing``
    grows at every change of holder."""

    __tablename__ = "dispatch_lease"

    name: str = Field(primary_key=True, max_length=64)
    holder: str | None = Field(default=None, max_length=128)
    expires_at: float = Field(default=0.0)
    fencing: int = Field(default=0, sa_type=BigInteger)
