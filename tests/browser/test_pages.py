"""Every console page: behind the login, readable on a tablet without sideways scrolling,
reachable by keyboard, and free of anything fetched from another site."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.browser.conftest import ROLE_KEYS, login
from tests.conftest import purchase_body
from tests.serving import RewardsServer, json_of


@pytest.fixture(scope="module")
def some_pages(console_server: RewardsServer) -> Iterator[list[str]]:
    """The console's pages, for a contact with a purchase."""
    with httpx.Client(
        base_url=console_server.url, headers={"Authorization": f"Bearer {ROLE_KEYS['admin']}"}
    ) as client:
        contact = json_of(
            client.post("/v1/contacts", json={"name": "Page Tour", "code": uuid.uuid4().hex[:8]}),
            201,
        )
        event = json_of(
            client.post("/v1/events/purchases", json=purchase_body(contact["wallet"]["code"])),
            201,
        )
    yield [
        "/console/",
        "/console/contacts?q=Page",
        f"/console/contacts/{contact['id']}",
        f"/console/contacts/{contact['id']}/events/{event['id']}/cancel",
        f"/console/contacts/{contact['id']}/events/{event['id']}/return",
        f"/console/contacts/{contact['id']}/events/new?type=purchase",
        "/console/events",
        f"/console/events/{event['id']}",
        "/console/offers",
        "/console/rulesets",
        "/console/simulate",
        "/console/runs",
    ]


def test_every_page_redirects_to_login_without_a_session(
    console_server: RewardsServer, some_pages: list[str]
) -> None:
    with httpx.Client(base_url=console_server.url) as client:
        for path in some_pages:
            answer = client.get(path, follow_redirects=False)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/console/login?next="), path


def test_every_page_on_a_tablet_by_keyboard_and_offline(
    browser: Any,
    console_server: RewardsServer,
    some_pages: list[str],
    shot: Callable[[Any, str], Any],
) -> None:
    context = browser.new_context(
        base_url=console_server.url, viewport={"width": 768, "height": 1024}
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    elsewhere: list[str] = []
    page.on(
        "request",
        lambda r: None if r.url.startswith(console_server.url) else elsewhere.append(r.url),
    )
    login(page, ROLE_KEYS["admin"])
    page.wait_for_url("**/console/")
    for path in some_pages:
        answer = page.goto(path)
        assert answer is not None and answer.status == 200, path
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px on a tablet"
        # Every input has a label a screen reader reads.
        unlabelled = page.evaluate(
            """[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
                .map(e => e.name)"""
        )
        assert unlabelled == [], f"{path}: inputs without a label: {unlabelled}"
        shot(page, path.strip("/").split("?")[0].replace("/", "-") or "dashboard")
    # The keyboard reaches the skip link first, then the navigation.
    page.goto("/console/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.closest('nav') !== null")
    assert elsewhere == [], f"fetched from another site: {elsewhere}"
    context.close()
