"""HTTP throughput of purchase intake: a real ``rewards serve`` against a floor, on loopback.

    .venv/bin/python bench/http_load.py [--seconds 20] [--concurrency 16] [--contacts 200]
        [--databases sqlite,postgres] [--workers 1,2] [--load auto|wrk|python]
        [--postgres-url URL] [--json FILE] [--py-spy BIN --profile-dir DIR]

For each database (a SQLite file in a temporary folder; a PostgreSQL schema of its own,
dropped afterwards) and each worker count:

1. floor: the shared floor app (``../shared/bench/floor_app.py``, run as it is: Litestar,
   a jsonschema check, msgspec decode, Decimal totals, one SQLite insert in its own
   transaction behind a cross-process writer lock) with the same worker count, each
   worker on its own ``SO_REUSEPORT`` socket as ``rewards serve`` does, driven with the
   same purchases (the fields its schema allows) at ``POST /v1/events/purchases``;
2. rewards: ``rewards serve --workers N`` on a fresh database with the shipped rulesets
   (``rulesets/``, 20+ offers), ``--contacts`` contacts (gold / silver / staff / no
   segments), then ``POST /v1/events/purchases``: 5 product lines (coffee, pastries,
   beans, gift cards, groceries...), ``process_immediately: true``, a unique
   ``external_system``/``external_reference``, a payment medium, over one fixed week of
   March 2026 (so the same offers stay valid whatever the day the bench runs).

Each target gets a warm-up (``--warmup`` seconds) and then ``--seconds`` of closed-loop
load at ``--concurrency`` keep-alive connections. The load generator is ``wrk`` when it
is on the PATH (Debian: ``apt-get install wrk``), else a built-in asyncio HTTP/1.1 client
(``--load python`` forces it). Printed per run: requests/s, p50/p99 latency, errors
(non-2xx answers and socket errors), the server's CPU per request (all its processes,
from /proc), the load generator's CPU, the CPU that *other* processes of the machine
used during the window (a busy machine shows up there), the server's resident memory
after the warm-up and at the end (a soak: ``--seconds 600 --targets rewards``), and the
ratio to the floor.

The goal (issue 15) on a 2-core machine: on SQLite with 2 workers >= 1,000 purchases/s,
p99 <= 50 ms, >= 0.4 of the floor measured in the same run and no errors; on PostgreSQL
>= 800 purchases/s, p99 <= 80 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
FLOOR_APP = ROOT.parent / "shared" / "bench" / "floor_app.py"
HOST = "127.0.0.1"
API_KEY = "bench-admin-key"
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CLK_TCK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1

SKUS = [
    "COFFEE-LATTE",
    "COFFEE-ESPRESSO",
    "PASTRY-CROISSANT",
    "SANDWICH-CLUB",
    "BEANS-PREMIUM-KENYA",
    "BEANS-HOUSE",
    "GC-25",
    "GROCERY-MILK",
    "GROCERY-BREAD",
    "TEA-GREEN",
]
UNITS = ["store-001", "store-002", "store-003"]
SEGMENTS = [["gold"], ["gold"], ["silver"], ["gold", "staff"], []]
MEDIA = [
    {"brand": "visa", "type": "credit"},
    {"brand": "visa", "type": "debit"},
    {"brand": "mastercard", "type": "credit"},
    {"brand": "electron", "type": "debit"},
    {"identifier": "4917480000000008"},  # brand and type set by the definition's automation
]
WEEK_START = datetime(2026, 3, 2, tzinfo=UTC)
REF_MARK = "@@REF@@"


# ---- bodies -----------------------------------------------------------------------------


def purchase_templates(
    wallets: list[str], count: int, seed: int, *, floor: bool = False
) -> list[tuple[str, str]]:
    """``count`` purchase bodies as (text before, text after) the external reference;
    ``floor``: the same purchases cut to the fields the floor app accepts."""
    rng = random.Random(seed)
    templates = []
    for i in range(count):
        lines = []
        for _ in range(5):
            net = rng.randint(100, 6000)
            lines.append(  # amounts as JSON numbers, as clients send them
                {
                    "sku": rng.choice(SKUS),
                    "quantity": rng.randint(1, 3),
                    "net_amount": RawNumber(f"{net / 100:.2f}"),
                    "vat_amount": RawNumber(f"{net * 19 // 100 / 100:.2f}"),
                }
            )
        body = {
            "contact": {"wallet_code": rng.choice(wallets)},
            "performed_on": (
                WEEK_START + timedelta(minutes=rng.randrange(7 * 24 * 60))
            ).isoformat(),
            "performed_by_unit": rng.choice(UNITS),
            "reference_number": f"R-{i}",
            "process_immediately": True,
            "external_system": "bench",
            "external_reference": REF_MARK,
            "payment_medium": rng.choice(MEDIA),
            "products": lines,
        }
        if floor:  # only the fields the floor's schema allows
            body = {key: body[key] for key in FLOOR_FIELDS}
        before, after = dumps(body).split(REF_MARK)
        templates.append((before, after))
    return templates


FLOOR_FIELDS = (
    "contact", "performed_on", "performed_by_unit", "reference_number", "external_reference",
    "products",
)  # fmt: skip


class RawNumber(str):
    """A decimal written into the JSON as a number (``12.30``), never through a float."""


def dumps(value: object) -> str:
    """Compact JSON, ``RawNumber`` values as bare numbers."""
    if isinstance(value, RawNumber):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value)


# ---- processes --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def tree_pids(root: int) -> list[int]:
    """``root`` and every live descendant."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU of ``root`` and every live descendant."""
    total = 0
    for pid in tree_pids(root):
        if (fields := _stat_fields(pid)) is not None:
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def tree_rss_mb(root: int) -> float:
    """Resident memory of ``root`` and every live descendant, in MB."""
    total = 0
    for pid in tree_pids(root):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK


