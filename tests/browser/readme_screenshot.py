"""The README's picture of the console: ``python -m tests.browser.readme_screenshot
docs/console.png`` starts a server on a scratch SQLite file, records a few purchases for
a contact through the API, and saves the contact's page as seen by an admin."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.browser.conftest import CHROMIUM, KEYS, login
from tests.conftest import ADMIN_KEY, moment, purchase_body
from tests.serving import RewardsServer, api, json_of


def main(target: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        server = RewardsServer.start(
            f"sqlite:///{folder / 'shot.db'}",
            folder / "server.log",
            api_key=ADMIN_KEY,
            environment={"REWARDS_API_KEYS": KEYS},
        )
        try:
            with api(server, ADMIN_KEY) as client:
                contact = json_of(
                    client.post(
                        "/v1/contacts",
                        json={
                            "name": "Maria Papadopoulou",
                            "code": "C-10442",
                            "cim": "GR-88213",
                            "segments": ["gold"],
                            "gift_cards": ["GC-5531"],
                        },
                    ),
                    201,
                )
                baskets = [
                    [("BEANS-PREMIUM-KENYA", 2, "12.00"), ("MUFFIN-BLUEBERRY", 1, "2.50")],
                    [("GROCERY-BASKET", 1, "64.20")],
                    [("BEANS-PREMIUM-ETHIOPIA", 1, "24.99")],
                ]
                for days_ago, basket in zip((9, 4, 1), baskets, strict=True):
                    products = [
                        {"sku": sku, "quantity": q, "net_amount": net, "vat_amount": "0.00"}
                        for sku, q, net in basket
                    ]
                    body = purchase_body(
                        contact["wallet"]["code"],
                        products=products,
                        performed_on=moment(days_ago),
                    )
                    json_of(client.post("/v1/events/purchases", json=body), 201)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
                )
                page = browser.new_page(
                    base_url=server.url, viewport={"width": 1100, "height": 660}
                )
                login(page, ADMIN_KEY)
                page.goto(f"/console/contacts/{contact['id']}")
                page.screenshot(path=str(target))
                browser.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
