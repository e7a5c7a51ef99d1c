"""Where ``rewards consume`` reads from: a durable pull consumer on a JetStream stream or
a RabbitMQ queue, shared by every ``rewards consume`` process (competing consumers: each
message goes to one of them). Each message becomes a :class:`Delivery` the runner
settles: ``ack`` after the commit, ``dead_letter`` when refused, ``retry`` otherwise.

Dead letters keep the original body, byte for byte (fixed, it can be published again as
it is), with the RFC 9457 problem details in a header: ``Rewards-Problem`` (NATS) or
``rewards-problem`` (RabbitMQ), beside the event type and where the message came from.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import aio_pika
import nats
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType

from rewards.consume.handling import Refused
from rewards.notify.brokers import DUPLICATE_WINDOW, ensure_stream
from rewards.settings import BrokerAddress

log = logging.getLogger("rewards.consume")

MAX_ACK_PENDING = 10_000  # messages delivered and not yet acknowledged, all processes
PUBLISH_TIMEOUT = 10.0


class Delivery(Protocol):
    event_type: str | None
    body: bytes
    deliveries: int  # 1 the first time

    async def ack(self) -> None: ...

    async def dead_letter(self, refused: Refused) -> None: ...

    async def retry(self, delay: float) -> None: ...


Process = Callable[["Delivery"], Coroutine[Any, Any, None]]


# ---- NATS JetStream --------------------------------------------------------------------


class NatsDelivery:
    def __init__(self, message: Any, js: Any, address: BrokerAddress) -> None:
        self.message = message
        self.js = js
        self.address = address
        prefix = f"{address.prefix}.in."
        subject: str = message.subject
        self.event_type = subject.removeprefix(prefix) if subject.startswith(prefix) else None
        self.body: bytes = message.data
        self.deliveries: int = message.metadata.num_delivered or 1

    async def ack(self) -> None:
        await self.message.ack()

    async def dead_letter(self, refused: Refused) -> None:
        meta = self.message.metadata
        headers = {
            "Nats-Msg-Id": f"dlq-{meta.stream}-{meta.sequence.stream}",
            "Content-Type": "application/json",
            "Rewards-Problem": refused.json.decode(),
            "Rewards-Subject": self.message.subject,
            "Rewards-Stream-Sequence": str(meta.sequence.stream),
        }
        if self.event_type:
            headers["Rewards-Event-Type"] = self.event_type
        await self.js.publish(
            self.address.dlq_subject,
            self.body,
            timeout=PUBLISH_TIMEOUT,
            stream=self.address.dlq_stream,
            headers=headers,
        )
        await self.message.term()  # never delivered again

    async def retry(self, delay: float) -> None:
        await self.message.nak(delay=delay)


async def consume_nats(
    address: BrokerAddress,
    process: Process,
    *,
    batch: int,
    concurrency: int,
    stop: asyncio.Event,
    ready: Callable[[], None],
) -> None:
    async def quiet(error: Exception) -> None:
        log.warning("nats: %s", error)

    client = await nats.connect(
        address.url,
        name=f"rewards-consume-{os.getpid()}",
        connect_timeout=5,
        max_reconnect_attempts=-1,  # reconnect for as long as it takes
        reconnect_time_wait=2,
        error_cb=quiet,
    )
    try:
        js = client.jetstream(timeout=PUBLISH_TIMEOUT)
        # A work queue: a message is gone once acknowledged (or terminated).
        await ensure_stream(
            js,
            address.intake_stream,
            [address.intake_subjects],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW,
        )
        await ensure_stream(
            js,
            address.dlq_stream,
            [f"{address.prefix}.dlq.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW,
        )
        # Created or updated first: pull_subscribe ignores the config of a durable that
        # exists. Every process binds to the same durable: competing consumers.
        await js.add_consumer(
            address.intake_stream,
            ConsumerConfig(
                durable_name=address.durable,
                filter_subject=address.intake_subjects,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=address.ack_wait,
                max_deliver=-1,
                max_ack_pending=MAX_ACK_PENDING,
            ),
        )
        subscription = await js.pull_subscribe_bind(
            durable=address.durable, stream=address.intake_stream
        )
        ready()
        tasks: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            if len(tasks) >= concurrency:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                messages = await subscription.fetch(min(batch, concurrency - len(tasks)), timeout=1)
            except (nats.errors.TimeoutError, TimeoutError):
                continue  # nothing to read for now
            except Exception as error:  # reconnecting: try again shortly
                log.warning("fetching from %s failed: %s", address.intake_stream, error)
                await asyncio.sleep(1)
                continue
            for message in messages:
                task = asyncio.create_task(process(NatsDelivery(message, js, address)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        if tasks:  # settle what was taken; what is not acked comes back after address.ack_wait
            await asyncio.wait(tasks, timeout=30)
        await subscription.unsubscribe()
    finally:
        await client.close()


# ---- RabbitMQ --------------------------------------------------------------------------


class AmqpDelivery:
    def __init__(self, message: Any, channel: Any, address: BrokerAddress) -> None:
        self.message = message
        self.channel = channel
        self.address = address
        key: str = message.routing_key or ""
        self.event_type = message.type or (
            key.removeprefix("in.") if key.startswith("in.") else None
        )
        self.body: bytes = message.body
        count = (message.headers or {}).get("x-delivery-count", 0)  # quorum queues
        self.deliveries = (int(count) if isinstance(count, int) else 0) + 1

    async def ack(self) -> None:
        await self.message.ack()

    async def dead_letter(self, refused: Refused) -> None:
        headers = {
            "rewards-problem": refused.json.decode(),
            "rewards-routing-key": self.message.routing_key or "",
            "rewards-exchange": self.message.exchange or "",
        }
        if self.event_type:
            headers["rewards-event-type"] = self.event_type
        await self.channel.default_exchange.publish(
            aio_pika.Message(
                self.body,
                content_type=self.message.content_type or "application/json",
                message_id=self.message.message_id,
                type=self.event_type,
                headers=headers,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=self.address.dlq_queue,
            timeout=PUBLISH_TIMEOUT,
        )
        await self.message.ack()

    async def retry(self, delay: float) -> None:
        # RabbitMQ has no delayed requeue: the message waits here (holding a prefetch
        # slot, so a process whose every try fails slows down) and then goes back.
        await asyncio.sleep(delay)
        await self.message.nack(requeue=True)


async def consume_amqp(
    address: BrokerAddress,
    process: Process,
    *,
    batch: int,
    concurrency: int,
    stop: asyncio.Event,
    ready: Callable[[], None],
) -> None:
    del batch  # RabbitMQ pushes: at most ``concurrency`` messages unacknowledged (prefetch)
    connection = await aio_pika.connect_robust(
        address.url, client_properties={"connection_name": f"rewards-consume-{os.getpid()}"}
    )
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await channel.set_qos(prefetch_count=concurrency)
        exchange = await channel.declare_exchange(
            address.intake_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        quorum = {"x-queue-type": "quorum"}
        queue = await channel.declare_queue(address.intake_queue, durable=True, arguments=quorum)
        await queue.bind(exchange, routing_key="in.*")
        await channel.declare_queue(address.dlq_queue, durable=True, arguments=quorum)
        tasks: set[asyncio.Task[None]] = set()

        async def on_message(message: Any) -> None:
            task = asyncio.create_task(process(AmqpDelivery(message, channel, address)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        tag = await queue.consume(on_message)
        ready()
        await stop.wait()
        await queue.cancel(tag)
        if tasks:
            await asyncio.wait(tasks, timeout=30)
    finally:
        await connection.close()