class Server:
    """A server process group on loopback, always stopped by ``stop`` (SIGTERM, then SIGKILL)."""

    def __init__(
        self, argv: list[str], env: dict[str, str], log: Path, port: int, ready: str = "/health"
    ) -> None:
        self.port = port
        self.ready = ready  # GET path answering 200 once it serves (None: a TCP connect)
        self.log = log
        self._log_file = log.open("wb")
        self.process = subprocess.Popen(
            argv,
            env=env,
            cwd=ROOT,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError, OSError):
                if not self.ready:
                    socket.create_connection((HOST, self.port), timeout=2).close()
                    return
                if httpx.get(f"{self.url}{self.ready}", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log.read_text()[-3000:]}")

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # stragglers of the group
        self.process.wait(timeout=15)
        self._log_file.close()


def _python() -> str:
    return sys.executable


def start_rewards(database_url: str, workers: int, log: Path) -> Server:
    port = free_port()
    env = os.environ | {
        "REWARDS_DATABASE_URL": database_url,
        "REWARDS_RULESETS_DIR": str(ROOT / "rulesets"),
        "REWARDS_API_KEYS": f"admin:{API_KEY}",
    }
    argv = [_python(), "-m", "rewards.cli", "serve", "--host", HOST, "--port", str(port)]
    argv += ["--workers", str(workers), "--log-level", "warning"]
    return Server(argv, env, log, port)


def start_receiver(log: Path) -> Server:
    """bench/webhook_receiver.py: answers 204 to every webhook, as cheaply as it can."""
    port = free_port()
    argv = [_python(), str(ROOT / "bench" / "webhook_receiver.py"), str(port)]
    server = Server(argv, dict(os.environ), log, port, ready=None)
    server.wait_ready()
    return server


