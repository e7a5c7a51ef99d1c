"""Browser tests of the console: Playwright for Python driving Debian's Chromium
(``/usr/bin/chromium``, headless, no sandbox; Playwright's own browser download is never
used) against a real ``rewards serve`` on SQLite.

Without Chromium or Playwright these tests skip with the reason; with
``REWARDS_REQUIRE_BROWSER`` set (CI: ``.ci/run``) they fail instead. Every test saves a
screenshot of each page it visits under its temporary folder (``shot``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY, ANALYST_KEY, INTEGRATOR_KEY, PROCESSOR_KEY
from tests.serving import RewardsServer, api

CHROMIUM = Path(os.environ.get("REWARDS_TEST_CHROMIUM", "/usr/bin/chromium"))
KEYS = (
    f"admin:{ADMIN_KEY},analyst:{ANALYST_KEY},integrator:{INTEGRATOR_KEY},processor:{PROCESSOR_KEY}"
)
ROLE_KEYS = {"admin": ADMIN_KEY, "analyst": ANALYST_KEY, "integrator": INTEGRATOR_KEY}


def _unavailable(reason: str) -> None:
    if os.environ.get("REWARDS_REQUIRE_BROWSER"):
        pytest.fail(f"REWARDS_REQUIRE_BROWSER is set but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """Chromium, for the tests of this package only: Playwright's sync API keeps an event
    loop running on the main thread while it is open, where later tests' asyncio.run
    would fail."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright for Python is not installed (make install)")
    if not CHROMIUM.exists():
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RewardsServer]:
    """``rewards serve`` (one worker) on a SQLite file of this module, with a key of
    every role."""
    folder = tmp_path_factory.mktemp("console")
    server = RewardsServer.start(
        f"sqlite:///{folder / 'console.db'}",
        folder / "server.log",
        api_key=ADMIN_KEY,
        environment={"REWARDS_API_KEYS": KEYS},
    )
    yield server
    server.stop()


@pytest.fixture
def admin_api(console_server: RewardsServer) -> Iterator[httpx.Client]:
    with api(console_server, ADMIN_KEY) as client:
        yield client


@pytest.fixture
def shot(tmp_path: Path) -> Callable[[Any, str], Path]:
    """Save a full-page screenshot of ``page`` as ``<tmp_path>/screens/NN-<name>.png``."""
    folder = tmp_path / "screens"
    folder.mkdir()
    taken: list[Path] = []

    def take(page: Any, name: str) -> Path:
        path = folder / f"{len(taken):02d}-{re.sub(r'[^a-z0-9-]+', '-', name.lower())}.png"
        page.screenshot(path=str(path), full_page=True)
        taken.append(path)
        return path

    return take


@pytest.fixture
def open_console(browser: Any, console_server: RewardsServer) -> Iterator[Callable[[str], Any]]:
    """``open_console(role)``: a fresh browser context logged in with that role's key,
    on the dashboard."""
    contexts: list[Any] = []

    def open_as(role: str) -> Any:
        context = browser.new_context(
            base_url=console_server.url, viewport={"width": 1280, "height": 900}
        )
        context.set_default_timeout(10_000)  # a missing element fails in seconds, not 30
        contexts.append(context)
        page = context.new_page()
        login(page, ROLE_KEYS[role])
        page.wait_for_url("**/console/")
        return page

    yield open_as
    for context in contexts:
        context.close()


def login(page: Any, key: str) -> None:
    page.goto("/console/login")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Log in").click()
