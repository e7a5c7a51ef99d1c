"""``rewards serve --workers 2`` spreads keep-alive connections over both workers (each
has a listening socket of its own, runtime.workers): with one shared socket one worker
could accept them all while the other idles."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.integration.test_serve_recycle import HOST, _free_port, _until, _workers


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    with contextlib.suppress(FileNotFoundError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def _server_side_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the server's end of the loopback connection from ``client_port``."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], int(fields[9])
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == (
            client_port
        ):
            return inode
    return None


def test_two_workers_share_the_connections(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    port = _free_port()
    env = os.environ | {
        "REWARDS_DATABASE_URL": f"sqlite:///{tmp_path / 'workers.db'}",
        "REWARDS_RULESETS_DIR": str(ROOT / "rulesets"),
        "REWARDS_API_KEYS": "admin:workers-admin-key",
    }
    argv = [sys.executable, "-m", "rewards.cli", "serve", "--host", HOST, "--port", str(port)]
    argv += ["--workers", "2", "--log-level", "warning"]
    with log.open("wb") as out:
        server = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    connections: list[http.client.HTTPConnection] = []
    try:
        _until(lambda: len(_workers(server.pid)) == 2, 60, "two workers", log)

        def both_serve() -> bool:
            with contextlib.suppress(OSError):
                probe = http.client.HTTPConnection(HOST, port, timeout=5)
                probe.request("GET", "/health")
                ok = probe.getresponse().status == 200
                probe.close()
                return ok
            return False

        _until(both_serve, 60, "the server answers", log)
        for _ in range(16):  # keep-alive connections, as a POS fleet or wrk holds them
            connection = http.client.HTTPConnection(HOST, port, timeout=10)
            connection.request("GET", "/health")
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            connections.append(connection)
        workers = _workers(server.pid)
        owners: dict[int, int] = dict.fromkeys(workers, 0)
        for connection in connections:
            assert connection.sock is not None
            inode = _server_side_inode(port, connection.sock.getsockname()[1])
            owner = [pid for pid in workers if inode in _socket_inodes(pid)]
            assert len(owner) == 1, f"connection not found in one worker: {owner}"
            owners[owner[0]] += 1
        assert sum(owners.values()) == 16
        assert all(count > 0 for count in owners.values()), f"one worker idles: {owners}"
    finally:
        for connection in connections:
            connection.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
