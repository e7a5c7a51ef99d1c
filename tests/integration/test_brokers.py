"""Brokers, for real: the broker sink publishing to NATS JetStream and RabbitMQ, and
``rewards consume`` processes recording customer events from them.

Needs ``REWARDS_TEST_NATS_URL`` (nats://127.0.0.1:4222, JetStream on) and
``REWARDS_TEST_AMQP_URL`` (amqp://guest:guest@127.0.0.1:5672/); skipped without them,
failed when ``REWARDS_REQUIRE_BROKERS`` is set (CI). Every test has a prefix of its own
(``?prefix=``: its streams, subjects, exchanges and queues), deleted afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aio_pika
import nats
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import func, select
from sqlmodel import col

from rewards.db.database import Database
from rewards.db.notify_tables import Delivery, OutboxRow
from rewards.db.tables import Event, Wallet
from rewards.notify.brokers import broker_sink
from rewards.notify.dispatcher import Dispatcher
from rewards.notify.sinks import Message
from rewards.settings import parse_broker_url
from tests.conftest import ADMIN_KEY, BOTH, ROOT, purchase_body
from tests.serving import until

NATS_URL = os.environ.get("REWARDS_TEST_NATS_URL")
AMQP_URL = os.environ.get("REWARDS_TEST_AMQP_URL")
KINDS = ["nats", "amqp"]


@pytest.fixture
def rulesets_dir() -> Path:
    """The shipped offers: a gold contact's 80.00 visa basket at store-001 earns 4.00."""
    return ROOT / "rulesets"


