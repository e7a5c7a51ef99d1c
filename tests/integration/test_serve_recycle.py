"""A worker of ``rewards serve`` (one worker or two) that built more engine rulesets by
reloads than ``REWARDS_RECYCLE_AFTER_RULESETS`` stops gracefully and uvicorn's
supervisor starts a fresh one (durable-rules never gives back the memory of discarded
rules): requests keep being served (no 5xx), the fresh workers serve the new version,
and they do not restart again."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from rewards.engine.loader import folder_version
from tests.conftest import ROOT

HOST = "127.0.0.1"
API_KEY = "recycle-admin-key"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _workers(supervisor: int) -> set[int]:
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


def _until(condition, timeout: float, what: str, log: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}; server log:\n{log.read_text()[-6000:]}")


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_past_their_engine_budget_are_replaced(tmp_path: Path, workers: int) -> None:
    folder = tmp_path / "rulesets"
    shutil.copytree(ROOT / "rulesets", folder)
    log = tmp_path / "server.log"
    port = _free_port()
    url = f"http://{HOST}:{port}"
    env = os.environ | {
        "REWARDS_DATABASE_URL": f"sqlite:///{tmp_path / 'recycle.db'}",
        "REWARDS_RULESETS_DIR": str(folder),
        "REWARDS_API_KEYS": f"admin:{API_KEY}",
        "REWARDS_RECYCLE_AFTER_RULESETS": "1",
    }
    argv = [sys.executable, "-m", "rewards.cli", "serve", "--host", HOST, "--port", str(port)]
    argv += ["--workers", str(workers), "--log-level", "warning"]
    with log.open("wb") as out:
        server = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    headers = {"Authorization": f"Bearer {API_KEY}"}
    statuses: list[int] = []
    stop = threading.Event()

    def version() -> str | None:
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(f"{url}/v1/rulesets", headers=headers, timeout=5)
            statuses.append(response.status_code)
            return str(response.json()["version"])
        return None

    def traffic() -> None:
        while not stop.is_set():
            version()

    try:
        # Both workers up with the shipped folder before the edit (a worker still
        # starting would load the edited folder and have nothing to reload).
        _until(
            lambda: log.read_text().count("rewards ready") == workers and version() is not None,
            60,
            "every worker ready",
            log,
        )
        first = _workers(server.pid)
        assert len(first) == workers
        client = threading.Thread(target=traffic)
        client.start()
        # A shape edit (a new segment code): each worker's watcher reloads it and builds
        # one new engine ruleset, which spends the budget of 1.
        path = folder / "achievement.yaml"
        edit = path.with_name("achievement.yaml.partial")  # not *.yaml: never loaded
        edit.write_text(path.read_text().replace("include: [staff]", "include: [staff, crew]"))
        os.replace(edit, path)
        edited = folder_version(folder)
        _until(
            lambda: len(now := _workers(server.pid)) == workers and not now & first,
            60,
            "every worker replaced",
            log,
        )
        _until(lambda: all(version() == edited for _ in range(6)), 30, "the edit served", log)
        second = _workers(server.pid)
        time.sleep(3)  # the fresh workers loaded the edit at start: nothing left to spend
        assert _workers(server.pid) == second
        stop.set()
        client.join(30)
    finally:
        stop.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
    text = log.read_text()
    assert text.count("a fresh worker takes its place") == workers, text[-3000:]
    assert statuses and all(status == 200 for status in statuses), sorted(set(statuses))
