"""The dispatcher: carries the outbox to every active subscription, at least once, in
commit order per (subscription, contact), each message with the outbox row's id as its
idempotency key.

One tick: (1) fan out: outbox rows not yet fanned out become one ``deliveries`` row per
subscription that wants their type, in the same transaction as the flag (a row committed
late, with a smaller id than rows already dispatched, is still picked up: there is no
cursor to skip it); (2) take the due heads: a pending delivery is only sent when no
earlier one of the same subscription and contact is pending, so a receiver failing for
one contact holds back that contact's later messages only (a dead-lettered delivery no
longer holds anything back: order is kept up to a dead letter, which can be redelivered);
(3) send them concurrently; (4) record each outcome (delivered; or a retry at a time of the
backoff; or dead). Only the holder of the lease (``notify.lease``) ticks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import msgspec
from sqlalchemy import and_, bindparam, delete, exists, select, tuple_, update
from sqlalchemy.orm import aliased

from rewards.db.bulk import BulkInsert
from rewards.db.database import Database
from rewards.db.notify_tables import Delivery, OutboxRow, WebhookSubscription
from rewards.db.types import table_of, utcnow
from rewards.notify.backoff import Backoff
from rewards.notify.lease import Lease
from rewards.notify.sinks import Message, Outcome, Sink
from rewards.notify.webhooks import WebhookSink
from rewards.settings import Settings, parse_broker_url

log = logging.getLogger("rewards.notify")
BROKER_SUBSCRIPTION = "broker"
KEEP = timedelta(days=7)
NICENESS = 19  # of the dispatcher's thread in rewards serve  # delivered deliveries and their outbox rows are pruned after this


class _Envelope(msgspec.Struct, omit_defaults=True):
    """``wire.Notification`` as sent: ``data`` is the outbox's JSON, not re-encoded."""

    id: str
    type: str
    timestamp: datetime
    data: msgspec.Raw
    contact_id: str | None = None


_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class Due:
    """A delivery to attempt now, and its message."""

    delivery_id: int
    subscription_id: str
    attempts: int
    first_attempt_at: datetime | None
    due_at: datetime
    message: Message


def wants(event_types: Sequence[str], notification_type: str) -> bool:
    return "*" in event_types or notification_type in event_types


def envelope(
    outbox_id: int, type_: str, contact_id: str | None, payload: str, at: datetime
) -> bytes:
    return _encode(
        _Envelope(
            id=str(outbox_id),
            type=type_,
            timestamp=at,
            data=msgspec.Raw(payload.encode()),
            contact_id=contact_id,
        )
    )