@pytest.fixture(params=KINDS)
def broker(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of the broker of this test, with a prefix of its own; what the test made
    there is deleted afterwards."""
    kind = request.param
    base = NATS_URL if kind == "nats" else AMQP_URL
    if not base:
        variable = "REWARDS_TEST_NATS_URL" if kind == "nats" else "REWARDS_TEST_AMQP_URL"
        if os.environ.get("REWARDS_REQUIRE_BROKERS"):
            pytest.fail(f"REWARDS_REQUIRE_BROKERS is set but {variable} is not")
        pytest.skip(f"{variable} not set")
    prefix = f"t{uuid.uuid4().hex[:10]}"
    url = f"{base}{'&' if '?' in base else '?'}prefix={prefix}"
    if kind == "nats":  # a killed consumer's messages come back in 3 s, not a minute
        url += "&ack_wait=3"
    try:
        asyncio.run(_answers(url))
    except Exception as error:
        if os.environ.get("REWARDS_REQUIRE_BROKERS"):
            pytest.fail(f"the broker of {base} does not answer: {error}")
        pytest.skip(f"the broker of {base} does not answer: {error}")
    try:
        yield url
    finally:
        asyncio.run(_delete(url))


async def _answers(url: str) -> None:
    address = parse_broker_url(url)
    if address.kind == "nats":
        client = await nats.connect(address.url, connect_timeout=3, max_reconnect_attempts=0)
        await client.jetstream().account_info()
        await client.close()
    else:
        connection = await aio_pika.connect(address.url, timeout=3)
        await connection.close()


async def _delete(url: str) -> None:
    address = parse_broker_url(url)
    if address.kind == "nats":
        client = await nats.connect(address.url)
        js = client.jetstream()
        for stream in (address.stream, address.intake_stream, address.dlq_stream):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(stream)
        await client.close()
        return
    connection = await aio_pika.connect(address.url)
    channel = await connection.channel()
    for queue in (address.queue, address.intake_queue, address.dlq_queue):
        if queue:
            await channel.queue_delete(queue)
    for exchange in (address.exchange, address.intake_exchange):
        await channel.exchange_delete(exchange)
    await connection.close()


def notification(oid: str, kind: str = "award.created") -> Message:
    body = json.dumps({"id": oid, "type": kind, "timestamp": "2026-03-02T10:00:00Z", "data": {}})
    return Message(
        id=oid,
        type=kind,
        contact_id=None,
        created_at=datetime.now(UTC),
        body=body.encode(),
        attempt=1,
    )


# ---- the broker sink -------------------------------------------------------------------


async def _published(url: str, messages: list[Message]) -> list[tuple[str, bytes]]:
    """Send ``messages`` through the sink; (message id, body) of what a consumer reads."""
    sink = broker_sink(url)
    try:
        for message in messages:
            outcome = await sink.send(message)
            assert outcome.delivered, outcome
    finally:
        await sink.close()
    return await _read(url)


async def _read(url: str) -> list[tuple[str, bytes]]:
    """(message id, body) of every notification on the broker, as a consumer reads them."""
    address = parse_broker_url(url)
    read: list[tuple[str, bytes]] = []
    if address.kind == "nats":
        client = await nats.connect(address.url)
        js = client.jetstream()
        subscription = await js.pull_subscribe(f"{address.prefix}.>", stream=address.stream)
        with contextlib.suppress(nats.errors.TimeoutError):
            for got in await subscription.fetch(100, timeout=2):
                assert got.headers["Content-Type"] == "application/json"
                read.append((got.headers["Nats-Msg-Id"], got.data))
                await got.ack()
        await client.close()
    else:
        connection = await aio_pika.connect(address.url)
        channel = await connection.channel()
        assert address.queue is not None
        queue = await channel.get_queue(address.queue)
        while (got := await queue.get(fail=False, timeout=5)) is not None:
            assert got.content_type == "application/json"
            assert got.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
            read.append((str(got.message_id), got.body))
            await got.ack()
        await connection.close()
    return read


def test_the_dispatcher_publishes_the_outbox_to_the_broker(broker: str, app: Litestar) -> None:
    """End to end: a purchase's notifications, from the outbox through the dispatcher's
    broker subscription to a consumer of the broker, each with its outbox id."""
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        gold = client.post("/v1/contacts", json={"segments": ["gold"]}).json()
        made = client.post("/v1/events/purchases", json=basket(gold["wallet"]["code"], "e2e-1"))
        assert made.status_code == 201 and made.json()["awards"], made.text
    database: Database = app.state.database
    dispatcher = Dispatcher(database, app.state.runtime.settings.with_changes(broker_url=broker))

    async def dispatch() -> None:
        await asyncio.to_thread(dispatcher.ensure_broker_subscription)
        for _ in range(50):
            await dispatcher.tick()
            with database.transaction(write=False) as session:
                left = session.scalar(
                    select(func.count()).where(col(Delivery.status) != "delivered")
                )
            if left == 0:
                break
            await asyncio.sleep(0.05)
        await dispatcher.close()

    asyncio.run(dispatch())
    with database.transaction(write=False) as session:
        outbox_ids = {str(i) for i in session.scalars(select(col(OutboxRow.id)))}
    read = asyncio.run(_read(broker))
    ids = {message_id.removeprefix("rewards-") for message_id, _ in read}
    assert ids == outbox_ids  # every notification committed, once each
    types = [json.loads(body)["type"] for _, body in read]
    assert "award.created" in types and "wallet.balance_changed" in types


def test_the_sink_publishes_each_notification_with_its_id(broker: str) -> None:
    first, second = notification("101"), notification("102", "spend.created")
    read = asyncio.run(_published(broker, [first, second, first]))
    if broker.startswith("nats"):  # JetStream drops the repeated Nats-Msg-Id
        assert read == [("rewards-101", first.body), ("rewards-102", second.body)]
    else:  # RabbitMQ keeps both copies: consumers dedupe on message_id
        assert read == [("101", first.body), ("102", second.body), ("101", first.body)]


@pytest.mark.parametrize(
    "url", ["nats://127.0.0.1:9/", "amqp://guest:guest@127.0.0.1:9/"], ids=KINDS
)
def test_an_unreachable_broker_is_a_failed_delivery_not_an_error(url: str) -> None:
    async def attempt() -> Any:
        sink = broker_sink(url)
        try:
            return await sink.send(notification("7"))
        finally:
            await sink.close()

    outcome = asyncio.run(attempt())
    assert not outcome.delivered
    assert outcome.error


def test_a_lost_stream_or_route_fails_then_recovers(broker: str) -> None:
    address = parse_broker_url(broker)

    async def scenario() -> list[bool]:
        sink = broker_sink(broker)
        outcomes = [(await sink.send(notification("1"))).delivered]
        if address.kind == "nats":
            client = await nats.connect(address.url)
            await client.jetstream().delete_stream(address.stream)
            await client.close()
        else:
            connection = await aio_pika.connect(address.url)
            channel = await connection.channel()
            assert address.queue is not None
            await channel.queue_delete(address.queue)  # nothing takes the message now
            await connection.close()
        outcomes.append((await sink.send(notification("2"))).delivered)
        outcomes.append((await sink.send(notification("3"))).delivered)
        await sink.close()
        return outcomes

    first, lost, again = asyncio.run(scenario())
    assert first
    assert not lost  # NATS: no stream; RabbitMQ: unroutable (returned, on_return_raises)
    if address.kind == "nats":
        assert again  # the sink made the stream again
    else:
        assert not again  # until the queue is back (a new connection declares it)


# ---- rewards consume -------------------------------------------------------------------


class Consumer:
    """``rewards consume`` in a process group of its own."""

    def __init__(self, broker: str, database_url: str, log: Path, *options: str) -> None:
        self.log = log
        before = log.read_text().count("rewards consume: reading") if log.exists() else 0
        env = os.environ | {
            "REWARDS_DATABASE_URL": database_url,
            "REWARDS_RULESETS_DIR": str(ROOT / "rulesets"),
        }
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "rewards.cli", "consume", "--broker", broker, *options],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        until(
            lambda: self._alive() and log.read_text().count("rewards consume: reading") > before,
            "rewards consume reading",
            timeout=60,
            log=log,
        )

    def _alive(self) -> bool:
        assert self.process.poll() is None, f"consume exited:\n{self.log.read_text()[-3000:]}"
        return True

    def stop(self) -> dict[str, int]:
        """SIGTERM; what it said it did."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=60)
        line = self.log.read_text().rsplit("rewards consume: stopped; ", 1)[1].splitlines()[0]
        return _counts(line)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def _counts(line: str) -> dict[str, int]:
    return {name: int(n) for name, n in re.findall(r"([a-z-]+) (\d+)", line)}


@contextlib.contextmanager
def consumers(
    broker: str, database_url: str, logs: list[Path], *options: str
) -> Iterator[list[Consumer]]:
    started: list[Consumer] = []
    try:
        for log in logs:
            started.append(Consumer(broker, database_url, log, *options))
        yield started
    finally:
        for consumer in started:
            if consumer.process.poll() is None:
                consumer.kill()


def basket(wallet_code: str, reference: str) -> dict[str, Any]:
    return purchase_body(
        wallet_code,
        performed_on="2026-03-02T11:00:00+02:00",
        payment_medium={"brand": "visa", "type": "credit"},
        products=[{"sku": "GROCERY-BASKET", "net_amount": "67.23", "vat_amount": "12.77"}],
        process_immediately=True,
        external_system="broker-test",
        external_reference=reference,
    )


def publish(url: str, bodies: list[bytes], event_type: str = "purchase") -> None:
    async def send() -> None:
        address = parse_broker_url(url)
        if address.kind == "nats":
            client = await nats.connect(address.url)
            js = client.jetstream()
            for body in bodies:  # the consumer makes the stream; a test may publish first
                await js.publish(f"{address.prefix}.in.{event_type}", body)
            await client.close()
            return
        connection = await aio_pika.connect(address.url)
        channel = await connection.channel()
        exchange = await channel.get_exchange(address.intake_exchange)
        for body in bodies:
            await exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=f"in.{event_type}",
            )
        await connection.close()

    asyncio.run(send())


