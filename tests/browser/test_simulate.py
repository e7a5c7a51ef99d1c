"""Simulations in the console: an analyst tries an event; nothing is written."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx


def test_analyst_simulates_a_purchase_and_reads_awards_why_not_and_warnings(
    open_console: Callable[[str], Any], admin_api: httpx.Client, shot: Callable[[Any, str], Any]
) -> None:
    page = open_console("analyst")
    page.goto("/console/simulate")
    shot(page, "simulate-form")
    page.get_by_label("gold").check()
    for name, value in {
        "performed_by_unit": "store-001",
        "products.0.sku": "GROCERY-BASKET",
        "products.0.net_amount": "80",
        "payment_medium.brand": "visa",
    }.items():
        page.locator(f'[name="{name}"]').fill(value)
    page.get_by_role("button", name="Simulate").click()
    answer = page.locator("#answer")
    assert "basket-over-50" in answer.locator("tr.award").first.inner_text()
    assert (
        answer.locator('tr[data-offer="basket-over-50"]').get_attribute("data-status") == "applied"
    )
    assert answer.locator('tr[data-status="not_applied"]').count() > 0
    assert page.locator('[name="products.0.net_amount"]').input_value() == "80"  # kept
    shot(page, "simulated")
    # A unit the definition does not know: a warning; a bad quantity: beside its field.
    page.locator('[name="performed_by_unit"]').fill("store-999")
    page.get_by_role("button", name="Simulate").click()
    assert "store-999" in page.locator(".warnings").inner_text()
    page.locator('[name="products.0.quantity"]').fill("0")
    page.get_by_role("button", name="Simulate").click()
    assert "0" in page.locator('[id="e-products.0.quantity"]').inner_text()
    page.set_viewport_size({"width": 768, "height": 1024})
    shot(page, "simulation-refused-tablet")
    assert admin_api.get("/v1/events").json()["items"] == []  # nothing written
