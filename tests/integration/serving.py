"""``rewards serve`` in a subprocess for the tests that need the real command: a free
port, a SQLite database under the test's folder, the shipped rulesets, an admin key."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT
from tests.integration.test_serve_recycle import HOST, _free_port

ADMIN_KEY = "serve-admin-key"


@dataclass(frozen=True)
class Served:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def answers(self) -> bool:
        """Whether GET /health answers 200 now (a probe for ``_until``)."""
        with contextlib.suppress(OSError):
            probe = http.client.HTTPConnection(HOST, self.port, timeout=5)
            try:
                probe.request("GET", "/health")
                return probe.getresponse().status == 200
            finally:
                probe.close()
        return False


@contextlib.contextmanager
def rewards_serve(
    folder: Path, *, workers: int = 1, env: Mapping[str, str] | None = None
) -> Iterator[Served]:
    """The server, stopped with its workers (SIGTERM, then SIGKILL) when the block ends."""
    log = folder / "server.log"
    port = _free_port()
    environment = os.environ | {
        "REWARDS_DATABASE_URL": f"sqlite:///{folder / 'served.db'}",
        "REWARDS_RULESETS_DIR": str(ROOT / "rulesets"),
        "REWARDS_API_KEYS": f"admin:{ADMIN_KEY}",
        **(env or {}),
    }
    argv = [sys.executable, "-m", "rewards.cli", "serve", "--host", HOST, "--port", str(port)]
    argv += ["--workers", str(workers), "--log-level", "warning"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            env=environment,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Served(process, port, log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