def dead_letters(url: str) -> list[tuple[dict[str, Any], bytes]]:
    """(problem details, body) of each message in the dead-letter stream or queue."""

    async def read() -> list[tuple[dict[str, Any], bytes]]:
        address = parse_broker_url(url)
        found = []
        if address.kind == "nats":
            client = await nats.connect(address.url)
            js = client.jetstream()
            subscription = await js.pull_subscribe(address.dlq_subject, stream=address.dlq_stream)
            with contextlib.suppress(nats.errors.TimeoutError):
                for got in await subscription.fetch(100, timeout=2):
                    found.append((json.loads(got.headers["Rewards-Problem"]), got.data))
            await client.close()
            return found
        connection = await aio_pika.connect(address.url)
        channel = await connection.channel()
        queue = await channel.get_queue(address.dlq_queue)
        while (got := await queue.get(fail=False, timeout=5)) is not None:
            found.append((json.loads(str(got.headers["rewards-problem"])), got.body))
            await got.ack()
        await connection.close()
        return found

    return asyncio.run(read())


def events_recorded(database_url: str) -> int:
    database = Database(database_url)
    try:
        with database.session(write=False) as session:
            return int(session.exec(select(func.count()).select_from(Event)).one()[0])
    finally:
        database.dispose()


def balances(database_url: str) -> dict[str, Decimal]:
    database = Database(database_url)
    try:
        with database.session(write=False) as session:
            rows = session.exec(select(Wallet.code, Wallet.balance_cents)).all()
            return {code: Decimal(cents) / 100 for code, cents in rows}
    finally:
        database.dispose()