class Dispatcher:
    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        now: Callable[[], datetime] = utcnow,
        rng: Callable[[], float] = random.random,
        batch: int = 500,
        chain: int = 50,
        concurrency: int = 32,
        poll_seconds: float = 0.2,
        share: float = 1.0,
    ) -> None:
        self.database = database
        self.settings = settings
        self.now = now
        self.rng = rng
        self.batch = batch
        self.chain = chain
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        # The part of the time it may be busy: 1 alone (rewards dispatch); beside the
        # workers of rewards serve, what the setting gives, so a backlog after a burst of
        # intake is carried off without taking the database from the intake.
        self.share = share
        self.backoff = Backoff(
            settings.webhook_retry_base_seconds,
            settings.webhook_retry_cap_seconds,
            settings.webhook_max_attempts,
            settings.webhook_give_up_seconds,
        )
        self.lease = Lease(database, ttl=settings.dispatch_lease_seconds)
        self._client: httpx.AsyncClient | None = None
        self._sinks: dict[str, tuple[str, Sink]] = {}  # subscription -> (url, sink)
        self._deliveries = BulkInsert(
            database.write_engine.dialect,
            table_of(Delivery),
            (
                "subscription_id",
                "outbox_id",
                "contact_key",
                "status",
                "attempts",
                "next_attempt_at",
            ),
        )
        self._last_prune = now()

    # ---- the database side (blocking; run on a worker thread) ---------------------------

    def ensure_broker_subscription(self) -> None:
        """The broker, when configured, is a subscription to every type (so it shares
        ordering, retries and dead letters with webhooks); otherwise it is switched off."""
        url = self.settings.broker_url
        with self.database.transaction() as session:
            row = session.get(WebhookSubscription, BROKER_SUBSCRIPTION)
            if url is None:
                if row is not None and row.active:
                    row.active = False
                    session.add(row)
                return
            shown = parse_broker_url(url).shown  # no credentials in the table
            if row is None:
                row = WebhookSubscription(
                    id=BROKER_SUBSCRIPTION,
                    url=shown,
                    event_types=["*"],
                    secret="",
                    source="broker",
                    description="REWARDS_BROKER_URL",
                )
            row.url, row.active = shown, True
            session.add(row)

    def fan_out(self) -> int:
        """Outbox rows not yet fanned out -> deliveries; the number of outbox rows."""
        outbox = table_of(OutboxRow).c
        subscriptions = table_of(WebhookSubscription).c
        with self.database.transaction() as session:
            rows = session.execute(
                select(outbox.id, outbox.type, outbox.contact_id)
                .where(outbox.fanned_out.is_(False))
                .order_by(outbox.id)
                .limit(self.batch)
            ).all()
            if not rows:
                return 0
            wanting = session.execute(
                select(subscriptions.id, subscriptions.event_types).where(
                    subscriptions.active.is_(True)
                )
            ).all()
            now = self.now()
            self._deliveries.run(
                session,
                [
                    (sub_id, row_id, contact_id or "", "pending", 0, now)
                    for row_id, type_, contact_id in rows
                    for sub_id, types in wanting
                    if wants(types, type_)
                ],
            )
            ids = [row[0] for row in rows]
            session.execute(
                update(table_of(OutboxRow)).where(outbox.id.in_(ids)).values(fanned_out=True)
            )
            return len(rows)

    def due(self) -> list[list[Due]]:
        """Chains to send now, each in outbox order: up to ``batch`` chains whose head (the
        first pending delivery of a subscription and contact) is due, each with up to
        ``chain`` of its pending deliveries (sent one after the other, stopping at the
        first failure)."""
        d = table_of(Delivery).c
        earlier = aliased(table_of(Delivery))
        blocked = exists().where(
            earlier.c.subscription_id == d.subscription_id,
            earlier.c.contact_key == d.contact_key,
            earlier.c.status == "pending",
            earlier.c.outbox_id < d.outbox_id,
        )
        s = table_of(WebhookSubscription).c
        heads = (
            select(d.subscription_id, d.contact_key)
            .join(
                table_of(WebhookSubscription), and_(s.id == d.subscription_id, s.active.is_(True))
            )
            .where(d.status == "pending", d.next_attempt_at <= self.now(), ~blocked)
            .order_by(d.outbox_id)
            .limit(self.batch)
        )
        o = table_of(OutboxRow).c
        with self.database.transaction(write=False) as session:
            pairs = [tuple(row) for row in session.execute(heads).all()]
            if not pairs:
                return []
            rows = session.execute(
                select(
                    d.id,
                    d.subscription_id,
                    d.contact_key,
                    d.attempts,
                    d.first_attempt_at,
                    d.next_attempt_at,
                    d.outbox_id,
                    o.type,
                    o.contact_id,
                    o.payload,
                    o.created_at,
                )
                .join(table_of(OutboxRow), o.id == d.outbox_id)
                .where(d.status == "pending", tuple_(d.subscription_id, d.contact_key).in_(pairs))
                .order_by(d.outbox_id)
            ).all()
        chains: dict[tuple[str, str], list[Due]] = {pair: [] for pair in pairs}
        for row in rows:
            chain = chains[(row.subscription_id, row.contact_key)]
            if len(chain) < self.chain:
                chain.append(
                    Due(
                        delivery_id=row.id,
                        subscription_id=row.subscription_id,
                        attempts=row.attempts,
                        first_attempt_at=row.first_attempt_at,
                        due_at=row.next_attempt_at,
                        message=Message(
                            id=str(row.outbox_id),
                            type=row.type,
                            contact_id=row.contact_id,
                            created_at=row.created_at,
                            body=envelope(
                                row.outbox_id,
                                row.type,
                                row.contact_id,
                                row.payload,
                                row.created_at,
                            ),
                            attempt=row.attempts + 1,
                        ),
                    )
                )
        return [chain for chain in chains.values() if chain]

    def record(self, results: Sequence[tuple[Due, Outcome, datetime]]) -> None:
        """Each attempt's outcome, in one transaction."""
        d = table_of(Delivery).c
        delivered, failed, gone = [], [], set()
        for due, outcome, at in results:
            first = due.first_attempt_at or at
            attempts = due.attempts + 1
            common = {"key": due.delivery_id, "attempts": attempts, "first": first, "at": at,
                      "status_code": outcome.status, "error": outcome.error}  # fmt: skip
            if outcome.delivered:
                delivered.append(common)
                continue
            if outcome.gone:
                gone.add(due.subscription_id)
            dead = outcome.gone or self.backoff.exhausted(attempts, (at - first).total_seconds())
            wait = self.backoff.delay(attempts, self.rng, outcome.retry_after)
            failed.append(
                common
                | {"state": "dead" if dead else "pending", "next": at + timedelta(seconds=wait)}
            )
        table = table_of(Delivery)
        with self.database.transaction() as session:
            if delivered:
                session.execute(
                    update(table)
                    .where(d.id == bindparam("key"))
                    .values(
                        status="delivered",
                        attempts=bindparam("attempts"),
                        first_attempt_at=bindparam("first"),
                        last_attempt_at=bindparam("at"),
                        delivered_at=bindparam("at"),
                        last_status=bindparam("status_code"),
                        last_error=None,
                    ),
                    delivered,
                    execution_options={"synchronize_session": False},
                )
            if failed:
                session.execute(
                    update(table)
                    .where(d.id == bindparam("key"))
                    .values(
                        status=bindparam("state"),
                        attempts=bindparam("attempts"),
                        first_attempt_at=bindparam("first"),
                        last_attempt_at=bindparam("at"),
                        next_attempt_at=bindparam("next"),
                        last_status=bindparam("status_code"),
                        last_error=bindparam("error"),
                    ),
                    failed,
                    execution_options={"synchronize_session": False},
                )
            for subscription_id in gone:
                log.warning("webhook %s answered 410 Gone: switched off", subscription_id)
                session.execute(
                    update(table_of(WebhookSubscription))
                    .where(table_of(WebhookSubscription).c.id == subscription_id)
                    .values(active=False)
                )

    def prune(self) -> None:
        """Delivered deliveries older than ``KEEP``, and outbox rows whose deliveries are
        all gone (dead ones stay, to be looked at and redelivered)."""
        before = self.now() - KEEP
        d = table_of(Delivery).c
        o = table_of(OutboxRow).c
        with self.database.transaction() as session:
            session.execute(
                delete(table_of(Delivery)).where(d.status == "delivered", d.delivered_at < before)
            )
            session.execute(
                delete(table_of(OutboxRow)).where(
                    o.fanned_out.is_(True),
                    o.created_at < before,
                    ~exists().where(d.outbox_id == o.id),
                )
            )

    # ---- sending ------------------------------------------------------------------------

    def _sink(self, subscription: WebhookSubscription) -> Sink:
        known = self._sinks.get(subscription.id)
        if known is not None and known[0] == f"{subscription.url}|{subscription.secret}":
            return known[1]
        sink: Sink
        if subscription.source == "broker" and self.settings.broker_url:
            from rewards.notify.brokers import broker_sink  # only with a broker configured

            sink = broker_sink(self.settings.broker_url)
        else:
            if self._client is None:
                self._client = httpx.AsyncClient(
                    timeout=self.settings.webhook_timeout_seconds,
                    limits=httpx.Limits(max_connections=self.concurrency),
                )
            sink = WebhookSink(subscription.url, subscription.secret, self._client)
        self._sinks[subscription.id] = (f"{subscription.url}|{subscription.secret}", sink)
        return sink

    def _subscriptions(self, ids: set[str]) -> dict[str, WebhookSubscription]:
        with self.database.transaction(write=False) as session:
            rows = session.scalars(
                select(WebhookSubscription).where(table_of(WebhookSubscription).c.id.in_(list(ids)))
            ).all()
            for row in rows:
                session.expunge(row)
        return {row.id: row for row in rows}

    async def tick(self) -> int:
        """One round; the number of attempts made."""
        await asyncio.to_thread(self.fan_out)
        chains = await asyncio.to_thread(self.due)
        if not chains:
            if self.now() - self._last_prune > timedelta(minutes=10):
                self._last_prune = self.now()
                await asyncio.to_thread(self.prune)
            return 0
        subscriptions = await asyncio.to_thread(
            self._subscriptions, {chain[0].subscription_id for chain in chains}
        )
        gate = asyncio.Semaphore(self.concurrency)
        results: list[tuple[Due, Outcome, datetime]] = []

        async def send_chain(chain: list[Due]) -> None:
            async with gate:
                sink = self._sink(subscriptions[chain[0].subscription_id])
                for item in chain:  # in order; the next only once this one is delivered
                    if item.due_at > self.now():
                        return
                    try:
                        outcome = await sink.send(item.message)
                    except Exception as error:  # a sink must not stop the dispatcher
                        log.exception("sink of %s failed", item.subscription_id)
                        outcome = Outcome(delivered=False, error=type(error).__name__)
                    results.append((item, outcome, self.now()))
                    if not outcome.delivered:
                        return

        await asyncio.gather(*(send_chain(chain) for chain in chains))
        await asyncio.to_thread(self.record, results)
        return len(results)

    async def run(self, stop: threading.Event) -> None:
        """Tick while holding the lease, until ``stop`` is set."""
        await asyncio.to_thread(self.ensure_broker_subscription)
        try:
            while not stop.is_set():
                if not self.lease.held() and not await asyncio.to_thread(self.lease.acquire):
                    await asyncio.sleep(1.0)
                    continue
                started = time.monotonic()
                try:
                    made = await self.tick()
                except Exception:
                    log.exception("dispatcher tick failed; trying again")
                    made = 0
                    await asyncio.sleep(1.0)
                if made == 0:
                    await asyncio.sleep(self.poll_seconds)
                elif self.share < 1.0:  # rest in proportion: busy ``share`` of the time
                    await asyncio.sleep(
                        (time.monotonic() - started) * (1 - self.share) / self.share
                    )
        finally:
            await self.close()
            await asyncio.to_thread(self.lease.release)

    async def close(self) -> None:
        for _, sink in self._sinks.values():
            await sink.close()
        self._sinks.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def run_in_thread(
    database: Database, settings: Settings
) -> tuple[threading.Thread, threading.Event]:
    """The dispatcher on a thread of its own (``rewards serve``'s supervisor); set the
    event to stop it."""
    stop = threading.Event()

    def main() -> None:
        # Intake first: the workers take the machine's cores while requests come in, and
        # the dispatcher (this thread alone) takes what they leave, catching up when
        # they are idle. Linux niceness is per thread.
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)
        dispatcher = Dispatcher(database, settings, share=settings.dispatch_share)
        asyncio.run(dispatcher.run(stop))

    thread = threading.Thread(target=main, name="rewards-dispatcher", daemon=True)
    thread.start()
    return thread, stop
