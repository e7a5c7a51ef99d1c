"""The other ways into evaluation runs: the ``rewards evaluate`` command and the schedule
inside ``rewards serve`` (REWARDS_EVALUATION_INTERVAL)."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import select

from rewards import runs
from rewards.cli import main
from rewards.db.run_tables import EvaluationRun
from rewards.runs import scheduler
from rewards.settings import Settings
from tests.integration.test_runs import RUN_RULESETS, World


@pytest.fixture
def rulesets_dir() -> Path:
    return RUN_RULESETS


@pytest.fixture
def world(app: Litestar) -> Iterator[World]:
    with TestClient(app):
        yield World(app)


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.setenv("REWARDS_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("REWARDS_RULESETS_DIR", str(settings.rulesets_dir))


@pytest.mark.usefixtures("environment")
def test_rewards_evaluate_runs_and_prints_a_summary(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    person = world.contact()
    world.event("achievement", person, classification="5-star-service")

    assert main(["evaluate", "--no-progress"]) == 0

    out = capsys.readouterr().out
    assert "status         finished" in out
    assert "1 evaluated (1 pending at start)" in out
    assert "1, EUR 5.00" in out
    assert "five-star-service" in out
    assert world.balance(person) == 500


@pytest.mark.usefixtures("environment")
def test_rewards_evaluate_refuses_while_a_run_runs(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    running = runs.start_run(world.database, world.runtime, source="test")
    assert main(["evaluate", "--no-progress"]) == 3
    assert running.id in capsys.readouterr().err


@pytest.mark.usefixtures("environment")
def test_rewards_evaluate_as_of_and_bad_arguments(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", "--no-progress", "--as-of", "2026-01-01T00:00:00+02:00"]) == 0
    assert "as of          2025-12-31T22:00:00+00:00" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["evaluate", "--as-of", "2026-01-01"])  # no zone
    assert main(["evaluate", "--workers", "0"]) == 2


@pytest.mark.usefixtures("environment")
def test_the_progress_bar_shows_count_rate_eta_and_awards(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate"]) == 0  # nothing pending: no bar (not "0/0")
    assert capsys.readouterr().err == ""
    person = world.contact()
    for _ in range(3):
        world.event("achievement", person, classification="5-star-service")
    assert main(["evaluate"]) == 0
    last = capsys.readouterr().err.strip().splitlines()[-1]  # not a terminal: plain lines
    assert re.search(r"^evaluating .* 100% 3/3 events [0-9,]+ ev/s ETA 0:00:00 awards 3$", last)


def test_a_scheduled_turn_runs_or_skips(world: World) -> None:
    person = world.contact()
    world.event("achievement", person, classification="5-star-service")
    assert scheduler.tick(world.runtime, world.database) is not None
    assert world.balance(person) == 500
    runs.start_run(world.database, world.runtime, source="test")
    assert scheduler.tick(world.runtime, world.database) is None  # one is running: skip


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Scheduled(Settings):
    evaluation_interval_seconds: float = 0.05


def test_the_schedule_runs_every_interval_until_stopped(world: World) -> None:
    runtime = dataclasses.replace(world.runtime, settings=_Scheduled())
    assert scheduler.interval_seconds(world.runtime) == 0  # not configured: no schedule
    scheduler.start(runtime, world.database)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with world.database.session(write=False) as session:
                done = session.scalars(
                    select(EvaluationRun).where(EvaluationRun.source == "schedule")
                ).all()
            if len(done) >= 2:
                break
            time.sleep(0.05)
    finally:
        scheduler.stop(runtime, world.database)
    assert len(done) >= 2
    with world.database.session(write=False) as session:
        statuses = set(session.scalars(select(EvaluationRun.status)))
    assert "running" not in statuses  # stop waited for the run in flight
