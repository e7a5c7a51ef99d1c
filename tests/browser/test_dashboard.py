"""The console's pages in a real browser: the dashboard's charts and numbers for a
period, the offers with their awards, rulesets reload and evaluation runs per role.

The tests of this module share one server: they run in file order and each counts only
what it created (or what the tests before it created, said where)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

Shot = Callable[[Any, str], Any]


def _contact(admin_api: httpx.Client) -> str:
    response = admin_api.post("/v1/contacts", json={})
    assert response.status_code == 201, response.text
    contact_id: str = response.json()["id"]
    return contact_id


def _financial(
    admin_api: httpx.Client, contact_id: str, days_ago: int, classification: str, amount: str
) -> dict[str, Any]:
    brand = "electron" if classification == "top-up" else "visa"
    response = admin_api.post(
        "/v1/events/financial-achievements",
        json={
            "contact": {"contact_id": contact_id},
            "performed_on": (datetime.now(UTC) - timedelta(days=days_ago)).isoformat(),
            "classification": classification,
            "amount": amount,
            "payment_medium": {"brand": brand, "type": "debit"},
            "process_immediately": True,
        },
    )
    assert response.status_code == 201, response.text
    event: dict[str, Any] = response.json()
    return event


def _stat(page: Any, name: str) -> str:
    text: str = page.locator(f'[data-stat="{name}"]').inner_text()
    return text


def _csrf(page: Any) -> str:
    token: str = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    return token


def test_dashboard_and_offers_show_charts_and_the_numbers_of_a_period(
    open_console: Callable[[str], Any], admin_api: httpx.Client, shot: Shot
) -> None:
    contact = _contact(admin_api)
    recent = _financial(admin_api, contact, 2, "loan-repayment", "1000.00")  # 1%: 10.00
    _financial(admin_api, contact, 60, "loan-repayment", "2000.00")  # 20.00, 60 days ago
    assert recent["awards"][0]["amount"] == 10.0
    page = open_console("analyst")
    charts = page.locator("svg.pygal-chart")
    assert charts.count() == 4
    for n in range(4):
        assert charts.nth(n).get_attribute("role") == "img"
        assert charts.nth(n).get_attribute("aria-label")
    assert page.locator("script[src*='kozea'], svg script").count() == 0
    assert _stat(page, "events") == "1" and _stat(page, "awarded") == "10.00"
    day = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
    assert page.locator("#t-money tbody tr").all_inner_texts() == [f"{day}\t1\t10.00\t0\t0.00"]
    assert "loan-repayment-cashback\t1\t10.00" in page.locator("#t-offers").inner_text()
    assert page.locator("#t-liability tbody tr").last.inner_text().endswith("30.00")
    shot(page, "dashboard")

    start = (datetime.now(UTC) - timedelta(days=90)).date().isoformat()
    page.get_by_label("From").fill(start)
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(lambda url: f"from={start}" in url)
    assert _stat(page, "events") == "2" and _stat(page, "awarded") == "30.00"
    assert page.locator("#t-money tbody tr").count() == 2
    shot(page, "dashboard-90-days")

    page.goto("/console/?from=2026-02-30")  # not a date: the default period, and a message
    assert page.locator("#e-from").inner_text() == "Enter a date as YYYY-MM-DD."
    assert _stat(page, "awarded") == "10.00"

    page.get_by_role("link", name="Offers", exact=True).click()
    page.wait_for_url("**/console/offers")
    row = page.locator('tr[data-offer="loan-repayment-cashback"]')
    assert "financial_achievement" in row.inner_text() and "immediate" in row.inner_text()
    assert row.locator('[data-col="awards"]').inner_text() == "1"
    assert row.locator('[data-col="cost"]').inner_text() == "10.00"
    assert page.locator("#offers tbody tr").count() > 10
    shot(page, "offers")
    page.goto(f"/console/offers?from={start}")
    assert row.locator('[data-col="awards"]').inner_text() == "2"
    assert row.locator('[data-col="cost"]').inner_text() == "30.00"


def test_rulesets_reload_is_for_admins(open_console: Callable[[str], Any], shot: Shot) -> None:
    analyst = open_console("analyst")
    analyst.goto("/console/rulesets")
    assert analyst.locator("[data-version]").inner_text()
    assert "financial_achievement.yaml" in analyst.locator("ul.files").inner_text()
    assert analyst.locator("#no-reload-errors").is_visible()
    assert analyst.get_by_role("button", name="Reload now").count() == 0
    refused = analyst.request.post(
        "/console/rulesets/reload", form={"csrf_token": _csrf(analyst)}, max_redirects=0
    )
    assert refused.status == 403 and "Not allowed" in refused.text()
    shot(analyst, "rulesets-analyst")

    admin = open_console("admin")
    admin.goto("/console/rulesets")
    admin.get_by_role("button", name="Reload now").click()
    admin.wait_for_url("**/console/rulesets")
    assert "unchanged" in admin.locator(".flash.ok").inner_text()
    shot(admin, "rulesets-admin-reloaded")


def test_admin_starts_a_run_and_sees_it_finish_analysts_cannot(
    open_console: Callable[[str], Any], admin_api: httpx.Client, shot: Shot
) -> None:
    _financial(admin_api, _contact(admin_api), 1, "top-up", "150.00")  # batch: 10.00 by a run
    analyst = open_console("analyst")
    analyst.goto("/console/runs")
    assert analyst.get_by_role("button", name="Start an evaluation run").count() == 0
    refused = analyst.request.post(
        "/console/runs", form={"csrf_token": _csrf(analyst)}, max_redirects=0
    )
    assert refused.status == 403

    admin = open_console("admin")
    admin.goto("/console/runs")
    shot(admin, "runs")
    admin.get_by_role("button", name="Start an evaluation run").click()
    admin.wait_for_url("**/console/runs/*")
    admin.locator('#run-progress [data-status="finished"]').wait_for(timeout=20_000)
    offers = admin.locator("#run-offers")
    assert "electron-top-up\t1\t10.00" in offers.inner_text()
    shot(admin, "run-finished")
    fragment = admin.request.get(admin.url + "/progress")  # what data-poll-url refreshes
    assert fragment.ok and "data-done" in fragment.text() and "<html" not in fragment.text()
    admin.get_by_role("link", name="All runs").click()
    assert admin.locator("table.runs tbody tr").count() == 1
    admin.goto("/console/")
    assert admin.locator('table.runs [data-status="finished"]').count() == 1
    shot(admin, "dashboard-with-run")
    admin.set_viewport_size({"width": 820, "height": 1180})  # a tablet
    shot(admin, "dashboard-tablet")
