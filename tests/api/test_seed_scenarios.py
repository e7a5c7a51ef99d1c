"""The seed scenarios of RULESETS.md, through HTTP, on the shipped rulesets with their
batch offers switched to immediate evaluation in a test copy (the batch run is another
issue's)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from tests.conftest import BOTH, ROOT

pytestmark = pytest.mark.parametrize("database_url", BOTH, indirect=True)


@pytest.fixture
def rulesets_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "rulesets"
    shutil.copytree(ROOT / "rulesets", folder)
    for name in ("achievement.yaml", "financial_achievement.yaml"):
        path = folder / name
        path.write_text(re.sub(r"evaluation: batch", "evaluation: immediate", path.read_text()))
    return folder


def _post(client: TestClient[Litestar], path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json={**body, "process_immediately": True})
    assert response.status_code == 201, response.text
    event: dict[str, Any] = response.json()
    return event


def test_five_star_service_feedback_earns_5(client: TestClient[Litestar], new_contact: Any) -> None:
    seller = new_contact()
    event = _post(
        client,
        "/v1/events/achievements",
        {
            "contact": {"contact_id": seller["id"]},
            "performed_on": "2026-03-04T10:00:00+02:00",
            "classification": "5-star-service",
        },
    )
    assert [(a["offer_id"], a["amount"]) for a in event["awards"]] == [("five-star-service", 5.0)]
    assert event["wallet"]["balance"] == 5.0


def test_electron_top_up_once_a_year(client: TestClient[Litestar], new_contact: Any) -> None:
    holder = new_contact()

    def top_up(day: str, amount: str, brand: str = "electron") -> list[tuple[str, float]]:
        event = _post(
            client,
            "/v1/events/financial-achievements",
            {
                "contact": {"contact_id": holder["id"]},
                "performed_on": f"{day}T10:00:00+02:00",
                "classification": "top-up",
                "amount": amount,
                "payment_medium": {"brand": brand},
            },
        )
        return [
            (a["offer_id"], a["amount"])
            for a in event["awards"]
            if a["offer_id"] == "electron-top-up"
        ]

    assert top_up("2025-01-10", "150.00") == [("electron-top-up", 10.0)]
    assert top_up("2025-02-09", "150.00") == []  # 30 days later: already awarded this year
    assert top_up("2026-01-11", "99.99") == []  # below 100
    assert top_up("2026-01-11", "150.00", brand="visa") == []  # not an Electron card
    assert top_up("2026-01-11", "150.00") == [("electron-top-up", 10.0)]  # 366 days after the first
    assert client.get(f"/v1/wallets/{holder['wallet']['code']}").json()["balance"] == 20.0