def subscribe(url: str, receiver_url: str) -> None:
    """A webhook of every notification type to the receiver (POST /v1/webhooks)."""
    answer = httpx.post(
        f"{url}/v1/webhooks",
        json={"url": f"{receiver_url}/hook", "event_types": ["*"]},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    answer.raise_for_status()


def delivery_note(database_url: str, receiver: Server) -> str:
    """How far the dispatcher got while the load ran: deliveries made of those due."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = dict(
            connection.execute(
                text("SELECT status, count(*) FROM deliveries GROUP BY status")
            ).all()
        )
        outbox = connection.execute(text("SELECT count(*) FROM outbox")).scalar()
    engine.dispose()
    return (
        f"webhook: {rows.get('delivered', 0):,} delivered, {rows.get('pending', 0):,} pending "
        f"of {outbox:,} notifications at the end of the run"
    )


def start_floor(floor_app: Path, database: Path, workers: int, log: Path) -> Server:
    """The shared floor app as its docstring says to run it (its own SQLite file)."""
    port = free_port()
    env = os.environ | {"FLOOR_DB": str(database)}
    argv = [_python(), str(floor_app), "--port", str(port), "--workers", str(workers)]
    return Server(argv, env, log, port, ready="")


# ---- databases --------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(kind: str, workdir: Path, postgres_url: str, name: str) -> Iterator[str]:
    """A SQLite file in ``workdir``, or a PostgreSQL schema of its own (dropped after)."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / name}.db"
        return
    from sqlalchemy import create_engine, text

    schema = f"bench_{name}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(postgres_url)
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        separator = "&" if "?" in postgres_url else "?"
        yield f"{postgres_url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def postgres_available(url: str) -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        from sqlalchemy import create_engine, text

        engine = create_engine(url)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as error:  # any failure means "not here"
        return str(error).splitlines()[0]


# ---- load generators --------------------------------------------------------------------


@dataclass
class LoadResult:
    requests: int = 0  # completed with a 2xx answer
    errors: int = 0  # non-2xx answers and socket errors
    seconds: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    generator_cpu_s: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    server_cpu_s: float = 0.0  # every process of the server, during the window
    rss_start_mb: float = 0.0  # the server's resident memory after the warm-up
    rss_end_mb: float = 0.0  # and after the measured window
    others_cpu_s: float = 0.0  # every other process of the machine, during the window


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
local before = {%(before)s}
local after = {%(after)s}
local counter = 0
local prefix = "x"
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  prefix = args[1] .. "-" .. tostring(tid)
  counter = tid * 7919
end

function request()
  counter = counter + 1
  local i = counter %% #before + 1
  return wrk.format(nil, "%(path)s", nil, before[i] .. prefix .. "-" .. counter .. after[i])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,' ..
    '"status":%%d,"timeout":%%d,"p50_us":%%d,"p99_us":%%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(
    url: str,
    path: str,
    templates: list[tuple[str, str]],
    seconds: float,
    concurrency: int,
    workdir: Path,
    tag: str,
) -> LoadResult:
    script = workdir / f"{tag}.lua"
    script.write_text(
        WRK_SCRIPT
        % {
            "key": API_KEY,
            "path": path,
            "before": ",".join(_lua_string(b) for b, _ in templates),
            "after": ",".join(_lua_string(a) for _, a in templates),
        }
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
    argv += ["-s", str(script), url, "--", f"{tag}-{uuid.uuid4().hex[:6]}"]
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    match = re.search(r"WRKJSON (\{.*\})", completed.stdout)
    if completed.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed:\n{completed.stdout}\n{completed.stderr}")
    raw = json.loads(match.group(1))
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    return LoadResult(
        requests=raw["requests"] - raw["status"],
        errors=errors,
        seconds=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        generator_cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        statuses={"non_2xx": raw["status"], "socket": errors - raw["status"]},
    )


async def _python_load(
    port: int,
    path: str,
    templates: list[tuple[str, str]],
    seconds: float,
    concurrency: int,
    tag: str,
) -> tuple[list[float], dict[str, int], float]:
    prefix = f"{tag}-{uuid.uuid4().hex[:6]}"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {API_KEY}\r\n"
    ).encode()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    counter = iter(range(10**12))
    started = time.perf_counter()
    deadline = started + seconds

    async def connection(number: int) -> None:
        reader = writer = None
        while time.perf_counter() < deadline:
            if writer is None:
                try:
                    reader, writer = await asyncio.open_connection(HOST, port)
                except OSError:
                    statuses["socket"] = statuses.get("socket", 0) + 1
                    await asyncio.sleep(0.05)
                    continue
            assert reader is not None
            seq = next(counter)
            before, after = templates[seq % len(templates)]
            body = f"{before}{prefix}-{number}-{seq}{after}".encode()
            sent = time.perf_counter()
            writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            try:
                header = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                found = re.search(rb"(?i)\r\ncontent-length: *(\d+)", header)
                await reader.readexactly(int(found.group(1)) if found else 0)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                statuses["socket"] = statuses.get("socket", 0) + 1
                writer.close()
                reader = writer = None
                continue
            latencies.append(time.perf_counter() - sent)
            status = header[9:12].decode()
            statuses[status] = statuses.get(status, 0) + 1
            if re.search(rb"(?i)\r\nconnection: *close", header):
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    await asyncio.wait_for(
        asyncio.gather(*(connection(n) for n in range(concurrency))), seconds + 60
    )
    return latencies, statuses, time.perf_counter() - started


