"""``rewards serve --workers 2`` spreads keep-alive connections over both workers (each
has a listening socket of its own, runtime.workers): with one shared socket one worker
could accept them all while the other idles."""

from __future__ import annotations

import http.client
from pathlib import Path

from tests.conftest import ROOT
from tests.integration.served import HOST, connection_owner, rewards_serve, worker_pids


def test_two_workers_share_the_connections(tmp_path: Path) -> None:
    env = {
        "REWARDS_DATABASE_URL": f"sqlite:///{tmp_path / 'workers.db'}",
        "REWARDS_RULESETS_DIR": str(ROOT / "rulesets"),
        "REWARDS_API_KEYS": "admin:workers-admin-key",
    }
    connections: list[http.client.HTTPConnection] = []
    with rewards_serve(env, tmp_path / "server.log", workers=2) as served:
        try:
            for _ in range(16):  # keep-alive connections, as a POS fleet or wrk holds them
                connection = http.client.HTTPConnection(HOST, served.port, timeout=10)
                connection.request("GET", "/health")
                response = connection.getresponse()
                response.read()
                assert response.status == 200
                connections.append(connection)
            owners = dict.fromkeys(worker_pids(served.process.pid), 0)
            for connection in connections:
                owners[connection_owner(served, connection)] += 1
            assert sum(owners.values()) == 16
            assert all(count > 0 for count in owners.values()), f"one worker idles: {owners}"
        finally:
            for connection in connections:
                connection.close()
