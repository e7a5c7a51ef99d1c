"""Real servers for the tests whose claims need requests that really overlap.

Litestar's test clients run one request at a time, so concurrency is proven here against
``rewards serve`` in a subprocess (its workers are processes of their own, on loopback
and a free port), with requests released together at a barrier, each from a thread and
a connection of its own, and with proof that they overlapped: the moments each was sent
and answered, and which worker held its connection (read from /proc, Linux only)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ROOT

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def until(
    condition: Callable[[], object], what: str, *, timeout: float = 20.0, log: Path | None = None
) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds (with the end of
    the server's log, if there is one)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tail = f"; server log:\n{log.read_text()[-6000:]}" if log is not None else ""
            raise AssertionError(f"not within {timeout} s: {what}{tail}")
        time.sleep(0.02)


# ---- which process holds a connection -------------------------------------------------


def workers(supervisor: int) -> set[int]:
    """The supervisor's worker processes (multiprocessing children, not its helpers)."""
    found: set[int] = set()
    with contextlib.suppress(FileNotFoundError):
        for task in os.listdir(f"/proc/{supervisor}/task"):
            with open(f"/proc/{supervisor}/task/{task}/children") as children:
                for pid in map(int, children.read().split()):
                    with contextlib.suppress(FileNotFoundError):
                        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                        if b"spawn_main" in cmdline:
                            found.add(pid)
    return found


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process ``pid`` has open."""
    inodes = set()
    with contextlib.suppress(FileNotFoundError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def server_side_inodes(server_port: int) -> dict[tuple[str, int], int]:
    """Client (address, port) -> the inode of the server's end of each loopback
    connection to ``server_port`` (/proc/net/tcp writes IPv4 addresses little-endian)."""
    found = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], int(fields[9])
        if int(local.split(":")[1], 16) == server_port and inode:
            address, port = remote.split(":")
            host = socket.inet_ntoa(bytes.fromhex(address)[::-1])
            found[(host, int(port, 16))] = inode
    return found


def connection_owners(
    server_port: int, worker_pids: set[int], connections: Sequence[http.client.HTTPConnection]
) -> list[int | None]:
    """Per connection, the worker process holding its server end (None: not found)."""
    inodes = server_side_inodes(server_port)
    held = {pid: socket_inodes(pid) for pid in worker_pids}
    owners: list[int | None] = []
    for connection in connections:
        assert connection.sock is not None
        inode = inodes.get(connection.sock.getsockname()[:2])
        found = [pid for pid, sockets in held.items() if inode in sockets]
        owners.append(found[0] if len(found) == 1 else None)
    return owners


# ---- rewards serve --------------------------------------------------------------------


class RewardsServer:
    """``rewards serve`` in a process group of its own, on a free port."""

    def __init__(
        self, process: subprocess.Popen[bytes], port: int, log: Path, worker_count: int
    ) -> None:
        self.process = process
        self.port = port
        self.log = log
        self.worker_count = worker_count

    @classmethod
    def start(
        cls,
        database_url: str,
        log: Path,
        *,
        api_key: str,
        workers: int = 1,
        rulesets_dir: Path = ROOT / "rulesets",
        environment: dict[str, str] | None = None,
    ) -> RewardsServer:
        """Started, and ready: every worker has said so and the server answers."""
        port = free_port()
        env = os.environ | {
            "REWARDS_DATABASE_URL": database_url,
            "REWARDS_RULESETS_DIR": str(rulesets_dir),
            "REWARDS_API_KEYS": f"admin:{api_key}",
        }
        argv = [sys.executable, "-m", "rewards.cli", "serve", "--host", HOST, "--port", str(port)]
        argv += ["--workers", str(workers), "--log-level", "warning"]
        logged_before = log.read_text().count("rewards ready") if log.exists() else 0
        with log.open("ab") as out:
            process = subprocess.Popen(
                argv,
                env=env | (environment or {}),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = cls(process, port, log, workers)
        try:
            until(
                lambda: (
                    server.running()
                    and log.read_text().count("rewards ready") - logged_before >= workers
                    and server.answers()
                ),
                f"{workers} worker(s) ready",
                timeout=60,
                log=log,
            )
        except BaseException:
            server.kill()
            raise
        return server

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        assert self.process.poll() is None, f"the server exited:\n{self.log.read_text()[-3000:]}"
        return True

    def answers(self) -> bool:
        with contextlib.suppress(OSError, http.client.HTTPException):
            probe = http.client.HTTPConnection(HOST, self.port, timeout=5)
            try:
                probe.request("GET", "/health")
                return probe.getresponse().status == 200
            finally:
                probe.close()
        return False

    def kill(self) -> None:
        """SIGKILL to the whole process group, reaped."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM to the whole process group (SIGKILL if it has not ended in 30 s)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