def run_python(
    port: int,
    path: str,
    templates: list[tuple[str, str]],
    seconds: float,
    concurrency: int,
    tag: str,
) -> LoadResult:
    cpu = time.process_time()
    latencies, statuses, elapsed = asyncio.run(
        _python_load(port, path, templates, seconds, concurrency, tag)
    )
    cpu = time.process_time() - cpu
    ok = sum(n for status, n in statuses.items() if status.startswith("2"))
    ordered = sorted(latencies)

    def percentile(p: float) -> float:
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000

    return LoadResult(
        requests=ok,
        errors=sum(statuses.values()) - ok,
        seconds=elapsed,
        p50_ms=statistics.median(ordered) * 1000 if ordered else 0.0,
        p99_ms=percentile(0.99),
        generator_cpu_s=cpu,
        statuses=statuses,
    )


# ---- one measured target ----------------------------------------------------------------


@dataclass
class Row:
    db: str
    workers: int
    target: str  # floor | rewards
    generator: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu_ms_per_req: float
    generator_cpu_pct: float  # of one core
    others_cpu_pct: float  # of the machine's cores: other processes during the window
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    ratio_to_floor: float | None = None
    note: str = ""


def measure(
    server: Server,
    path: str,
    templates: list[tuple[str, str]],
    args: argparse.Namespace,
    workdir: Path,
    tag: str,
    generator: str,
    profile: Callable[[], Callable[[], None]] | None,
) -> LoadResult:
    def load(seconds: float, name: str) -> LoadResult:
        if generator == "wrk":
            return run_wrk(server.url, path, templates, seconds, args.concurrency, workdir, name)
        return run_python(server.port, path, templates, seconds, args.concurrency, name)

    if args.warmup > 0:
        load(args.warmup, f"{tag}-warm")
    stop_profile = profile() if profile else None
    rss_start = tree_rss_mb(server.process.pid)
    server_cpu, busy = server.cpu_seconds(), machine_busy_seconds()
    result = load(args.seconds, tag)
    server_cpu, busy = server.cpu_seconds() - server_cpu, machine_busy_seconds() - busy
    result.rss_start_mb, result.rss_end_mb = rss_start, tree_rss_mb(server.process.pid)
    if stop_profile:
        stop_profile()
    result.server_cpu_s = server_cpu
    result.others_cpu_s = max(0.0, busy - server_cpu - result.generator_cpu_s)
    return result


