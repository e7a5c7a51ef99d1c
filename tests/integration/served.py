"""``rewards serve`` as a real subprocess for tests: a free port, its worker processes,
and which worker holds a client's connection (read from /proc)."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def worker_pids(supervisor: int) -> set[int]:
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


def until(condition: Callable[[], object], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}; server log:\n{log.read_text()[-6000:]}")


@dataclass(frozen=True)
class Served:
    process: subprocess.Popen[bytes]
    port: int
    log: Path


def _answers_health(port: int) -> bool:
    with contextlib.suppress(OSError):
        probe = http.client.HTTPConnection(HOST, port, timeout=5)
        probe.request("GET", "/health")
        ok = probe.getresponse().status == 200
        probe.close()
        return ok
    return False


@contextlib.contextmanager
def rewards_serve(env: Mapping[str, str], log: Path, workers: int) -> Iterator[Served]:
    """``rewards serve --workers N`` on a free port with ``env`` added to this
    environment, once every worker is up and the server answers; stopped afterwards."""
    port = free_port()
    argv = [sys.executable, "-m", "rewards.cli", "serve", "--host", HOST, "--port", str(port)]
    argv += ["--workers", str(workers), "--log-level", "warning"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            env=os.environ | dict(env),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        until(lambda: len(worker_pids(process.pid)) == workers, 60, f"{workers} workers", log)
        until(lambda: _answers_health(port), 60, "the server answers", log)
        yield Served(process=process, port=port, log=log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    with contextlib.suppress(FileNotFoundError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def _server_side_inode(server_port: int, client: tuple[str, int]) -> int | None:
    """The inode of the server's end of the loopback connection from ``client``
    (address, port): /proc/net/tcp writes an IPv4 address as little-endian hex."""
    remote = f"{socket.inet_aton(client[0])[::-1].hex().upper()}:{client[1]:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == server_port and fields[2] == remote:
            return int(fields[9])
    return None


def connection_owner(served: Served, connection: http.client.HTTPConnection) -> int:
    """The worker process that holds the server's end of an open ``connection``."""
    assert connection.sock is not None
    inode = _server_side_inode(served.port, connection.sock.getsockname())
    owners = [pid for pid in worker_pids(served.process.pid) if inode in _socket_inodes(pid)]
    assert len(owners) == 1, f"connection not found in one worker: {owners}"
    return owners[0]
