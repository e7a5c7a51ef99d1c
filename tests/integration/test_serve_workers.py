"""``rewards serve --workers 2`` spreads keep-alive connections over both workers (each
has a listening socket of its own, runtime.workers): with one shared socket one worker
could accept them all while the other idles."""

from __future__ import annotations

import http.client
from collections import Counter
from pathlib import Path

from tests.serving import HOST, connection_owners, rewards_serve, workers


def test_two_workers_share_the_connections(tmp_path: Path) -> None:
    connections: list[http.client.HTTPConnection] = []
    with rewards_serve(
        f"sqlite:///{tmp_path / 'workers.db'}",
        tmp_path / "server.log",
        api_key="workers-admin-key",
        workers=2,
    ) as server:
        try:
            for _ in range(16):  # keep-alive connections, as a POS fleet or wrk holds them
                connection = http.client.HTTPConnection(HOST, server.port, timeout=10)
                connection.request("GET", "/health")
                response = connection.getresponse()
                response.read()
                assert response.status == 200
                connections.append(connection)
            pids = workers(server.pid)
            assert len(pids) == 2
            owners = Counter(connection_owners(server.port, pids, connections))
        finally:
            for connection in connections:
                connection.close()
    assert None not in owners, f"a connection not found in exactly one worker: {owners}"
    assert sum(owners.values()) == 16
    assert set(owners) == pids, f"one worker idles: {owners}"