def to_row(db: str, workers: int, target: str, generator: str, result: LoadResult) -> Row:
    server_cpu, others = result.server_cpu_s, result.others_cpu_s
    done = max(result.requests + result.errors, 1)
    return Row(
        db=db,
        workers=workers,
        target=target,
        generator=generator,
        rps=result.requests / result.seconds if result.seconds else 0.0,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        errors=result.errors,
        server_cpu_ms_per_req=server_cpu * 1000 / done,
        generator_cpu_pct=100 * result.generator_cpu_s / result.seconds if result.seconds else 0,
        others_cpu_pct=100 * others / (result.seconds * CORES) if result.seconds else 0,
        rss_start_mb=result.rss_start_mb,
        rss_end_mb=result.rss_end_mb,
    )


def create_contacts(url: str, count: int, seed: int) -> list[str]:
    """``count`` contacts with a mix of segments; their wallet codes."""
    rng = random.Random(seed)
    bodies = [{"segments": rng.choice(SEGMENTS)} for _ in range(count)]
    lock = threading.Lock()
    wallets: list[str] = []
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
    ) as client:

        def create(body: dict[str, object]) -> None:
            response = client.post("/v1/contacts", json=body)
            response.raise_for_status()
            with lock:
                wallets.append(response.json()["wallet"]["code"])

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, bodies))
    return sorted(wallets)


def check_sample(url: str) -> str:
    """One purchase the bench sent, read back: evaluated, with awards (a sanity check)."""
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
    ) as client:
        items = client.get("/v1/events", params={"type": "purchase", "limit": 200}).json()["items"]
    evaluated = sum(1 for item in items if item["evaluated"])
    awarded = sum(1 for item in items if item["awards"])
    return f"last {len(items)} purchases: {evaluated} evaluated, {awarded} with awards"


def py_spy_profiler(
    binary: str | None, server: Server, out: Path, seconds: float
) -> Callable[[], Callable[[], None]] | None:
    if not binary:
        return None

    def start() -> Callable[[], None]:
        argv = [binary, "record", "--pid", str(server.process.pid), "--subprocesses"]
        argv += ["--format", "raw", "--rate", "200", "--nonblocking", "--output", str(out)]
        argv += ["--idle"] if os.environ.get("BENCH_PY_SPY_IDLE") else []
        argv += ["--duration", str(max(1, int(seconds)))]
        spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def stop() -> None:
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()

        return stop

    return start


