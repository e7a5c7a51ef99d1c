"""A contact in the console: search, wallet and activity feed, and the feed's actions
(void with a confirmation step, ad hoc return of lines, an OTP as digits and QR code);
an analyst reads but cannot act."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx

from tests.conftest import moment, purchase_body
from tests.serving import json_of


def new_contact(admin_api: httpx.Client, name: str) -> dict[str, Any]:
    return json_of(
        admin_api.post(
            "/v1/contacts",
            json={
                "name": name,
                "code": f"C-{uuid.uuid4().hex[:8]}",
                "gift_cards": [f"GC{uuid.uuid4().hex[:10]}"],
            },
        ),
        201,
    )


def coffee_purchase(admin_api: httpx.Client, contact: dict[str, Any]) -> dict[str, Any]:
    """A purchase that earns an award at once under the shipped rulesets (premium-beans)."""
    body = purchase_body(
        contact["wallet"]["code"],
        products=[
            {
                "sku": "BEANS-PREMIUM-KENYA",
                "quantity": 2,
                "net_amount": "12.00",
                "vat_amount": "2.28",
            },
            {"sku": "MUFFIN-BLUEBERRY", "quantity": 1, "net_amount": "2.50", "vat_amount": "0.48"},
        ],
    )
    event = json_of(admin_api.post("/v1/events/purchases", json=body), 201)
    assert event["awards"], event
    return event


def balance(admin_api: httpx.Client, contact: dict[str, Any]) -> Decimal:
    wallet = json_of(admin_api.get(f"/v1/wallets/{contact['wallet']['code']}"), 200)
    return Decimal(str(wallet["balance"]))


def money(text: str) -> Decimal:
    return Decimal(re.sub(r"[^0-9.\-]", "", text))


def test_search_finds_by_every_identifier(
    open_console: Callable[[str], Any], admin_api: httpx.Client, shot: Callable[[Any, str], Any]
) -> None:
    ann = new_contact(admin_api, f"Ann Searchable {uuid.uuid4().hex[:4]}")
    page = open_console("analyst")
    for text, matched_by in [
        (ann["code"], "code"),
        (ann["wallet"]["code"].lower(), "wallet code"),
        (ann["gift_cards"][0], "gift card"),
        (ann["name"].split()[1].upper(), "name"),
    ]:
        page.goto("/console/contacts")
        page.get_by_label("Code, CIM, wallet code, gift card or name").fill(text)
        page.keyboard.press("Enter")
        row = page.locator("tbody tr", has_text=ann["name"])
        assert row.locator(".badge").inner_text() == matched_by
    shot(page, "contacts-search")
    row.get_by_role("link").click()
    assert page.locator("h1").inner_text().startswith(ann["name"])
    assert page.locator("#wallet-balance").inner_text() == "0.00"


def test_admin_voids_an_event_after_confirming_and_sees_the_wallet_change(
    open_console: Callable[[str], Any], admin_api: httpx.Client, shot: Callable[[Any, str], Any]
) -> None:
    contact = new_contact(admin_api, "Victor Void")
    event = coffee_purchase(admin_api, contact)
    before = balance(admin_api, contact)
    assert before > 0
    page = open_console("admin")
    page.goto(f"/console/contacts/{contact['id']}")
    assert money(page.locator("#wallet-balance").inner_text()) == before
    row = page.locator(f"tr[data-event='{event['id']}']")
    assert "award" in row.inner_text()
    shot(page, "contact")
    row.get_by_role("link", name="Void").click()
    assert page.locator("h1").inner_text() == f"Void event {event['number']}?"
    shot(page, "void-confirm")
    assert balance(admin_api, contact) == before  # nothing happened before confirming
    page.get_by_role("button", name=f"Void event {event['number']}").click()
    page.wait_for_url(f"**/console/contacts/{contact['id']}")
    assert "voided" in page.locator(".flash.ok").inner_text()
    assert money(page.locator("#wallet-balance").inner_text()) == 0
    row = page.locator(f"tr[data-event='{event['id']}']")
    assert "cancelled" in row.inner_text() and "award reversal" in row.inner_text()
    shot(page, "contact-after-void")
    assert balance(admin_api, contact) == 0
    assert json_of(admin_api.get(f"/v1/events/{event['id']}"), 200)["state"] == "cancelled"


def test_admin_returns_a_line_and_a_refused_quantity_is_shown_at_its_field(
    open_console: Callable[[str], Any], admin_api: httpx.Client, shot: Callable[[Any, str], Any]
) -> None:
    contact = new_contact(admin_api, "Rita Return")
    event = coffee_purchase(admin_api, contact)
    before = balance(admin_api, contact)
    page = open_console("admin")
    page.goto(f"/console/contacts/{contact['id']}")
    page.locator(f"tr[data-event='{event['id']}']").get_by_role("link", name="Return lines").click()
    page.get_by_label("BEANS-PREMIUM-KENYA").fill("5")  # more than the 2 bought
    page.get_by_role("button", name="Return").click()
    error = page.locator("#e-return-0")
    assert error.is_visible()
    shot(page, "return-refused")
    assert page.get_by_label("BEANS-PREMIUM-KENYA").input_value() == "5"  # kept
    assert balance(admin_api, contact) == before  # nothing written
    page.get_by_label("BEANS-PREMIUM-KENYA").fill("1")
    page.get_by_role("button", name="Return").click()
    page.wait_for_url(f"**/console/contacts/{contact['id']}")
    assert "Returned 1 line(s)" in page.locator(".flash.ok").inner_text()
    after = balance(admin_api, contact)
    assert 0 < after < before
    assert money(page.locator("#wallet-balance").inner_text()) == after
    shot(page, "contact-after-return")


def test_admin_issues_an_otp_shown_as_digits_and_a_qr_code(
    open_console: Callable[[str], Any], admin_api: httpx.Client, shot: Callable[[Any, str], Any]
) -> None:
    contact = new_contact(admin_api, "Otto Otp")
    page = open_console("admin")
    page.goto(f"/console/contacts/{contact['id']}")
    page.get_by_role("button", name="Issue a one-time password").click()
    digits = page.locator(".otp").inner_text()
    assert re.fullmatch(r"\d{6}", digits)
    assert page.locator(".qr svg title").text_content() == f"One-time password {digits}"
    shot(page, "otp")
    # The code identifies the contact at a till.
    body = purchase_body("", contact={"otp": digits}, performed_on=moment())
    assert (
        json_of(admin_api.post("/v1/events/purchases", json=body), 201)["contact_id"]
        == contact["id"]
    )


def test_an_analyst_reads_a_contact_but_cannot_void_return_or_issue(
    open_console: Callable[[str], Any], admin_api: httpx.Client, shot: Callable[[Any, str], Any]
) -> None:
    contact = new_contact(admin_api, "Anna Lyst")
    event = coffee_purchase(admin_api, contact)
    page = open_console("analyst")
    page.goto(f"/console/contacts/{contact['id']}")
    assert page.locator(f"tr[data-event='{event['id']}']").is_visible()
    assert page.get_by_role("link", name="Void").count() == 0
    assert page.get_by_role("button", name="Issue a one-time password").count() == 0
    answer = page.goto(f"/console/contacts/{contact['id']}/events/{event['id']}/cancel")
    assert answer is not None and answer.status == 403
    assert "needs an admin key" in page.locator("main").inner_text()
    shot(page, "analyst-403")
    # Posting the form directly, with the analyst's own valid form token, is refused too.
    token = page.locator("form.who input[name=csrf_token]").get_attribute("value")
    posted = page.request.post(
        f"/console/contacts/{contact['id']}/events/{event['id']}/cancel",
        form={"csrf_token": token or ""},
    )
    assert posted.status == 403
    assert json_of(admin_api.get(f"/v1/events/{event['id']}"), 200)["state"] == "posted"
