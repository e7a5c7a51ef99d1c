"""A real server for the concurrency tests: ``rewards serve --workers 2`` on the test's
database (``database_url``) with the HTTP tests' offers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ADMIN_KEY
from tests.serving import RewardsServer, rewards_serve


@pytest.fixture
def two_workers(database_url: str, rulesets_dir: Path, tmp_path: Path) -> Iterator[RewardsServer]:
    with rewards_serve(
        database_url,
        tmp_path / "server.log",
        api_key=ADMIN_KEY,
        workers=2,
        rulesets_dir=rulesets_dir,
    ) as server:
        yield server