# ---- main -------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    lines = [
        "| db | workers | endpoint | requests/s | p50 ms | p99 ms | errors "
        "| server CPU ms/req | load gen CPU % | others' CPU % | RSS MB start → end | vs floor "
        "| note |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ratio = f"{r.ratio_to_floor:.2f}" if r.ratio_to_floor is not None else ""
        lines.append(
            f"| {r.db} | {r.workers} | {r.target} | {r.rps:,.0f} | {r.p50_ms:.1f} "
            f"| {r.p99_ms:.1f} | {r.errors} | {r.server_cpu_ms_per_req:.2f} "
            f"| {r.generator_cpu_pct:.0f} | {r.others_cpu_pct:.0f} "
            f"| {r.rss_start_mb:.0f} → {r.rss_end_mb:.0f} | {ratio} | {r.note} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per target")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--contacts", type=int, default=200)
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument(
        "--targets",
        default="floor,rewards",
        help="floor, rewards, webhook (rewards with a webhook of every notification subscribed; "
        "its note says how far the dispatcher got)",
    )
    parser.add_argument("--load", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("REWARDS_TEST_POSTGRES_URL") or DEFAULT_POSTGRES,
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--py-spy", help="py-spy binary: profile each rewards run")
    parser.add_argument("--profile-dir", type=Path, default=Path("bench-profiles"))
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    parser.add_argument(
        "--floor", type=Path, default=FLOOR_APP, help="the shared floor app (floor_app.py)"
    )
    args = parser.parse_args(argv)

    generator = args.load
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "python"
    if generator == "wrk" and not shutil.which("wrk"):
        parser.error("--load wrk: wrk is not on the PATH")
    databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    workers_list = [int(w) for w in args.workers.split(",")]
    targets = [t.strip() for t in args.targets.split(",")]
    if "postgres" in databases and (why := postgres_available(args.postgres_url)):
        print(f"PostgreSQL not reachable ({why}); measuring SQLite only", flush=True)
        databases.remove("postgres")
    if "floor" in targets and not args.floor.is_file():
        parser.error(f"--floor {args.floor}: no such file (the shared bench/floor_app.py)")
    if args.py_spy:
        args.profile_dir.mkdir(parents=True, exist_ok=True)

    workdir = Path(tempfile.mkdtemp(prefix="rewards-bench-"))
    print(
        f"load generator: {generator}; {args.concurrency} connections; {args.seconds:g} s "
        f"(+{args.warmup:g} s warm-up) per target; {CORES} cores; work folder {workdir}",
        flush=True,
    )
    rows: list[Row] = []
    try:
        for db in databases:
            for workers in workers_list:
                floor_row: Row | None = None
                plain_row: Row | None = None
                for target in targets:
                    tag = f"{db}-w{workers}-{target}"
                    with fresh_database(
                        db, workdir, args.postgres_url, tag.replace("-", "_")
                    ) as url:
                        path = "/v1/events/purchases"
                        if target == "floor":  # always SQLite: the floor of this stack
                            floor_db = workdir / f"{tag}-floor.db"
                            server = start_floor(
                                args.floor, floor_db, workers, workdir / f"{tag}.log"
                            )
                        else:
                            server = start_rewards(url, workers, workdir / f"{tag}.log")
                        receiver = None
                        try:
                            server.wait_ready()
                            if target == "webhook":  # rewards, with a webhook subscribed
                                receiver = start_receiver(workdir / f"{tag}-receiver.log")
                                subscribe(server.url, receiver.url)
                            if target != "floor":
                                wallets = create_contacts(server.url, args.contacts, args.seed)
                            else:
                                wallets = [f"W{i:06d}" for i in range(args.contacts)]
                            templates = purchase_templates(
                                wallets, 1000, args.seed, floor=target == "floor"
                            )
                            profile = None
                            if target != "floor":
                                profile = py_spy_profiler(
                                    args.py_spy,
                                    server,
                                    args.profile_dir / f"{tag}.txt",
                                    args.seconds,
                                )
                            result = measure(
                                server, path, templates, args, workdir, tag, generator, profile
                            )
                            note = check_sample(server.url) if target != "floor" else ""
                            if receiver is not None:
                                note += f" {delivery_note(url, receiver)}"
                        finally:
                            server.stop()
                            if receiver is not None:
                                receiver.stop()
                    row = to_row(db, workers, target, generator, result)
                    if target == "floor":
                        floor_row = row
                    elif target == "rewards":
                        plain_row = row
                    if target == "webhook" and plain_row is not None and plain_row.rps:
                        row.note = f"{row.rps / plain_row.rps:.2f} of rewards without"
                    if target != "floor" and floor_row is not None and floor_row.rps:
                        row.ratio_to_floor = row.rps / floor_row.rps
                    rows.append(row)
                    print(
                        f"  {tag}: {row.rps:,.0f} req/s, p50 {row.p50_ms:.1f} ms, "
                        f"p99 {row.p99_ms:.1f} ms, errors {row.errors} {result.statuses} {note}",
                        flush=True,
                    )
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(table(rows))
    for r in rows:
        if r.workers != 2 or r.target != "rewards":
            continue
        if r.db == "sqlite":
            met = r.rps >= 1000 and r.p99_ms <= 50 and (r.ratio_to_floor or 0) >= 0.4
            met = met and r.errors == 0
            goal = ">= 1,000/s, p99 <= 50 ms, >= 0.4 of the floor, no errors"
        else:
            met = r.rps >= 800 and r.p99_ms <= 80 and r.errors == 0
            goal = ">= 800/s, p99 <= 80 ms, no errors"
        print(f"goal ({r.db}, 2 workers: {goal}): {'met' if met else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
