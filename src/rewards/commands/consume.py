"""``rewards consume [--broker URL] [--batch N] [--concurrency N]``: customer events from
a message broker, recorded as ``POST /v1/events/<type>`` records them.

Reads the same ``REWARDS_*`` settings as ``rewards serve`` (database, rulesets, which it
watches for changes as serve does; ``REWARDS_BROKER_URL`` is the default broker) and
upgrades the schema first (unless ``REWARDS_AUTO_MIGRATE=0``). Prints one line when it
is reading and, on SIGTERM or SIGINT, settles the messages it holds and prints what it
did. Run as many as needed: they share the stream's durable consumer or the queue.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from rewards.settings import Settings, SettingsError, parse_broker_url


def register(commands: Any) -> None:
    """Add the sub-command to ``commands`` (an argparse sub-parsers object)."""
    parser = commands.add_parser(
        "consume",
        help="record customer events read from NATS JetStream or RabbitMQ",
        description="Record customer events read from a broker: NATS subjects "
        "rewards.in.<type> (stream REWARDS_IN, durable consumer rewards-consume) or the "
        "RabbitMQ queue rewards.in (type from the message's type property or routing key "
        "in.<type>). The body is what POST /v1/events/<type> takes. A refused message goes "
        "to rewards.dlq.in (stream REWARDS_DLQ) or the queue rewards.in.dlq, with its "
        "problem details in a header; any other failure is retried after a delay.",
    )
    parser.add_argument(
        "--broker",
        default=None,
        help="nats://host:4222 or amqp://user:password@host:5672/ (default: REWARDS_BROKER_URL)",
    )
    parser.add_argument(
        "--batch", type=int, default=64, help="messages per pull from NATS (default 64)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=128,
        help="messages being recorded at once, written together by the intake's group "
        "commit; RabbitMQ's prefetch (default 128)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rewards.consume.handling import EventIntake
    from rewards.consume.runner import consume
    from rewards.db.database import Database
    from rewards.db.migrate import upgrade
    from rewards.intake.group_commit import GroupCommit
    from rewards.intake.process import build_runtime
    from rewards.runtime import history, watcher
    from rewards.runtime.rate_counters import RateCounters, RedisCounters, SqlCounters
    from rewards.runtime.ratelimit import CALLER, Caller, OtpLimits

    if args.batch < 1 or args.concurrency < 1:
        print("rewards consume: --batch and --concurrency must be at least 1", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    url = args.broker or settings.broker_url
    if not url:
        raise SettingsError("no broker: pass --broker URL or set REWARDS_BROKER_URL")
    address = parse_broker_url(url)
    database = Database(settings.database_url, echo=settings.sql_echo)
    counters: RateCounters = (
        RedisCounters(settings.redis_url)
        if settings.redis_url
        else SqlCounters(database.write_engine)
    )
    try:
        if settings.auto_migrate:
            upgrade(database.write_engine)
        runtime = build_runtime(settings)
        history.record_load(
            database, runtime, runtime.rulesets, source="cli", loaded_by="rewards consume"
        )
        intake = GroupCommit(database, runtime)
        # OTPs in messages are counted as the API counts them, against the broker's budget.
        CALLER.set(Caller(key="broker", client=address.shown))
        events = EventIntake(runtime, intake, OtpLimits(counters, settings, runtime.now))
        watcher.start(runtime, database)
        intake.start()

        def ready() -> None:
            names = (
                f"stream {address.intake_stream}, consumer {address.durable}"
                if address.kind == "nats"
                else f"queue {address.intake_queue}"
            )
            print(f"rewards consume: reading {address.shown} ({names})", flush=True)

        async def main() -> str:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
            counts = await consume(
                address,
                events,
                batch=args.batch,
                concurrency=args.concurrency,
                stop=stop,
                ready=ready,
            )
            return str(counts)

        try:
            done = asyncio.run(main())
        finally:
            intake.stop()
            watcher.stop(runtime, database)
        print(f"rewards consume: stopped; {done}", flush=True)
        return 0
    finally:
        counters.close()
        database.dispose()
