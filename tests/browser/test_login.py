"""Logging in and out of the console, per role; sessions, cookies and form tokens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.browser.conftest import login
from tests.conftest import ADMIN_KEY, ANALYST_KEY, INTEGRATOR_KEY, PROCESSOR_KEY
from tests.serving import RewardsServer


def test_every_page_needs_a_session_and_login_returns_to_it(
    browser: Any, console_server: RewardsServer, shot: Callable[[Any, str], Any]
) -> None:
    context = browser.new_context(base_url=console_server.url)
    page = context.new_page()
    page.goto("/console/")
    assert "/console/login?next=" in page.url
    shot(page, "login")
    login(page, ADMIN_KEY)
    page.wait_for_url("**/console/")
    cookie = next(c for c in context.cookies() if c["name"] == "rewards_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    assert cookie["expires"] > 0  # a session with an expiry, not a browser-lifetime one
    assert ADMIN_KEY not in page.content()
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/console/login")
    page.goto("/console/")
    assert "/console/login" in page.url
    context.close()


def test_integrator_processor_and_unknown_keys_cannot_log_in(
    browser: Any, console_server: RewardsServer, shot: Callable[[Any, str], Any]
) -> None:
    context = browser.new_context(base_url=console_server.url)
    page = context.new_page()
    for key, message in [
        (INTEGRATOR_KEY, "A key of role integrator cannot use the console"),
        (PROCESSOR_KEY, "A key of role processor cannot use the console"),
        ("not-a-key", "Unknown API key."),
    ]:
        login(page, key)
        error = page.locator("#e-api_key")
        assert message in error.inner_text()
        assert page.get_by_label("API key").get_attribute("aria-invalid") == "true"
        assert key not in page.content()  # never rendered back
        assert "/console/login" in page.url
    shot(page, "login-refused")
    context.close()


def test_analyst_logs_in_and_sees_the_role(open_console: Callable[[str], Any]) -> None:
    page = open_console("analyst")
    assert page.locator("form.who").inner_text().startswith("analyst")
    assert ANALYST_KEY not in page.content()


def test_forms_need_the_session_token(console_server: RewardsServer) -> None:
    """A form posted without the session's token (another site's page posting into the
    console) is refused, and logging in with the right key but a stale token too."""
    with httpx.Client(base_url=console_server.url) as client:
        client.get("/console/login")
        refused = client.post("/console/login", data={"api_key": ADMIN_KEY, "csrf_token": "x"})
        assert refused.status_code == 403 and "Form expired" in refused.text
        assert "rewards_console" not in refused.headers.get("set-cookie", "") or (
            client.get("/console/").status_code == 303
        )
        assert client.get("/console/", follow_redirects=False).status_code == 303


def test_the_api_keeps_bearer_auth_only(console_server: RewardsServer) -> None:
    """A console session is no API credential."""
    with httpx.Client(base_url=console_server.url) as client:
        page = client.get("/console/login").text
        token = page.split('name="csrf_token" value="')[1].split('"')[0]
        logged_in = client.post("/console/login", data={"api_key": ADMIN_KEY, "csrf_token": token})
        assert logged_in.status_code == 303
        assert client.get("/console/").status_code == 200
        assert client.get("/v1/offers").status_code == 401
