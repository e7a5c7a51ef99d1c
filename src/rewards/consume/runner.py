"""The loop of ``rewards consume``: messages from the broker (``consume.sources``) through
the intake (``consume.handling``), each settled once its verdict is known."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from rewards.consume.handling import EventIntake, Recorded, Refused, retry_delay
from rewards.consume.sources import Delivery, consume_amqp, consume_nats
from rewards.settings import BrokerAddress

log = logging.getLogger("rewards.consume")


@dataclass
class Counts:
    recorded: int = 0
    replayed: int = 0  # an event recorded before (the same external reference and body)
    dead_lettered: int = 0
    retried: int = 0

    def __str__(self) -> str:
        return (
            f"recorded {self.recorded}, replayed {self.replayed}, "
            f"dead-lettered {self.dead_lettered}, retried {self.retried}"
        )


async def consume(
    address: BrokerAddress,
    intake: EventIntake,
    *,
    batch: int,
    concurrency: int,
    stop: asyncio.Event,
    ready: Callable[[], None] = lambda: None,
) -> Counts:
    """Read and record until ``stop`` is set; what was done."""
    counts = Counts()

    async def process(delivery: Delivery) -> None:
        verdict = await intake.handle(delivery.event_type, delivery.body)
        try:
            if isinstance(verdict, Recorded):
                await delivery.ack()  # after the commit: record() returns once committed
                if verdict.created:
                    counts.recorded += 1
                else:
                    counts.replayed += 1
                return
            if isinstance(verdict, Refused):
                try:
                    await delivery.dead_letter(verdict)
                    counts.dead_lettered += 1
                    return
                except Exception as error:  # not dead-lettered: kept, tried again later
                    log.warning("dead-lettering a message failed: %s", error)
            await delivery.retry(retry_delay(delivery.deliveries))
            counts.retried += 1
        except Exception as error:  # the broker delivers it again (ack wait, reconnect)
            log.warning("settling a message failed: %s", error)

    run = consume_nats if address.kind == "nats" else consume_amqp
    await run(address, process, batch=batch, concurrency=concurrency, stop=stop, ready=ready)
    return counts
