"""Tables of evaluation runs (issue 5). Imported by rewards.db.tables so they share its
metadata (migrations, tests).

- ``evaluation_runs``: one row per run; ``running_lock`` is 1 while the run is running
  and NULL afterwards, and is unique, so at most one run is running at any time (NULLs
  never collide, on SQLite and PostgreSQL alike).
- ``evaluation_run_partitions``: the contact-hash partitions of a run that workers claim
  (``FOR UPDATE SKIP LOCKED`` on PostgreSQL); a single worker claims them one by one.
- ``evaluation_run_offers``: awards and amount per offer of a run (the summary table).
- ``evaluated_events``: one row per event a run evaluated (the per-event offers, once
  per event, committed with the event's awards). It also keeps the event's business-time
  fields (calendar day, week, weekday, minute of the day, in the definition's time zone
  when evaluated) so period aggregates group and filter in SQL on both databases.
- ``aggregate_pending``: the (contact, period) pairs the aggregate offers still have to
  look at, with a count of the cancellations that touched each since (``changed``).
- ``aggregate_awards`` and ``aggregate_award_events``: a period-aggregate award and the
  purchases that made it up (one link per (event, offer) while the award stands: a
  purchase contributes to at most one award of an offer).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Index, PrimaryKeyConstraint, SmallInteger, text
from sqlmodel import Field, SQLModel

from rewards.db.types import BigIntPK, UTCDateTime, utcnow


class EvaluationRun(SQLModel, table=True):
    __tablename__ = "evaluation_runs"

    id: str = Field(primary_key=True, max_length=36)
    status: str = Field(default="running", max_length=16)  # running | finished | failed
    running_lock: int | None = Field(default=None, unique=True)  # 1 while running
    source: str = Field(default="api", max_length=16)  # api | cli | schedule | console | test
    as_of: datetime = Field(sa_type=UTCDateTime)
    ruleset_version: str = Field(max_length=64)
    partitions: int = Field(default=1)
    started_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    heartbeat_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    events_total: int = Field(default=0, sa_type=BigInteger)  # pending when the run started
    events_evaluated: int = Field(default=0, sa_type=BigInteger)
    aggregate_groups: int = Field(default=0, sa_type=BigInteger)  # (contact, period) in range
    awards: int = Field(default=0, sa_type=BigInteger)
    total_awarded_cents: int = Field(default=0, sa_type=BigInteger)
    chunks: int = Field(default=0, sa_type=BigInteger)
    error: str | None = Field(default=None, max_length=1000)


class RunPartition(SQLModel, table=True):
    __tablename__ = "evaluation_run_partitions"

    run_id: str = Field(primary_key=True, foreign_key="evaluation_runs.id", max_length=36)
    partition: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    state: str = Field(default="pending", max_length=16)  # pending | running | done
    worker: str | None = Field(default=None, max_length=100)
    heartbeat_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    events_evaluated: int = Field(default=0, sa_type=BigInteger)


class RunOfferTotal(SQLModel, table=True):
    __tablename__ = "evaluation_run_offers"

    run_id: str = Field(primary_key=True, foreign_key="evaluation_runs.id", max_length=36)
    offer_id: str = Field(primary_key=True, max_length=100)
    awards: int = Field(default=0, sa_type=BigInteger)
    total_cents: int = Field(default=0, sa_type=BigInteger)


class EvaluatedEvent(SQLModel, table=True):
    __tablename__ = "evaluated_events"

    event_number: int = Field(
        sa_column=Column(BigIntPK, primary_key=True, autoincrement=False)
    )  # events.number
    run_id: str = Field(max_length=36)
    contact_id: str = Field(max_length=36)
    local_day: int  # YYYYMMDD in the business time zone
    local_week: int  # YYYYMMDD of the Monday of that week
    weekday: int = Field(sa_type=SmallInteger)  # 0 = Monday
    minute: int = Field(sa_type=SmallInteger)  # minute of the day


class AggregatePending(SQLModel, table=True):
    """A contact's calendar period the aggregate offers still have to look at: a purchase
    in it was evaluated, or an aggregate award over it was reversed. ``changed`` counts
    the cancellations that touched it while pending: a run that decided the period
    outside its write transaction writes only if the count did not move. Keyed by the
    period first (migration 0007): a run aggregates one period at a time, for all its
    contacts, and marks the periods of its purchases in time order."""

    __tablename__ = "aggregate_pending"
    __table_args__ = (PrimaryKeyConstraint("period", "period_key", "contact_id"),)

    contact_id: str = Field(primary_key=True, max_length=36)
    period: str = Field(primary_key=True, max_length=8)  # day | week | month | year
    period_key: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    changed: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class AggregateAward(SQLModel, table=True):
    __tablename__ = "aggregate_awards"
    __table_args__ = (
        Index("ix_aggregate_awards_contact_offer", "contact_id", "offer_id", "period_key"),
        # The few reversed ones, by offer: carriers a new award of the offer cannot use.
        Index(
            "ix_aggregate_awards_reversed",
            "offer_id",
            "contact_id",
            sqlite_where=text("reversed_at IS NOT NULL"),
            postgresql_where=text("reversed_at IS NOT NULL"),
        ),
    )

    award_id: str = Field(primary_key=True, foreign_key="awards.id", max_length=36)
    run_id: str = Field(max_length=36)
    offer_id: str = Field(max_length=100)
    contact_id: str = Field(max_length=36)
    period: str = Field(max_length=8)  # day | week | month | year
    period_key: int  # YYYYMMDD (day, week's Monday), YYYYMM (month) or YYYY (year)
    total_amount_cents: int = Field(sa_type=BigInteger)
    event_count: int
    quantity_milli: int = Field(default=0, sa_type=BigInteger)
    reversed_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    reversed_by_event_id: str | None = Field(default=None, max_length=36)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AggregateLink(SQLModel, table=True):
    """A purchase that made up a standing aggregate award (deleted when it is reversed)."""

    __tablename__ = "aggregate_award_events"

    event_number: int = Field(
        sa_column=Column(BigInteger, primary_key=True, autoincrement=False)
    )  # events.number
    offer_id: str = Field(primary_key=True, max_length=100)
    award_id: str = Field(index=True, max_length=36)
