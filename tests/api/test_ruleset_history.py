"""The ruleset history (GET /v1/rulesets/history, /history/{version}), explanations under
the version that evaluated an event, and a refused reload on /health."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import delete, update

from rewards.app import create_app
from rewards.db.history_tables import RulesetLoad, RulesetVersion
from rewards.db.tables import Award
from rewards.runtime import watcher
from rewards.runtime.ratelimit import caller_id
from rewards.settings import Settings
from tests.api.test_analyst import runtime_of, with_extra_offers, write_atomically
from tests.conftest import ADMIN_KEY, BOTH, ROOT, moment

Client = TestClient[Litestar]


@pytest.fixture(autouse=True)
def no_background_reloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the reloads a test asks for (the app's own watcher would race them)."""
    monkeypatch.setattr(watcher, "POLL_SECONDS", 3600.0)


@pytest.fixture
def rulesets_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "rulesets"
    shutil.copytree(ROOT / "tests" / "api" / "offer_rulesets", folder)
    return folder


def history(client: Client, **params: Any) -> dict[str, Any]:
    response = client.get("/v1/rulesets/history", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def course_completed(client: Client, contact_id: str) -> dict[str, Any]:
    response = client.post(
        "/v1/events/achievements",
        json={
            "contact": {"contact_id": contact_id},
            "performed_on": moment(),
            "classification": "course-completed",
            "process_immediately": True,
        },
    )
    assert response.status_code == 201, response.text
    event: dict[str, Any] = response.json()
    return event


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_every_version_loaded_is_listed_once_newest_first_with_its_awards(
    client: Client, app: Litestar, rulesets_dir: Path, new_contact: Callable[..., Any]
) -> None:
    first = runtime_of(app).rulesets.version
    [started] = history(client)["items"]
    assert started | {"loaded_at": None, "last_loaded_at": None} == {
        "version": first,
        "loaded_at": None,
        "source": "start",
        "loaded_by": "start-up",
        "loads": 1,
        "last_loaded_at": None,
        "serving": True,
        "files": sorted(p.name for p in rulesets_dir.glob("*.yaml")),
        "awards": 0,
        "awarded": 0,
    }
    ann = new_contact()
    assert course_completed(client, ann["id"])["awards"][0]["amount"] == 2.5

    with_extra_offers(rulesets_dir, "1", "2")
    second = client.post("/v1/rulesets/reload").json()["version"]
    assert client.post("/v1/rulesets/reload").json()["changed"] is False  # stores nothing
    course_completed(client, ann["id"])  # 2.50 + 1 + 2
    items = history(client)["items"]
    assert [(i["version"], i["source"], i["serving"]) for i in items] == [
        (second, "reload", True),
        (first, "start", False),
    ]
    assert items[0]["loaded_by"] == f"admin key {caller_id(ADMIN_KEY)}"
    assert ADMIN_KEY not in str(items)
    assert [(i["awards"], i["awarded"], i["loads"]) for i in items] == [(3, 5.5, 1), (1, 2.5, 1)]

    # the folder watcher stores what it loads; going back to a stored version adds a load
    with_extra_offers(rulesets_dir, "1", "3")
    folder_watcher = watcher.FolderWatcher(
        runtime_of(app), poll_seconds=0, settle_seconds=0, database=app.state.database
    )
    assert folder_watcher.check() is True
    third = runtime_of(app).rulesets.version
    with_extra_offers(rulesets_dir, "1", "2")
    assert folder_watcher.check() is True
    assert runtime_of(app).rulesets.version == second
    items = history(client)["items"]
    assert [(i["version"], i["source"], i["loaded_by"], i["loads"]) for i in items] == [
        (third, "watcher", "watcher", 1),
        (second, "reload", f"admin key {caller_id(ADMIN_KEY)}", 2),
        (first, "start", "start-up", 1),
    ]
    assert [i["serving"] for i in items] == [False, True, False]

    # cursor pagination, like every list
    page = history(client, limit=2)
    assert [i["version"] for i in page["items"]] == [third, second]
    rest = history(client, limit=2, cursor=page["next_cursor"])
    assert [i["version"] for i in rest["items"]] == [first] and rest["next_cursor"] is None
    assert client.get("/v1/rulesets/history", params={"cursor": "bad!"}).status_code == 400


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_a_version_with_its_files_and_their_diff_from_the_version_before(
    client: Client, app: Litestar, rulesets_dir: Path
) -> None:
    first = runtime_of(app).rulesets.version
    behaviour = (rulesets_dir / "behaviour.yaml").read_text()
    (rulesets_dir / "behaviour.yaml").unlink()
    with_extra_offers(rulesets_dir, "1", "2")
    second = client.post("/v1/rulesets/reload").json()["version"]

    detail = client.get(f"/v1/rulesets/history/{second}").json()
    assert (detail["version"], detail["previous_version"], detail["source"]) == (
        second,
        first,
        "reload",
    )
    files = {f["name"]: f for f in detail["files"]}
    assert {name: f["change"] for name, f in files.items() if f["change"] != "unchanged"} == {
        "achievement.yaml": "changed",
        "behaviour.yaml": "removed",
    }
    achievement = files["achievement.yaml"]
    assert achievement["content"] == (rulesets_dir / "achievement.yaml").read_text()
    assert achievement["diff"].startswith(
        f"--- {first}/achievement.yaml\n+++ {second}/achievement.yaml\n@@ "
    )
    assert "+  - id: extra-one\n" in achievement["diff"]
    removed = files["behaviour.yaml"]
    assert removed["content"] is None
    assert removed["diff"].startswith(f"--- {first}/behaviour.yaml\n+++ /dev/null\n")
    assert "-  - id: insta-like\n" in removed["diff"]
    assert files["definition.yaml"]["diff"] == ""

    # the file comes back: added; the first version's files are all added
    (rulesets_dir / "behaviour.yaml").write_text(behaviour)
    third = client.post("/v1/rulesets/reload").json()["version"]
    files = {f["name"]: f for f in client.get(f"/v1/rulesets/history/{third}").json()["files"]}
    assert files["behaviour.yaml"]["change"] == "added"
    assert files["behaviour.yaml"]["diff"].startswith(
        f"--- /dev/null\n+++ {third}/behaviour.yaml\n"
    )
    oldest = client.get(f"/v1/rulesets/history/{first}").json()
    assert oldest["previous_version"] is None
    assert {f["change"] for f in oldest["files"]} == {"added"}

    missing = client.get("/v1/rulesets/history/0123456789ab")
    assert missing.status_code == 404
    assert missing.json()["code"] == "ruleset_version_not_found"


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_the_history_survives_a_restart(settings: Settings, rulesets_dir: Path) -> None:
    app = create_app(settings)
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        first = runtime_of(app).rulesets.version
        with_extra_offers(rulesets_dir, "1", "2")
        second = client.post("/v1/rulesets/reload").json()["version"]
    restarted = create_app(settings)  # same database, the folder as it is now
    with TestClient(restarted) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        items = history(client)["items"]
        assert [(i["version"], i["source"], i["loads"]) for i in items] == [
            (second, "reload", 2),  # loaded again at the restart: one row, two loads
            (first, "start", 1),
        ]
        assert client.get(f"/v1/rulesets/history/{first}").json()["previous_version"] is None


# ---- explanations under the version that evaluated the event ------------------------------


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_an_event_is_explained_under_the_version_that_evaluated_it(
    client: Client, app: Litestar, rulesets_dir: Path, new_contact: Callable[..., Any]
) -> None:
    first = runtime_of(app).rulesets.version
    ann = new_contact()
    paid_by_visa = {
        "contact": {"contact_id": ann["id"]},
        "performed_on": moment(),
        "performed_by_unit": "card-desk",
        "reference_number": "R-visa",
        "process_immediately": True,
        "payment_medium": {"identifier": "5111111111111111", "brand": "visa"},
        "products": [{"sku": "X", "net_amount": "10.00"}],
    }
    unawarded = client.post("/v1/events/purchases", json=paid_by_visa).json()
    assert unawarded["awards"] == [] and unawarded["evaluated"] is True
    pending = client.post(
        "/v1/events/purchases",
        json=paid_by_visa | {"reference_number": "R-later", "process_immediately": False},
    ).json()
    assert pending["evaluated"] is False  # left to the next evaluation run
    awarded = course_completed(client, ann["id"])  # course-bonus 2.50

    # the change: electron-any-type takes visa too; course-bonus pays 4
    path = rulesets_dir / "increase_revenue_transaction.yaml"
    write_atomically(
        path, path.read_text().replace("brands: [electron]}", "brands: [electron, visa]}")
    )
    path = rulesets_dir / "achievement.yaml"
    write_atomically(path, path.read_text().replace("amount: 2.50", "amount: 4"))
    second = client.post("/v1/rulesets/reload").json()["version"]
    assert second != first

    explained = client.get(f"/v1/events/{unawarded['id']}", params={"explain": "true"})
    assert explained.status_code == 200, explained.text
    explanation = explained.json()["explanation"]
    assert explanation["ruleset_version"] == first
    assert explanation["ruleset_serving"] is False
    assert explanation["ruleset_chosen_by"] == "loaded_when_recorded"
    assert first in explanation["ruleset_note"]
    outcome = {o["offer_id"]: o for o in explanation["offers"]}["electron-any-type"]
    assert outcome["status"] == "not_applied" and explanation["awards"] == []
    # what the serving version would say (the old answer: "applied 1.00")
    simulated = client.post(
        "/v1/simulations",
        json={
            "type": "purchase",
            "event": {k: v for k, v in paid_by_visa.items() if k != "contact"},
        },
    ).json()
    assert {o["offer_id"]: o for o in simulated["offers"]}["electron-any-type"]["amount"] == 1
    assert simulated["ruleset_serving"] is True and simulated["ruleset_chosen_by"] is None

    pinned = client.get(f"/v1/events/{awarded['id']}", params={"explain": "true"}).json()
    explanation = pinned["explanation"]
    assert (explanation["ruleset_version"], explanation["ruleset_chosen_by"]) == (first, "awards")
    assert explanation["total_awarded"] == 2.5

    # not evaluated yet: the serving version (what the next run would use), and it says so
    explanation = client.get(f"/v1/events/{pending['id']}", params={"explain": "true"}).json()[
        "explanation"
    ]
    assert (explanation["ruleset_version"], explanation["ruleset_serving"]) == (second, True)
    assert explanation["ruleset_chosen_by"] == "serving"
    assert "no recorded version evaluated this event yet" in explanation["ruleset_note"]

    # an event recorded under the serving version says so
    latest = course_completed(client, ann["id"])
    explanation = client.get(f"/v1/events/{latest['id']}", params={"explain": "true"}).json()[
        "explanation"
    ]
    assert (explanation["ruleset_version"], explanation["ruleset_serving"]) == (second, True)
    assert explanation["total_awarded"] == 4


def test_an_event_whose_version_is_not_stored_is_explained_under_the_serving_one_and_says_so(
    client: Client, app: Litestar, new_contact: Callable[..., Any]
) -> None:
    event = course_completed(client, new_contact()["id"])
    with app.state.database.transaction() as session:  # recorded before the history existed
        session.execute(delete(RulesetLoad))
        session.execute(delete(RulesetVersion))
        session.execute(update(Award).values(ruleset_version="0123456789ab"))
    explanation = client.get(f"/v1/events/{event['id']}", params={"explain": "true"}).json()[
        "explanation"
    ]
    assert explanation["ruleset_version"] == runtime_of(app).rulesets.version
    assert explanation["ruleset_serving"] is True
    assert explanation["ruleset_chosen_by"] == "serving"
    assert "0123456789ab" in explanation["ruleset_note"]
    assert "not in the ruleset history" in explanation["ruleset_note"]


# ---- a refused reload on /health ----------------------------------------------------------


def test_health_is_degraded_while_the_last_reload_is_refused(
    client: Client, app: Litestar, rulesets_dir: Path
) -> None:
    version = runtime_of(app).rulesets.version
    assert client.get("/health").json() == {
        "status": "ok",
        "database": "ok",
        "rulesets_version": version,
        "reload_errors": [],
    }
    path = rulesets_dir / "achievement.yaml"
    good = path.read_text()
    write_atomically(path, good.replace("award: {amount: 5}", "award: {amount: five}"))
    assert client.post("/v1/rulesets/reload").status_code == 422
    health = client.get("/health", headers={"Authorization": ""})
    assert health.status_code == 200  # the previous rulesets serve: probes keep it
    line = path.read_text().splitlines().index("    award: {amount: five}") + 1
    assert health.json() == {
        "status": "degraded",
        "database": "ok",
        "rulesets_version": version,
        "reload_errors": [
            f"{path}:{line}:21: offer five-star-service: award.amount: must be a number, not 'five'"
        ],
    }
    write_atomically(path, good)
    assert client.post("/v1/rulesets/reload").json()["changed"] is False
    assert client.get("/health").json()["status"] == "ok"
