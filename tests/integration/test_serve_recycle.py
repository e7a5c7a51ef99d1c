"""A worker of ``rewards serve`` (one worker or two) that built more engine rulesets by
reloads than ``REWARDS_RECYCLE_AFTER_RULESETS`` stops gracefully and uvicorn's
supervisor starts a fresh one (durable-rules never gives back the memory of discarded
rules): requests keep being served (no 5xx), the fresh workers serve the new version,
and they do not restart again."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from rewards.engine.loader import folder_version
from tests.conftest import ROOT
from tests.integration.served import HOST, rewards_serve, until, worker_pids

API_KEY = "recycle-admin-key"


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_past_their_engine_budget_are_replaced(tmp_path: Path, workers: int) -> None:
    folder = tmp_path / "rulesets"
    shutil.copytree(ROOT / "rulesets", folder)
    log = tmp_path / "server.log"
    env = {
        "REWARDS_DATABASE_URL": f"sqlite:///{tmp_path / 'recycle.db'}",
        "REWARDS_RULESETS_DIR": str(folder),
        "REWARDS_API_KEYS": f"admin:{API_KEY}",
        "REWARDS_RECYCLE_AFTER_RULESETS": "1",
    }
    headers = {"Authorization": f"Bearer {API_KEY}"}
    statuses: list[int] = []
    stop = threading.Event()

    with rewards_serve(env, log, workers) as served:
        url = f"http://{HOST}:{served.port}"
        supervisor = served.process.pid

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
            # Every worker up with the shipped folder before the edit (a worker still
            # starting would load the edited folder and have nothing to reload).
            until(
                lambda: log.read_text().count("rewards ready") == workers and version() is not None,
                60,
                "every worker ready",
                log,
            )
            first = worker_pids(supervisor)
            assert len(first) == workers
            client = threading.Thread(target=traffic)
            client.start()
            # A shape edit (a new segment code): each worker's watcher reloads it and
            # builds one new engine ruleset, which spends the budget of 1.
            path = folder / "achievement.yaml"
            edit = path.with_name("achievement.yaml.partial")  # not *.yaml: never loaded
            edit.write_text(path.read_text().replace("include: [staff]", "include: [staff, crew]"))
            os.replace(edit, path)
            edited = folder_version(folder)
            until(
                lambda: len(now := worker_pids(supervisor)) == workers and not now & first,
                60,
                "every worker replaced",
                log,
            )
            until(lambda: all(version() == edited for _ in range(6)), 30, "the edit served", log)
            second = worker_pids(supervisor)
            time.sleep(3)  # the fresh workers loaded the edit at start: nothing left to spend
            assert worker_pids(supervisor) == second
            stop.set()
            client.join(30)
        finally:
            stop.set()
    text = log.read_text()
    assert text.count("a fresh worker takes its place") == workers, text[-3000:]
    assert statuses and all(status == 200 for status in statuses), sorted(set(statuses))
