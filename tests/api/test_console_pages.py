"""The console's pages through the app (no browser): the dashboard's daily series on
SQLite and PostgreSQL, and a refused then accepted reload from the rulesets page."""

from __future__ import annotations

import re
import shutil
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from rewards.analyst import trends
from rewards.app import create_app
from rewards.db.database import Database
from rewards.runtime.context import Runtime
from rewards.settings import Settings
from tests.conftest import ADMIN_KEY, API_KEYS, BOTH, fund

Client = TestClient[Litestar]


def console_login(client: Client, key: str = ADMIN_KEY) -> str:
    """Log ``client`` in to the console; the session's form token."""
    page = client.get("/console/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    answer = client.post(
        "/console/login", data={"api_key": key, "csrf_token": token[1]}, follow_redirects=False
    )
    assert answer.status_code == 303
    fresh = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/console/runs").text)
    assert fresh is not None  # logging in made a new token
    return fresh[1]


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_daily_series_by_utc_day_and_the_dashboard_shows_them(
    client: Client, app: Litestar, new_contact: Any
) -> None:
    ann = new_contact(segments=["gold"])
    fund(client, ann, "20.00")  # today
    purchase = client.post(
        "/v1/events/purchases",
        json={
            "contact": {"contact_id": ann["id"]},
            "performed_on": "2026-03-04T23:30:00-02:00",  # 2026-03-05 01:30 UTC
            "performed_by_unit": "store-003",
            "reference_number": "A",
            "process_immediately": True,
            "payment_medium": {"brand": "visa", "type": "credit"},
            "products": [{"sku": "BASKET", "net_amount": "100.00"}],
        },
    )
    assert purchase.status_code == 201 and purchase.json()["awards"][0]["amount"] == 5.0
    spend = client.post(
        "/v1/events/spend-requests",
        json={
            "contact": {"contact_id": ann["id"]},
            "performed_on": "2026-03-06T10:00:00+00:00",
            "purchase_event_id": purchase.json()["id"],
            "requested_amount": 7,
        },
    )
    assert spend.status_code == 201, spend.text
    database: Database = app.state.database
    runtime: Runtime = app.state.runtime
    march = trends.Period(start=date(2026, 3, 1), end=date(2026, 3, 7))
    with database.transaction(write=False) as session:
        data = trends.trends(session, runtime, march)
        today = trends.trends(session, runtime, trends.Period.last_days(runtime.now().date()))
    assert data.days[0] == date(2026, 3, 1) and len(data.days) == 7
    assert {s.type: s.counts for s in data.events} == {
        "purchase": [0, 0, 0, 0, 1, 0, 0],
        "spend_request": [0, 0, 0, 0, 0, 1, 0],
    }
    assert [(a.day.day, a.count, a.amount) for a in data.awards if a.count] == [
        (5, 1, Decimal("5.00"))
    ]
    assert [(s.day.day, s.count, s.amount) for s in data.spends if s.count] == [
        (6, 1, Decimal("7.00"))
    ]
    assert {d.balance for d in data.liability} == {Decimal("0.00")}  # booked today
    assert [(o.offer_id, o.amount) for o in data.top_offers] == [("gold-basket", Decimal("5.00"))]
    assert today.liability[-1].balance == today.summary.outstanding_liability == Decimal("18.00")
    assert today.liability[0].balance == Decimal("0.00")
    assert [(o.offer_id, o.amount) for o in today.top_offers] == [("wallet-load", Decimal("20.00"))]

    console_login(client)
    page = client.get("/console/", params={"from": "2026-03-01", "to": "2026-03-07"})
    assert page.status_code == 200
    assert page.text.count('<svg role="img" aria-label="') == 4
    assert "<script" not in page.text.split("</head>")[1] and "kozea.github.io" not in page.text
    money = page.text.split('id="t-money"')[1].split("</table>")[0]
    rows = re.findall(r"<tr><td>([^<]+)</td>((?:<td[^>]*>[^<]*</td>)+)</tr>", money)
    cells = [(day, re.findall(r">([^<]*)</td>", rest)) for day, rest in rows]
    assert cells == [
        ("2026-03-05", ["1", "5.00", "0", "0.00"]),
        ("2026-03-06", ["0", "0.00", "1", "7.00"]),
    ]
    wrong = client.get("/console/", params={"from": "2026-03-07", "to": "2026-03-01"})
    assert wrong.status_code == 200 and "The end comes before the start." in wrong.text


def test_a_refused_reload_shows_its_problems_as_file_line_then_a_good_one_is_recorded(
    database_url: str, rulesets_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "rulesets"
    shutil.copytree(rulesets_dir, folder)
    settings = Settings(database_url=database_url, rulesets_dir=folder, api_keys=API_KEYS)
    with TestClient(create_app(settings)) as client:
        token = console_login(client)
        offers = folder / "financial_achievement.yaml"
        good = offers.read_text()
        offers.write_text(good + "\n  - id: [broken\n")
        page = client.post("/console/rulesets/reload", data={"csrf_token": token})
        assert page.status_code == 200 and "flash bad" in page.text
        problems = page.text.split('class="reload-errors"')[1].split("</ul>")[0]
        assert re.search(r"financial_achievement\.yaml:\d+:\d+: ", problems), problems
        assert client.get("/health").json()["status"] == "degraded"

        offers.write_text(good + "\n# a comment: a new version\n")
        page = client.post("/console/rulesets/reload", data={"csrf_token": token})
        assert "Loaded version" in page.text and 'class="reload-errors"' not in page.text
        assert re.search(r"<td>reload</td><td>admin key [0-9a-f]+ \(console\)</td>", page.text)
