"""``rewards serve --workers 2`` spreads keep-alive connections over both workers (each
has a listening socket of its own, runtime.workers): with one shared socket one worker
could accept them all while the other idles."""

from __future__ import annotations

import contextlib
import http.client
import os
from pathlib import Path

from tests.integration.serving import rewards_serve
from tests.integration.test_serve_recycle import HOST, _until, _workers


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
    with rewards_serve(tmp_path, workers=2) as served, contextlib.ExitStack() as closing:
        server, port, log = served.process, served.port, served.log
        _until(lambda: len(_workers(server.pid)) == 2, 60, "two workers", log)
        _until(served.answers, 60, "the server answers", log)
        connections: list[http.client.HTTPConnection] = []
        for _ in range(16):  # keep-alive connections, as a POS fleet or wrk holds them
            connection = http.client.HTTPConnection(HOST, port, timeout=10)
            closing.callback(connection.close)
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