def api(server: RewardsServer, api_key: str) -> httpx.Client:
    """A client of ``server`` with ``api_key``."""
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60
    )


def json_of(response: httpx.Response, status: int) -> Any:
    """The answer's JSON (numbers as Decimal), once its status is the one expected."""
    assert response.status_code == status, response.text
    return response.json(parse_float=Decimal)


@contextlib.contextmanager
def rewards_serve(database_url: str, log: Path, **options: Any) -> Iterator[RewardsServer]:
    """A started server (``RewardsServer.start``), stopped when the block ends."""
    server = RewardsServer.start(database_url, log, **options)
    try:
        yield server
    finally:
        server.stop()


# ---- requests released together -------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One request of a burst: its answer (JSON numbers as Decimal), when it was sent and
    answered (``time.perf_counter``), and the worker process that held its connection."""

    status: int
    body: Any
    sent: float
    answered: float
    worker: int


def post_together(
    server: RewardsServer, requests: Sequence[tuple[str, dict[str, Any]]], api_key: str
) -> list[Answer]:
    """POST every ``(path, body)`` at once: each from a thread and a connection of its own,
    all connected (and accepted by a worker) first, then released at one barrier."""
    count = len(requests)
    connections = [http.client.HTTPConnection(HOST, server.port, timeout=120) for _ in requests]
    connected = threading.Barrier(count + 1, timeout=120)
    start = threading.Barrier(count + 1, timeout=120)
    answers: list[tuple[int, Any, float, float] | None] = [None] * count
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}

    def send(i: int, path: str, body: dict[str, Any]) -> None:
        connection = connections[i]
        try:
            connection.connect()
            connected.wait()
            start.wait()
            sent = time.perf_counter()
            connection.request("POST", path, body=json.dumps(body), headers=headers)
            response = connection.getresponse()
            data = response.read()
            answers[i] = (
                response.status,
                json.loads(data, parse_float=Decimal),
                sent,
                time.perf_counter(),
            )
        except BaseException:
            connected.abort()  # the others stop waiting; the missing answer fails the test
            start.abort()
            raise

    threads = [
        threading.Thread(target=send, args=(i, path, body), daemon=True)
        for i, (path, body) in enumerate(requests)
    ]
    try:
        for thread in threads:
            thread.start()
        connected.wait()
        # Every connection accepted (its server end open in a worker) before the release,
        # so which worker answers each request is known.
        pids = workers(server.pid)
        owners: list[int | None] = []

        def all_accepted() -> bool:
            nonlocal owners
            owners = connection_owners(server.port, pids, connections)
            return None not in owners

        until(all_accepted, f"{count} connections accepted by the workers", log=server.log)
        start.wait()
        for thread in threads:
            thread.join(120)
    finally:
        connected.abort()
        start.abort()
        for connection in connections:
            connection.close()
    burst = []
    for answer, worker in zip(answers, owners, strict=True):
        assert answer is not None and worker is not None, "a request of the burst got no answer"
        burst.append(Answer(*answer, worker))
    return burst


def peak_in_flight(answers: Sequence[Answer]) -> int:
    """The most requests that were sent and not yet answered at one moment."""
    moments = sorted([(a.sent, 1) for a in answers] + [(a.answered, -1) for a in answers])
    peak = running = 0
    for _, step in moments:  # at the same instant an answer (-1) sorts before a send
        running += step
        peak = max(peak, running)
    return peak


def overlapped_across_workers(answers: Sequence[Answer]) -> bool:
    """Whether a request answered by one worker was in flight while another worker's was."""
    return any(
        a.worker != b.worker and a.sent < b.answered and b.sent < a.answered
        for a in answers
        for b in answers
    )


def assert_overlapped(answers: Sequence[Answer], server: RewardsServer) -> None:
    """Proof that the burst ran concurrently: requests in flight together, and with
    several workers, on every worker and across workers at once."""
    peak = peak_in_flight(answers)
    assert peak >= 2, f"the requests never overlapped (at most {peak} in flight)"
    served = {a.worker for a in answers}
    if server.worker_count > 1:
        assert len(served) == server.worker_count, f"only workers {served} answered"
        assert overlapped_across_workers(answers), "no two workers were busy at once"