@pytest.fixture
def wallets(app: Litestar) -> list[str]:
    """Four gold contacts' wallet codes (made through the API, on the test's database)."""
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        return [
            client.post("/v1/contacts", json={"segments": ["gold"]}).json()["wallet"]["code"]
            for _ in range(4)
        ]


def purchases(wallets: list[str], count: int) -> tuple[list[bytes], dict[str, Decimal]]:
    """``count`` purchases spread over ``wallets``, and the balance each wallet ends with
    (4.00 per purchase)."""
    bodies, expected = [], {code: Decimal(0) for code in wallets}
    run = uuid.uuid4().hex[:6]
    for i in range(count):
        code = wallets[i % len(wallets)]
        bodies.append(json.dumps(basket(code, f"{run}-{i}")).encode())
        expected[code] += Decimal("4.00")
    return bodies, expected


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_two_consumers_share_the_stream_and_record_each_event_once(
    broker: str, database_url: str, wallets: list[str], tmp_path: Path
) -> None:
    count = 300
    bodies, expected = purchases(wallets, count)
    logs = [tmp_path / "consume-1.log", tmp_path / "consume-2.log"]
    with consumers(broker, database_url, logs, "--concurrency", "16", "--batch", "8") as pair:
        publish(broker, bodies)
        until(lambda: events_recorded(database_url) >= count, f"{count} events", timeout=120)
        done = [consumer.stop() for consumer in pair]
    assert events_recorded(database_url) == count
    assert balances(database_url) == expected
    assert all(d["recorded"] > 0 for d in done), done  # competing consumers: both worked
    assert sum(d["recorded"] for d in done) == count
    assert sum(d["replayed"] + d["dead-lettered"] for d in done) == 0


def test_a_replay_records_nothing_twice_and_a_refusal_is_dead_lettered(
    broker: str, database_url: str, wallets: list[str], tmp_path: Path
) -> None:
    (body,), _ = purchases(wallets[:1], 1)
    invalid = json.loads(body)
    invalid["performed_by_unit"] = 42  # a number where the schema wants a string
    invalid["external_reference"] = "refused-1"
    refused = json.dumps(invalid).encode()
    with consumers(broker, database_url, [tmp_path / "consume.log"]) as (consumer,):
        publish(broker, [body, body, refused])
        publish(broker, [b"{}"], event_type="no_such_type")
        found: list[tuple[dict[str, Any], bytes]] = []

        def two_dead() -> bool:
            found.extend(dead_letters(broker))
            return len(found) >= 2

        until(two_dead, "two dead letters", timeout=60)
        done = consumer.stop()
    assert events_recorded(database_url) == 1
    assert balances(database_url)[wallets[0]] == Decimal("4.00")
    assert done == {"recorded": 1, "replayed": 1, "dead-lettered": 2, "retried": 0}
    by_code = {problem["code"]: (problem, data) for problem, data in found}
    problem, data = by_code["validation_failed"]
    assert data == refused  # the original body, byte for byte
    assert problem["status"] == 422
    assert [e["path"] for e in problem["errors"]] == ["/performed_by_unit"]
    assert by_code["unknown_event_type"][0]["errors"][0]["path"] == "type"


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_a_consumer_killed_mid_stream_loses_and_doubles_nothing(
    broker: str, database_url: str, wallets: list[str], tmp_path: Path
) -> None:
    count = 600
    bodies, expected = purchases(wallets, count)
    log = tmp_path / "consume.log"
    publish_first = Consumer(broker, database_url, log, "--concurrency", "8", "--batch", "8")
    try:
        publish(broker, bodies)
        until(lambda: events_recorded(database_url) > 0, "some events recorded", timeout=60)
    finally:
        publish_first.kill()  # kill -9: whatever it held is not acked
    part = events_recorded(database_url)
    assert 0 < part < count, f"{part} of {count} recorded before the kill: not mid-stream"
    with consumers(broker, database_url, [log]) as (again,):
        until(lambda: events_recorded(database_url) >= count, f"{count} events", timeout=180)
        again.stop()
    assert events_recorded(database_url) == count
    assert balances(database_url) == expected
