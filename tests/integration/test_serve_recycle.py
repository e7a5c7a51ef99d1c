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
from tests.serving import RewardsServer, until, workers

API_KEY = "recycle-admin-key"


@pytest.mark.parametrize("count", [1, 2])
def test_workers_past_their_engine_budget_are_replaced(tmp_path: Path, count: int) -> None:
    folder = tmp_path / "rulesets"
    shutil.copytree(ROOT / "rulesets", folder)
    log = tmp_path / "server.log"
    server = RewardsServer.start(
        f"sqlite:///{tmp_path / 'recycle.db'}",
        log,
        api_key=API_KEY,
        workers=count,
        rulesets_dir=folder,
        environment={"REWARDS_RECYCLE_AFTER_RULESETS": "1"},
    )
    url = server.url
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
        # Every worker is up with the shipped folder before the edit (started: a worker
        # still starting would load the edited folder and have nothing to reload).
        first = workers(server.pid)
        assert len(first) == count
        client = threading.Thread(target=traffic)
        client.start()
        # A shape edit (a new segment code): each worker's watcher reloads it and builds
        # one new engine ruleset, which spends the budget of 1.
        path = folder / "achievement.yaml"
        edit = path.with_name("achievement.yaml.partial")  # not *.yaml: never loaded
        edit.write_text(path.read_text().replace("include: [staff]", "include: [staff, bronze]"))
        os.replace(edit, path)
        edited = folder_version(folder)
        until(
            lambda: len(now := workers(server.pid)) == count and not now & first,
            "every worker replaced",
            timeout=60,
            log=log,
        )
        until(
            lambda: all(version() == edited for _ in range(6)),
            "the edit served",
            timeout=30,
            log=log,
        )
        second = workers(server.pid)
        time.sleep(3)  # the fresh workers loaded the edit at start: nothing left to spend
        assert workers(server.pid) == second
        stop.set()
        client.join(30)
    finally:
        stop.set()
        server.stop()
    text = log.read_text()
    assert text.count("a fresh worker takes its place") == count, text[-3000:]
    assert statuses and all(status == 200 for status in statuses), sorted(set(statuses))
