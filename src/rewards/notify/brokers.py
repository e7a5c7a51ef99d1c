"""The broker sink: each notification published to NATS JetStream or RabbitMQ, and
delivered once the broker says it has stored it (JetStream's PubAck, RabbitMQ's publisher
confirm). Names come from ``settings.BrokerAddress`` (``?prefix=``, default ``rewards``).

- NATS: subject ``rewards.<type>`` in stream ``REWARDS`` (created when missing, its
  subjects added when an operator's stream lacks some; nothing else of an existing
  stream is changed), headers ``Nats-Msg-Id: rewards-<id>`` (JetStream drops a second
  publish of one id within the stream's duplicate window: a PubAck with ``duplicate``,
  which is delivered too) and ``Content-Type: application/json``.
- RabbitMQ: the durable topic exchange ``rewards``, routing key ``<type>``, a persistent
  message with ``message_id`` = the outbox id, ``type`` and ``content_type``, on a
  channel with publisher confirms whose unroutable messages raise. The durable quorum
  queue ``rewards.notifications``, bound with ``#``, keeps every message even before any
  consumer exists (``?queue=`` declares none: then a message no queue takes is refused
  as unroutable and retried).

The sink connects on its first message and again after a failure; a failure is an
``Outcome(delivered=False)`` for the dispatcher to retry, never an exception.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aio_pika
import nats
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NoStreamResponseError, NotFoundError
from pamqp.commands import Basic

from rewards.notify.sinks import Message, Outcome, Sink
from rewards.settings import BrokerAddress, parse_broker_url
from rewards.wire import NOTIFICATION_TYPES

log = logging.getLogger("rewards.notify")

PUBLISH_TIMEOUT = 10.0  # seconds for the broker's ack or confirm
CONNECT_TIMEOUT = 5.0
DUPLICATE_WINDOW = 3600.0  # JetStream drops a repeated Nats-Msg-Id within this (new streams)
MAX_AGE = 7 * 86400.0  # notifications kept in a new REWARDS stream


def broker_sink(url: str) -> Sink:
    """The sink of the broker subscription (``REWARDS_BROKER_URL``)."""
    address = parse_broker_url(url)
    return NatsSink(address) if address.kind == "nats" else AmqpSink(address)


def _failed(error: BaseException) -> Outcome:
    text = str(error).strip() or "no detail"
    return Outcome(delivered=False, error=f"{type(error).__name__}: {text}"[:300])


async def ensure_stream(js: Any, name: str, subjects: list[str], **config: Any) -> None:
    """Stream ``name`` capturing ``subjects``: created with ``config`` when missing; an
    existing one gets the subjects it lacks and keeps the rest of its configuration
    (retention, limits an operator set). Safe to run by several processes at once."""
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        try:
            await js.add_stream(StreamConfig(name=name, subjects=subjects, **config))
            return
        except BadRequestError as error:  # another process created it meanwhile
            if error.err_code != 10058:  # "stream name already in use"
                raise
            info = await js.stream_info(name)
    missing = [s for s in subjects if s not in (info.config.subjects or [])]
    if missing:
        info.config.subjects = [*(info.config.subjects or []), *missing]
        await js.update_stream(info.config)


class NatsSink:
    def __init__(self, address: BrokerAddress) -> None:
        self.address = address
        self._client: Any = None  # nats.aio.client.Client, once connected
        self._js: Any = None
        self._ready = False  # the stream checked on this connection
        self._lock = asyncio.Lock()

    async def _jetstream(self) -> Any:
        async with self._lock:
            if self._client is not None and not self._client.is_connected:
                await self._drop()
            if self._client is None:

                async def quiet(error: Exception) -> None:  # reconnects are logged by send
                    log.debug("nats: %s", error)

                self._client = await nats.connect(
                    self.address.url,
                    name="rewards-notify",
                    connect_timeout=CONNECT_TIMEOUT,
                    max_reconnect_attempts=3,
                    reconnect_time_wait=1,
                    error_cb=quiet,
                )
                self._js = self._client.jetstream(timeout=PUBLISH_TIMEOUT)
                self._ready = False
            if not self._ready:
                await ensure_stream(
                    self._js,
                    self.address.stream,
                    [self.address.subject(t) for t in NOTIFICATION_TYPES],
                    retention=RetentionPolicy.LIMITS,
                    storage=StorageType.FILE,
                    duplicate_window=DUPLICATE_WINDOW,
                    max_age=MAX_AGE,
                )
                self._ready = True
            return self._js

    async def send(self, message: Message) -> Outcome:
        try:
            js = await self._jetstream()
            await js.publish(
                self.address.subject(message.type),
                message.body,
                timeout=PUBLISH_TIMEOUT,
                stream=self.address.stream,
                headers={
                    "Nats-Msg-Id": f"rewards-{message.id}",
                    "Content-Type": "application/json",
                },
            )
        except NoStreamResponseError as error:  # the stream is gone: made again next time
            self._ready = False
            return _failed(error)
        except Exception as error:
            log.warning("publishing notification %s to NATS failed: %s", message.id, error)
            async with self._lock:
                if self._client is not None and not self._client.is_connected:
                    await self._drop()
                self._ready = False
            return _failed(error)
        return Outcome(delivered=True)  # stored, or a duplicate JetStream already has

    async def _drop(self) -> None:
        client, self._client, self._js, self._ready = self._client, None, None, False
        if client is not None:
            try:
                await client.close()
            except Exception as error:
                log.debug("closing the NATS connection: %s", error)

    async def close(self) -> None:
        async with self._lock:
            await self._drop()


class AmqpSink:
    def __init__(self, address: BrokerAddress) -> None:
        self.address = address
        self._connection: Any = None  # aio_pika connection, once connected
        self._channel: Any = None
        self._exchange: Any = None
        self._lock = asyncio.Lock()

    async def _exchange_ready(self) -> Any:
        async with self._lock:
            if self._channel is None or self._channel.is_closed or self._connection.is_closed:
                await self._drop()
                self._connection = await aio_pika.connect(
                    self.address.url,
                    timeout=CONNECT_TIMEOUT,
                    client_properties={"connection_name": "rewards-notify"},
                )
                channel = await self._connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
                exchange = await channel.declare_exchange(
                    self.address.exchange, aio_pika.ExchangeType.TOPIC, durable=True
                )
                if self.address.queue:
                    queue = await channel.declare_queue(
                        self.address.queue, durable=True, arguments={"x-queue-type": "quorum"}
                    )
                    await queue.bind(exchange, routing_key="#")
                self._channel, self._exchange = channel, exchange
            return self._exchange

    async def send(self, message: Message) -> Outcome:
        try:
            exchange = await self._exchange_ready()
            confirm = await exchange.publish(
                aio_pika.Message(
                    message.body,
                    content_type="application/json",
                    message_id=message.id,
                    type=message.type,
                    timestamp=message.created_at,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    app_id="rewards",
                ),
                routing_key=message.type,
                timeout=PUBLISH_TIMEOUT,
            )
        except Exception as error:
            log.warning("publishing notification %s to RabbitMQ failed: %s", message.id, error)
            async with self._lock:
                if self._channel is not None and (
                    self._channel.is_closed or self._connection.is_closed
                ):
                    await self._drop()
            return _failed(error)
        if not isinstance(confirm, Basic.Ack):
            return Outcome(delivered=False, error=f"not confirmed: {type(confirm).__name__}")
        return Outcome(delivered=True)

    async def _drop(self) -> None:
        connection, self._connection, self._channel, self._exchange = (
            self._connection,
            None,
            None,
            None,
        )
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except Exception as error:
                log.debug("closing the RabbitMQ connection: %s", error)

    async def close(self) -> None:
        async with self._lock:
            await self._drop()
