"""Real servers for tests: ``rewards serve`` in a subprocess (its workers are processes
of their own, on loopback and a free port), and which worker holds a connection (read
from /proc, Linux only)."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

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


def server_side_inodes(server_port: int) -> dict[int, int]:
    """Client port -> the inode of the server's end of each loopback connection to
    ``server_port``."""
    found = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], int(fields[9])
        if int(local.split(":")[1], 16) == server_port and inode:
            found[int(remote.split(":")[1], 16)] = inode
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
        inode = inodes.get(connection.sock.getsockname()[1])
        found = [pid for pid, sockets in held.items() if inode in sockets]
        owners.append(found[0] if len(found) == 1 else None)
    return owners


# ---- rewards serve --------------------------------------------------------------------


class RewardsServer:
    """``rewards serve`` in a process group of its own, on a free port."""

    def __init__(
        self, process: subprocess.Popen[bytes], port: int, log: Path, workers: int
    ) -> None:
        self.process = process
        self.port = port
        self.log = log
        self.workers = workers

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


@contextlib.contextmanager
def rewards_serve(database_url: str, log: Path, **options: Any) -> Iterator[RewardsServer]:
    """A started server (``RewardsServer.start``), stopped when the block ends."""
    server = RewardsServer.start(database_url, log, **options)
    try:
        yield server
    finally:
        server.stop()
