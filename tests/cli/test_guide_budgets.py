"""docs/analysts.md "Budgets": its example offer, added to the shipped rulesets, checks
clean, and a service running them cuts the award that passes the budget, then stops
(the guide's words, run)."""

from __future__ import annotations

import re
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from litestar.testing import TestClient

from rewards.app import create_app
from rewards.cli import main
from rewards.settings import Settings
from tests.conftest import ADMIN_KEY, API_KEYS, ROOT, moment

GUIDE = ROOT / "docs" / "analysts.md"


def guide_example(name: str) -> dict[str, Any]:
    """The YAML block of the guide that starts with ``# guide example: <name>``."""
    blocks = re.findall(r"```yaml\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S)
    [block] = [b for b in blocks if b.startswith(f"# guide example: {name}\n")]
    parsed: dict[str, Any] = yaml.safe_load(block)
    return parsed


def test_the_guides_budget_offer_checks_and_stops_at_its_budget(
    tmp_path: Path, capsys: Any, database_url: str
) -> None:
    example = guide_example("budget")
    folder = tmp_path / "rulesets"
    shutil.copytree(ROOT / "rulesets", folder)
    path = folder / f"{example['classification']}.yaml"
    shipped = yaml.safe_load(path.read_text(encoding="utf-8"))
    shipped["offers"] += example["offers"]
    path.write_text(yaml.safe_dump(shipped, sort_keys=False), encoding="utf-8")
    assert main(["rulesets", "check", str(folder)]) == 0, capsys.readouterr()
    [offer] = example["offers"]
    budget = Decimal(str(offer["budget"]["amount"]))
    each = Decimal(str(offer["award"]["amount"]))

    app = create_app(Settings(database_url=database_url, rulesets_dir=folder, api_keys=API_KEYS))
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        contact = client.post("/v1/contacts", json={}).json()
        paid = []
        for i in range(int(budget / each) + 2):
            event = client.post(
                "/v1/events/purchases",
                json={
                    "contact": {"contact_id": contact["id"]},
                    "performed_on": moment(),
                    "performed_by_unit": "store-001",
                    "reference_number": f"R-{i}",
                    "products": [{"sku": "GROCERY", "net_amount": "1.00"}],
                },
            ).json()
            paid += [
                Decimal(str(a["amount"])) for a in event["awards"] if a["offer_id"] == offer["id"]
            ]
        listed = {
            o["id"]: o for o in client.get("/v1/offers", params={"limit": 500}).json()["items"]
        }
    assert sum(paid) == budget
    assert len(paid) == int(budget / each)
    assert (listed[offer["id"]]["budget"]["used"], listed[offer["id"]]["budget"]["left"]) == (
        float(budget),
        0.0,
    )
