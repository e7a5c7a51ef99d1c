"""Where the dispatcher sends a message: a :class:`Sink` per subscription kind (an HTTP
endpoint: ``notify.webhooks``; a broker: ``notify.brokers``). A sink sends one message and
says how it went; the dispatcher decides what happens next (retry, dead-letter)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import msgspec


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """One notification for one subscription. ``body`` is the envelope's JSON
    (``wire.Notification``), the exact bytes to send (and to sign)."""

    id: str  # the outbox row's id: the idempotency key receivers dedupe on
    type: str
    contact_id: str | None
    created_at: datetime
    body: bytes
    attempt: int  # 1 for the first attempt


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """How an attempt went. ``delivered``: the receiver has it (2xx, a broker's ack).
    Otherwise ``retry_after`` (seconds the receiver asked to wait, if it did), ``gone``
    (it will never take it: HTTP 410; the subscription is switched off)."""

    delivered: bool
    status: int | None = None  # HTTP status, when there was one
    error: str | None = None  # what went wrong, short, for GET .../deliveries
    retry_after: float | None = None
    gone: bool = False


class Sink(Protocol):
    async def send(self, message: Message) -> Outcome: ...

    async def close(self) -> None: ...
