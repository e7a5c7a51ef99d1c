"""Throughput of broker intake: ``rewards consume`` processes recording purchases from
NATS JetStream and RabbitMQ.

    .venv/bin/python bench/broker_intake.py [--events 5000] [--consumers 1,2]
        [--brokers nats,amqp] [--databases sqlite,postgres] [--contacts 200]
        [--concurrency 128] [--batch 64] [--nats-url URL] [--amqp-url URL]
        [--postgres-url URL]

For each database (a SQLite file in a temporary folder; a PostgreSQL schema of its own,
dropped afterwards), broker and consumer count: a fresh database with the shipped
rulesets and ``--contacts`` contacts (made through the app), N ``rewards consume``
processes started and reading (a stream, subjects and queues of the run's own prefix,
deleted afterwards), then ``--events`` purchases published at once (the shape of
``bench/http_load.py``: 5 lines, a payment medium, ``process_immediately``, a unique
external reference), timed from the first publish until every event is in the
database. Printed: events/s end to end, the publish rate, and each consumer's share.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import nats
from litestar.testing import TestClient
from sqlalchemy import create_engine, func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_load import SEGMENTS, purchase_templates

from rewards.app import create_app
from rewards.db.database import Database
from rewards.db.migrate import upgrade
from rewards.db.tables import Event
from rewards.settings import Settings, parse_broker_url

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-admin-key"


@contextlib.contextmanager
def database(kind: str, postgres_url: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{folder / f'intake-{uuid.uuid4().hex[:6]}.db'}"
        return
    schema = f"bench_intake_{uuid.uuid4().hex[:8]}"
    admin = create_engine(postgres_url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{postgres_url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def prepare(url: str, contacts: int, seed: int) -> list[str]:
    """The database migrated, ``contacts`` contacts made; their wallet codes."""
    db = Database(url)
    upgrade(db.write_engine)
    db.dispose()
    settings = Settings(
        database_url=url, rulesets_dir=ROOT / "rulesets", api_keys={API_KEY: "admin"}
    )
    rng = random.Random(seed)
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {API_KEY}"
        return [
            client.post("/v1/contacts", json={"segments": rng.choice(SEGMENTS)}).json()["wallet"][
                "code"
            ]
            for _ in range(contacts)
        ]


def recorded(url: str) -> int:
    db = Database(url)
    try:
        with db.session(write=False) as session:
            return int(session.exec(select(func.count()).select_from(Event)).one()[0])
    finally:
        db.dispose()


async def publish(broker: str, bodies: list[bytes]) -> None:
    address = parse_broker_url(broker)
    if address.kind == "nats":
        client = await nats.connect(address.url)
        js = client.jetstream(timeout=30)
        subject = f"{address.prefix}.in.purchase"
        for start in range(0, len(bodies), 500):  # 500 awaited PubAcks at a time
            await asyncio.gather(*(js.publish(subject, b) for b in bodies[start : start + 500]))
        await client.close()
        return
    connection = await aio_pika.connect(address.url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(address.intake_exchange)
    for start in range(0, len(bodies), 500):
        await asyncio.gather(
            *(
                exchange.publish(
                    aio_pika.Message(
                        b,
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key="in.purchase",
                )
                for b in bodies[start : start + 500]
            )
        )
    await connection.close()


async def delete(broker: str) -> None:
    address = parse_broker_url(broker)
    if address.kind == "nats":
        client = await nats.connect(address.url)
        js = client.jetstream()
        for stream in (address.intake_stream, address.dlq_stream):
            with contextlib.suppress(Exception):
                await js.delete_stream(stream)
        await client.close()
        return
    connection = await aio_pika.connect(address.url)
    channel = await connection.channel()
    for queue in (address.intake_queue, address.dlq_queue):
        await channel.queue_delete(queue)
    await channel.exchange_delete(address.intake_exchange)
    await connection.close()


def start_consumer(broker: str, url: str, log: Path, options: list[str]) -> subprocess.Popen[bytes]:
    env = os.environ | {"REWARDS_DATABASE_URL": url, "REWARDS_RULESETS_DIR": str(ROOT / "rulesets")}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "rewards.cli", "consume", "--broker", broker, *options],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while "rewards consume: reading" not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"rewards consume did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    return process


def one_run(
    db_kind: str, broker_kind: str, consumers: int, args: argparse.Namespace, folder: Path
) -> dict[str, object]:
    base = args.nats_url if broker_kind == "nats" else args.amqp_url
    broker = f"{base}{'&' if '?' in base else '?'}prefix=b{uuid.uuid4().hex[:8]}"
    with database(db_kind, args.postgres_url, folder) as url:
        wallets = prepare(url, args.contacts, args.seed)
        run = uuid.uuid4().hex[:8]
        bodies = [
            f"{before}{run}-{i}{after}".encode()
            for i, (before, after) in enumerate(purchase_templates(wallets, args.events, args.seed))
        ]
        logs = [folder / f"consume-{run}-{n}.log" for n in range(consumers)]
        options = ["--concurrency", str(args.concurrency), "--batch", str(args.batch)]
        processes = [start_consumer(broker, url, log, options) for log in logs]
        try:
            started = time.perf_counter()
            asyncio.run(publish(broker, bodies))
            published = time.perf_counter() - started
            while (count := recorded(url)) < args.events:
                if time.perf_counter() - started > args.timeout:
                    raise SystemExit(f"only {count} of {args.events} recorded in {args.timeout} s")
                time.sleep(0.1)
            elapsed = time.perf_counter() - started
        finally:
            for process in processes:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
            for process in processes:
                process.wait(timeout=60)
            asyncio.run(delete(broker))
        shares = []
        for log in logs:
            found = re.search(r"recorded (\d+)", log.read_text().rsplit("stopped;", 1)[-1])
            shares.append(int(found.group(1)) if found else -1)
    return {
        "database": db_kind,
        "broker": broker_kind,
        "consumers": consumers,
        "events": args.events,
        "rate": args.events / elapsed,
        "publish_rate": args.events / published,
        "seconds": elapsed,
        "shares": shares,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--consumers", default="1,2")
    parser.add_argument("--brokers", default="nats,amqp")
    parser.add_argument("--databases", default="sqlite")
    parser.add_argument("--contacts", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument(
        "--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="rewards-broker-bench-") as temporary:
        for db_kind in args.databases.split(","):
            for broker_kind in args.brokers.split(","):
                for consumers in map(int, args.consumers.split(",")):
                    result = one_run(db_kind, broker_kind, consumers, args, Path(temporary))
                    results.append(result)
                    print(
                        f"  {db_kind} {broker_kind} x{consumers}: {result['rate']:,.0f} events/s",
                        file=sys.stderr,
                        flush=True,
                    )
    print(
        f"\nbroker intake, {args.events:,} purchases, --concurrency {args.concurrency} "
        f"--batch {args.batch}, {os.cpu_count()} cores"
    )
    print(
        f"{'database':<9} {'broker':<6} {'consumers':>9} {'events/s':>9} "
        f"{'publish/s':>10} {'seconds':>8}  shares"
    )
    for r in results:
        print(
            f"{r['database']:<9} {r['broker']:<6} {r['consumers']:>9} {r['rate']:>9,.0f} "
            f"{r['publish_rate']:>10,.0f} {r['seconds']:>8.1f}  {r['shares']}"
        )


if __name__ == "__main__":
    main()
