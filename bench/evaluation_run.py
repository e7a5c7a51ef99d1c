"""Throughput of an evaluation run over a big history.

    .venv/bin/python bench/evaluation_run.py [--events N] [--contacts N] [--database URL]
                                             [--workers N] [--chunk-size N] [--now ISO]
                                             [--data FILE]

Generates N purchases (default 1,000,000) over --contacts contacts (default 10,000),
spread over the last --days days (default 365) in time order, 1 to 5 lines each
(coffee, pastries, sandwiches, beans, groceries...), random units, cards and segments,
none evaluated on intake, with time-ordered ids as intake makes them (UUID v7,
``rewards.db.ids``). Data goes in with bulk SQL inserts (not through HTTP) into a
fresh SQLite file (default) or a fresh schema of the PostgreSQL database given by
--database. Then one evaluation run with the shipped rulesets (20+ offers; every offer
applies to these never-evaluated purchases, plus the three period aggregates), timed.

The run itself happens in a fresh process, as ``rewards evaluate`` would (the memory of
the data generation is not the run's). Prints: events/s of the run, its CPU, its peak
RSS (the run's process and its child processes at once, sampled every 0.2 s: a big
run's worker starts a read-ahead process, see ``rewards.runs``), seconds
by step (summed over the processes; "waiting for ..." includes the chunks the worker
decided itself meanwhile), awards, and the ratio of the run time to bare engine
evaluation (``Evaluator.evaluate_many`` of the same facts, chunks of 1,000, facts
prepared beforehand, no database). ``--chunk-size`` defaults to the run's
(``runs.CHUNK_SIZE``); ``--workers`` to 1 (more workers: processes sharing the run's
contact partitions). Nothing here is asserted by tests.

The data and the awards depend on "now" (the purchases cover the days before it, the
closed aggregate periods end before it): ``--now`` (e.g. ``2025-06-01T12:00Z``) ends the
data there and runs as of that moment, so two runs, before and after a change, must
print the same awards per offer. ``--data FILE`` (SQLite) saves the generated database
to FILE, or starts from FILE when it exists (iterations without the generation time).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import resource
import shutil
import string
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import msgspec
from sqlalchemy import create_engine, insert, select, text

ROOT = Path(__file__).resolve().parent.parent
SKUS = [
    ("COFFEE-LATTE", 320, 61),
    ("COFFEE-ESPRESSO", 180, 34),
    ("PASTRY-CROISSANT", 180, 34),
    ("SANDWICH-CLUB", 420, 80),
    ("BEANS-PREMIUM-KENYA", 2100, 399),
    ("BEANS-HOUSE", 1200, 228),
    ("GROCERY-MILK", 150, 9),
    ("GROCERY-BREAD", 220, 13),
    ("TEA-GREEN", 200, 38),
    ("TV-55", 45000, 8550),
]
WEIGHTS = [20, 15, 12, 10, 4, 6, 12, 12, 8, 1]
UNITS = ["store-001", "store-002", "store-003"]
CARDS = [
    ("visa", "credit"),
    ("visa", "debit"),
    ("mastercard", "credit"),
    ("electron", "debit"),
    None,
]
SEGMENTS = ["gold", "silver", "staff", "new"]


def money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def machine_speed() -> float:
    """Seconds a fixed pure-Python loop takes now (the same code, so its time tells how
    fast the machine is at the moment)."""
    began = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i * i % 7
    return time.perf_counter() - began


def children_cpu() -> float:
    """CPU seconds of the finished child processes (the run's read-ahead process,
    --workers children)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _tree_rss_mb(pid: int) -> dict[int, float]:
    """RSS of ``pid`` and each of its descendants now (Linux /proc), in MB."""
    found: dict[int, float] = {}
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/statm") as statm:
                found[current] = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    pending.extend(int(child) for child in children.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # the process ended meanwhile
    return found


class TreeRss:
    """Samples a process plus its child processes every ``interval`` seconds: the memory
    the run needs at once (``peak``) and each process's own peak (``peaks``, from the
    run's process on). ru_maxrss cannot tell: a spawned process inherits its parent's."""

    def __init__(self, process: multiprocessing.process.BaseProcess, interval: float = 0.2) -> None:
        self.process = process
        self.peak = 0.0
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(interval,), daemon=True)

    def _sample(self, interval: float) -> None:
        while not self._stop.wait(interval):
            sample = _tree_rss_mb(self.process.pid)
            self.peak = max(self.peak, sum(sample.values()))
            for pid, rss in sample.items():
                self.peaks[pid] = max(self.peaks.get(pid, 0.0), rss)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def aware(text: str) -> datetime:
    """``--now``: an ISO 8601 moment with its zone ("Z" allowed)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("--now needs a time zone, e.g. 2025-06-01T12:00Z")
    return moment.astimezone(UTC)


def database_url(args: argparse.Namespace, workdir: Path) -> tuple[str, str | None]:
    """(URL to use, PostgreSQL schema created for this bench or None)."""
    if not args.database:
        return f"sqlite:///{workdir / 'bench.db'}", None
    if args.database.startswith("sqlite"):
        return args.database, None
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.database)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    separator = "&" if "?" in args.database else "?"
    return f"{args.database}{separator}options=-csearch_path%3D{schema}", schema


def generate(database, args: argparse.Namespace) -> None:
    from rewards.db.ids import TimeOrderedIds
    from rewards.db.tables import Contact, Event, EventLine, Wallet

    rng = random.Random(args.seed)
    now = args.now
    contacts = [str(uuid.uuid4()) for _ in range(args.contacts)]
    with database.transaction() as session:
        session.execute(
            insert(Contact.__table__),
            [
                {
                    "id": c,
                    "code": None,
                    "cim": None,
                    "name": None,
                    "segments": rng.sample(SEGMENTS, rng.choice([0, 0, 1, 1, 2])),
                    "spend_blocked": False,
                    "created_at": now,
                    "updated_at": now,
                }
                for c in contacts
            ],
        )
        session.execute(
            insert(Wallet.__table__),
            [
                {
                    "code": "".join(rng.choices(string.ascii_uppercase + string.digits, k=16)),
                    "contact_id": c,
                    "currency": "EUR",
                    "balance_cents": 0,
                    "created_at": now,
                }
                for c in contacts
            ],
        )
    start = now - timedelta(days=args.days)
    step = (args.days * 86400 - 3600) / args.events
    batch = 20_000
    # Event ids as intake makes them: time-ordered (UUID v7, rewards.db.ids), here stamped
    # with the moment each purchase was recorded (its performed_on, as at a till).
    event_ids = TimeOrderedIds(random=rng.getrandbits)
    for offset in range(0, args.events, batch):
        events, lines = [], []
        for i in range(offset, min(offset + batch, args.events)):
            performed = start + timedelta(seconds=i * step + rng.uniform(0, step))
            event_id = event_ids.next(performed)
            products = []
            for line_no in range(rng.randint(1, 5)):
                sku, net, vat = rng.choices(SKUS, WEIGHTS)[0]
                quantity = rng.randint(1, 3)
                total = quantity * net + vat
                products.append(
                    {
                        "sku": sku,
                        "quantity": str(quantity),
                        "net_amount": money(net),
                        "vat_amount": money(vat),
                        "total_amount": money(total),
                    }
                )
                lines.append(
                    {
                        "event_id": event_id,
                        "line_no": line_no,
                        "sku": sku,
                        "quantity_milli": quantity * 1000,
                        "net_cents": net,
                        "vat_cents": vat,
                        "total_cents": total,
                    }
                )
            total = sum(int(p["total_amount"].replace(".", "")) for p in products)
            details = {
                "reference_number": f"B{i}",
                "currency": "EUR",
                "products": products,
                "net_amount": money(
                    total - sum(int(p["vat_amount"].replace(".", "")) for p in products)
                ),
                "vat_amount": money(sum(int(p["vat_amount"].replace(".", "")) for p in products)),
                "total_amount": money(total),
            }
            card = rng.choice(CARDS)
            if card is not None:
                details["payment_medium"] = {"brand": card[0], "type": card[1]}
            events.append(
                {
                    "id": event_id,
                    "type": "purchase",
                    "state": "posted",
                    "contact_id": rng.choice(contacts),
                    "classification": None,
                    "performed_on": performed,
                    "performed_by_unit": rng.choice(UNITS),
                    "description": None,
                    "external_system": "",
                    "external_reference": None,
                    "request_hash": "bench",
                    "process_immediately": False,
                    "evaluated": False,
                    "amount_cents": total,
                    "details": details,
                    "created_at": performed,
                    "cancelled_at": None,
                }
            )
        with database.transaction() as session:
            session.execute(insert(Event.__table__), events)
            session.execute(insert(EventLine.__table__), lines)
        print(f"\rgenerated {offset + len(events):,} purchases", end="", file=sys.stderr)
    print(file=sys.stderr)


def engine_only(database, runtime, chunk: int = 1000) -> tuple[float, int]:
    """Seconds spent in Evaluator.evaluate_many for the same facts (mode all), and the
    number of awards it decides (period aggregates excluded)."""
    from rewards.db.tables import Contact, Event
    from rewards.offers.facts import build_facts

    evaluator = runtime.evaluator
    columns = [
        Event.number, Event.id, Event.type, Event.contact_id, Event.classification,
        Event.performed_on, Event.performed_by_unit, Event.evaluated, Event.details,
    ]  # fmt: skip
    with database.session(write=False) as session:
        segments = dict(session.execute(select(Contact.id, Contact.segments)).all())
    spent = 0.0
    awards = 0
    last = 0
    while True:
        with database.session(write=False) as session:
            rows = session.execute(
                select(*columns).where(Event.number > last).order_by(Event.number).limit(chunk)
            ).all()
            if not rows:
                break
            facts = [build_facts(session, row, segments[row.contact_id], {}) for row in rows]
        last = rows[-1].number
        began = time.perf_counter()
        decided = evaluator.evaluate_many(facts, mode="all")
        spent += time.perf_counter() - began
        awards += sum(len(d) for d in decided)
    return spent, awards


def measured_run(connection, url: str, args: argparse.Namespace) -> None:
    """The evaluation run, in its own process like ``rewards evaluate`` (the data
    generation's memory is not the run's): sends back its figures."""
    from rewards import runs
    from rewards.db.database import Database
    from rewards.engine import Evaluator, load_rulesets
    from rewards.runtime.context import Runtime
    from rewards.schemas import SchemaRegistry
    from rewards.settings import Settings

    database = Database(url)
    rulesets = load_rulesets(args.rulesets)
    settings = Settings(database_url=url, rulesets_dir=args.rulesets)
    runtime = Runtime(settings=settings, evaluator=Evaluator(rulesets), schemas=SchemaRegistry())
    last_print = [0.0]
    began = time.perf_counter()
    phases: dict[str, float] = {}  # phase -> when its first chunk was written

    def progress(done: runs.ChunkDone) -> None:
        now = time.perf_counter()
        phases.setdefault(done.phase, now - began)
        if now - last_print[0] > 5:
            last_print[0] = now
            with database.session(write=False) as session:
                run = runs.get_run(session, done.run_id)
            rate = run.events_evaluated / max(now - began, 1e-9)
            print(
                f"  {done.phase:<18} {run.events_evaluated:>10,} events  {rate:8,.0f} ev/s  "
                f"awards {run.awards:,}",
                file=sys.stderr,
            )

    timings: dict[str, float] = {}
    began = time.perf_counter()
    cpu = time.process_time()
    started = runs.start_run(
        database,
        runtime,
        as_of=args.now,
        partitions=runs.partitions_for(args.workers),
        source="bench",
    )
    children = []
    if args.workers > 1:
        from rewards.commands import evaluate as command

        os.environ["REWARDS_DATABASE_URL"] = url
        os.environ["REWARDS_RULESETS_DIR"] = str(args.rulesets)
        children = [
            multiprocessing.get_context("spawn").Process(
                target=command._worker_process, args=(started.id, args.chunk_size)
            )
            for _ in range(args.workers - 1)
        ]
        for child in children:
            child.start()
    runs.execute_run(
        database, runtime, started.id, chunk_size=args.chunk_size,
        hooks=runs.RunHooks(progress=progress, timings=timings),
    )  # fmt: skip
    for child in children:
        child.join()
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu
    child_cpu = children_cpu()
    with database.session(write=False) as session:
        run = runs.get_run(session, started.id)
    database.dispose()
    connection.send(
        {
            "run": msgspec.to_builtins(run),
            "elapsed": elapsed,
            "cpu": cpu,
            "child_cpu": child_cpu,
            "timings": timings,
            "aggregates_from": phases.get("aggregates"),
        }
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument(
        "--database", default=None, help="sqlite:///... or postgresql+psycopg://..."
    )
    parser.add_argument("--rulesets", type=Path, default=ROOT / "rulesets")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="events per chunk (default: the run's)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-engine", action="store_true", help="no bare-engine comparison")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="SQLite only: copy the data from this file, or generate and save it there "
        "(same --events/--contacts/--days/--seed/--now expected: not checked)",
    )
    parser.add_argument(
        "--now",
        type=aware,
        default=None,
        help="end of the data and the run's as_of, ISO 8601 with a zone (default: now)",
    )
    args = parser.parse_args(argv)
    if args.now is None:
        args.now = datetime.now(UTC)

    from rewards import runs
    from rewards.db.database import Database
    from rewards.db.migrate import upgrade
    from rewards.engine import Evaluator, load_rulesets
    from rewards.runtime.context import Runtime
    from rewards.schemas import SchemaRegistry
    from rewards.settings import Settings

    if args.chunk_size is None:
        args.chunk_size = runs.CHUNK_SIZE
    workdir = Path(tempfile.mkdtemp(prefix="rewards-bench-"))
    url, schema = database_url(args, workdir)
    cached = args.data is not None and args.data.exists() and url.startswith("sqlite")
    if cached:
        shutil.copyfile(args.data, workdir / "bench.db")
    database = Database(url)
    try:
        upgrade(database.write_engine)
        began = time.perf_counter()
        if not cached:
            generate(database, args)
            if args.data is not None and url.startswith("sqlite"):
                database.dispose()  # everything in the main file before it is copied
                shutil.copyfile(workdir / "bench.db", args.data)
        if database.write_engine.dialect.name == "postgresql":
            with database.transaction() as session:  # statistics, as autovacuum would have them
                session.connection().exec_driver_sql("ANALYZE")
        print(
            f"data: {args.events:,} purchases over {args.contacts:,} contacts in "
            f"{time.perf_counter() - began:.0f} s ({database.write_engine.dialect.name})"
        )
        # The data just written or copied is still being flushed to disk by the kernel:
        # the run's first checkpoint would wait for all of it (fsync of the database file).
        database.dispose()
        os.sync()
        speed_before = machine_speed()
        parent, child = multiprocessing.get_context("spawn").Pipe()
        process = multiprocessing.get_context("spawn").Process(
            target=measured_run, args=(child, url, args), name="rewards-bench-run"
        )
        tree = TreeRss(process)
        process.start()
        child.close()
        tree.start()
        result = parent.recv()
        process.join()
        tree.stop()
        run = result["run"]
        elapsed = result["elapsed"]
        print(
            f"run {run['status']}: {run['events_evaluated']:,} events, "
            f"{run['aggregate_groups']:,} period groups in range, {run['awards']:,} awards "
            f"(EUR {Decimal(run['total_awarded']):,.2f})"
        )
        print(
            f"run time            {elapsed:8.1f} s   "
            f"{run['events_evaluated'] / elapsed:8,.0f} events/s"
            f"   (workers {args.workers}, chunk {args.chunk_size})"
        )
        print(
            f"CPU of the run      {result['cpu']:8.1f} s   (its child processes "
            f"{result['child_cpu']:.1f} s; the database server's not included)"
        )
        each = ", ".join(f"{rss:.0f}" for rss in tree.peaks.values())
        print(
            f"peak RSS            {tree.peak:8.0f} MB  (the run's process and its children at "
            f"once, sampled every 0.2 s; each process's own peak: {each} MB)"
        )
        start = result["aggregates_from"]
        if start is not None:
            print(
                f"phases              per-event {start:.1f} s, aggregates {elapsed - start:.1f} s"
                "   (to the first aggregate chunk written, and from it)"
            )
        steps = ", ".join(f"{name} {seconds:.1f}" for name, seconds in result["timings"].items())
        print(f"seconds by step     {steps}")
        for offer in run.get("offers") or []:
            print(
                f"  {offer['offer_id']:<28} {offer['awards']:>9,}  "
                f"{Decimal(offer['total_awarded']):>14,.2f}"
            )
        rulesets = load_rulesets(args.rulesets)
        settings = Settings(database_url=url, rulesets_dir=args.rulesets)
        runtime = Runtime(
            settings=settings, evaluator=Evaluator(rulesets), schemas=SchemaRegistry()
        )
        if not args.skip_engine:
            spent, awards = engine_only(database, runtime)
            print(
                f"bare evaluate_many  {spent:8.1f} s   {run['events_evaluated'] / spent:8,.0f} events/s"
                f"   ({awards:,} per-event awards)"
            )
            print(f"ratio run / engine  {elapsed / spent:8.2f}")
        load = os.getloadavg()[0]
        print(
            f"(machine load average {load:.2f} on {os.cpu_count()} CPUs; a fixed Python loop "
            f"took {speed_before:.2f} s before the run and {machine_speed():.2f} s after it: "
            "this machine's speed varies, compare runs made back to back)"
        )
    finally:
        database.dispose()
        if schema is not None and not args.keep:
            admin = create_engine(args.database)
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
