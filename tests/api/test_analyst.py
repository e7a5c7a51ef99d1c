"""Analyst endpoints: POST /v1/simulations, POST /v1/rulesets/reload, the folder watcher,
explanations of recorded events, and reloads under concurrent load."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import func, select

from rewards.analyst import simulation
from rewards.db.tables import Award, Event
from rewards.engine.loader import folder_version
from rewards.runtime import reload as reload_service
from rewards.runtime import watcher
from rewards.runtime.context import Runtime
from tests.conftest import BOTH, INTEGRATOR_KEY, ROOT, moment

Client = TestClient[Litestar]

EXTRA = """
  - id: extra-one
    name: extra one
    evaluation: immediate
    award: {{amount: {one}}}
    conditions: {{event_classifications: [course-completed]{more}}}
  - id: extra-two
    name: extra two
    evaluation: immediate
    award: {{amount: {two}}}
    conditions: {{event_classifications: [course-completed]{more}}}
"""


@pytest.fixture
def rulesets_dir(tmp_path: Path) -> Path:
    """A copy of the HTTP tests' offers that the tests may edit."""
    folder = tmp_path / "rulesets"
    shutil.copytree(ROOT / "tests" / "api" / "offer_rulesets", folder)
    return folder


def write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")  # not *.yaml: never loaded
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def with_extra_offers(folder: Path, one: str, two: str, *, more: str = "") -> None:
    path = folder / "achievement.yaml"
    base = path.read_text(encoding="utf-8").split("\n  - id: extra-one")[0].rstrip("\n") + "\n"
    write_atomically(path, base + EXTRA.format(one=one, two=two, more=more).lstrip("\n"))


def runtime_of(app: Litestar) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


def counts(app: Litestar) -> tuple[int, int]:
    with app.state.database.transaction(write=False) as session:
        events = session.scalar(select(func.count()).select_from(Event))
        awards = session.scalar(select(func.count()).select_from(Award))
    return events, awards


# ---- simulations ----------------------------------------------------------------------

GOLD_BASKET = {
    "type": "purchase",
    "segments": ["gold"],
    "event": {
        "performed_on": "2026-03-04T10:00:00+02:00",
        "performed_by_unit": "store-003",
        "payment_medium": {"identifier": "5111111111111111", "brand": "visa"},
        "products": [{"sku": "BASKET", "net_amount": "100.00"}],
    },
}


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_simulation_passing_and_failing_offers_writes_nothing(
    client: Client, app: Litestar
) -> None:
    before = counts(app)
    response = client.post("/v1/simulations", json=GOLD_BASKET)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["ruleset_version"] == runtime_of(app).rulesets.version
    assert result["event_type"] == "purchase" and result["mode"] == "all"
    assert [(a["offer_id"], a["amount"]) for a in result["awards"]] == [("gold-basket", 5.0)]
    assert result["total_awarded"] == 5.0
    outcomes = {o["offer_id"]: o for o in result["offers"]}
    assert outcomes["gold-basket"]["status"] == "applied"
    assert outcomes["gold-basket"]["amount"] == 5.0
    assert "failed" not in outcomes["gold-basket"]
    # the type rule made the card credit (identifier starting with 5)
    assert outcomes["electron-any-type"]["failed"] == [
        {"condition": "units", "message": "units: store-003 (group south) not in card-desk"},
        {"condition": "payment_medium", "message": "payment_medium: brand visa not in electron"},
    ]
    staff = {**GOLD_BASKET, "segments": ["gold", "staff"]}
    staff["event"] = {**GOLD_BASKET["event"], "products": [{"sku": "BASKET", "net_amount": 42}]}
    result = client.post("/v1/simulations", json=staff).json()
    assert result["awards"] == []
    gold = {o["offer_id"]: o for o in result["offers"]}["gold-basket"]
    assert gold["status"] == "not_applied"
    assert [f["message"] for f in gold["failed"]] == [
        "segment: contact in staff (excluded)",
        "transaction_amount 42.00 < min 50.00",
    ]
    assert counts(app) == before


def test_simulation_of_every_type_needs_no_contact(client: Client) -> None:
    at = "2026-03-04T10:00:00+02:00"
    cases = {
        "achievement": {"performed_on": at, "classification": "course-completed"},
        "referral": {"performed_on": at, "classification": "friend-referral"},
        "financial_achievement": {"performed_on": at, "classification": "top-up", "amount": 150},
        "financial_statement": {
            "performed_on": at,
            "classification": "monthly-statement",
            "period": "2026-02",
            "kpis": [{"kpi": "loan-balance", "product": "LOAN-HOME", "value": 1000}],
        },
        "social_media": {"performed_on": at, "platform": "instagram", "action": "like"},
        "web": {"performed_on": at, "website": "https://rewards.example/offers/x"},
    }
    for event_type, event in cases.items():
        response = client.post("/v1/simulations", json={"type": event_type, "event": event})
        assert response.status_code == 200, (event_type, response.text)
        assert response.json()["event_type"] == event_type
    earned = client.post("/v1/simulations", json={"type": "web", "event": cases["web"]}).json()
    assert earned["awards"][0]["offer_id"] == "offers-page"


def test_simulation_context_prior_awards_period_totals_and_mode(client: Client) -> None:
    weekly = {
        "type": "purchase",
        "event": {
            "performed_on": moment(),
            "performed_by_unit": "weekly-shop",
            "products": [{"sku": "X", "net_amount": 1}],
        },
    }
    assert client.post("/v1/simulations", json=weekly).json()["total_awarded"] == 3.0
    exhausted = client.post("/v1/simulations", json={**weekly, "prior_awards": {"weekly-once": 1}})
    outcome = {o["offer_id"]: o for o in exhausted.json()["offers"]}["weekly-once"]
    assert outcome["failed"] == [
        {"condition": "max_awards", "message": "max_awards: 1 award(s) in the last 7 days, max 1"}
    ]
    group = {**weekly, "event": {**weekly["event"], "performed_by_unit": "group-shop"}}
    immediate = client.post("/v1/simulations", json={**group, "mode": "immediate"}).json()
    assert [a["offer_id"] for a in immediate["awards"]] == ["group-high"]
    everything = client.post("/v1/simulations", json=group).json()
    assert [a["offer_id"] for a in everything["awards"]] == ["group-high", "group-batch-only"]


def test_simulation_prior_awards_as_one_number_count_for_every_offer(client: Client) -> None:
    weekly = {
        "type": "purchase",
        "event": {
            "performed_on": moment(),
            "performed_by_unit": "weekly-shop",
            "products": [{"sku": "X", "net_amount": 1}],
        },
    }
    by_offer = client.post("/v1/simulations", json={**weekly, "prior_awards": {"weekly-once": 1}})
    every = client.post("/v1/simulations", json={**weekly, "prior_awards": 1})
    assert every.status_code == 200, every.text
    assert every.json()["offers"] == by_offer.json()["offers"]
    assert every.json()["total_awarded"] == 0
    assert every.json()["warnings"] == []
    refused = client.post("/v1/simulations", json={**weekly, "prior_awards": -1})
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["path"] == "/prior_awards"


def test_simulation_warns_of_an_unknown_store_and_awards_as_the_server(client: Client) -> None:
    body = {
        "type": "web",
        "event": {
            "performed_on": "2026-03-04T10:00:00+02:00",
            "performed_by_unit": "store-999",
            "website": "https://rewards.example/offers/x",
        },
        "prior_awards": {"offers-pag": 1},
    }
    response = client.post("/v1/simulations", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["warnings"] == [
        "performed_by_unit 'store-999' is not a unit of the definition: offers limited to "
        "units or merchants do not apply to it (the server would accept the event as it is)",
        "prior_awards: no offer has the id 'offers-pag'",
    ]
    assert [a["offer_id"] for a in result["awards"]] == ["offers-page"]  # as the server
    fine = {**body, "prior_awards": {}}
    fine["event"] = {k: v for k, v in body["event"].items() if k != "performed_by_unit"}
    assert client.post("/v1/simulations", json=fine).json()["warnings"] == []
    document = client.get("/schema/openapi.json").json()
    [answer] = [
        schema
        for name, schema in document["components"]["schemas"].items()
        if "SimulationOut" in name
    ]
    assert answer["properties"]["warnings"]["type"] == "array"


def test_simulation_refusals_point_under_event(client: Client) -> None:
    response = client.post(
        "/v1/simulations",
        json={
            "type": "purchase",
            "event": {
                "performed_on": "2026-03-04T10:00:00+02:00",
                "products": [{"sku": "A", "net_amount": 1, "total_amount": 2}],
            },
        },
    )
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "validation_failed"
    assert problem["errors"] == [
        {
            "path": "/event/performed_by_unit",
            "message": "'performed_by_unit' is a required property",
        }
    ]
    mismatch = client.post(
        "/v1/simulations",
        json={
            "type": "purchase",
            "event": {
                "performed_on": "2026-03-04T10:00:00+02:00",
                "performed_by_unit": "x",
                "products": [{"sku": "A", "net_amount": 1, "total_amount": 2}],
            },
        },
    ).json()
    assert mismatch["code"] == "totals_mismatch"
    assert mismatch["errors"][0]["path"] == "/event/products/0/total_amount"
    for body, code, path in (
        (
            {
                "type": "achievement",
                "event": {"performed_on": "2026-03-04T10:00:00Z", "classification": "top-up"},
            },
            "classification_not_allowed",
            "/event/classification",
        ),
        (
            {
                "type": "purchase",
                "event": {
                    "performed_on": "2026-03-04T10:00:00Z",
                    "performed_by_unit": "x",
                    "currency": "JPY",
                    "products": [{"sku": "A", "net_amount": 1}],
                },
            },
            "unknown_currency",
            "/event/currency",
        ),
        (
            {
                "type": "financial_statement",
                "event": {
                    "performed_on": "2026-03-04T10:00:00Z",
                    "period": "2026-01",
                    "kpis": [{"kpi": "nope", "value": 1}],
                },
            },
            "kpi_not_found",
            "/event/kpis/0/kpi",
        ),
        ({"type": "spend_request", "event": {}}, "validation_failed", "/type"),
        ({"type": "web", "event": {}, "colour": 1}, "validation_failed", "/colour"),
    ):
        response = client.post("/v1/simulations", json=body)
        assert response.status_code == 422, body
        assert (response.json()["code"], response.json()["errors"][0]["path"]) == (code, path)
    far = client.post(
        "/v1/simulations",
        json={
            "type": "web",
            "event": {"performed_on": "9999-12-31T23:59:59-05:00", "website": "https://x.test/"},
        },
    )
    assert far.status_code == 422  # years 2000-2999 only, by the event's schema
    assert [error["path"] for error in far.json()["errors"]] == ["/event/performed_on"]
    assert "does not match" in far.json()["errors"][0]["message"]


def test_a_future_event_may_be_simulated(client: Client) -> None:
    body = {
        "type": "web",
        "event": {
            "performed_on": "2030-01-01T10:00:00Z",
            "website": "https://rewards.example/offers/",
        },
    }
    assert client.post("/v1/simulations", json=body).json()["total_awarded"] == 0.25


def test_integrators_may_simulate(client: Client) -> None:
    response = client.post(
        "/v1/simulations",
        json=GOLD_BASKET,
        headers={"Authorization": f"Bearer {INTEGRATOR_KEY}"},
    )
    assert response.status_code == 200


# ---- explanations of recorded events --------------------------------------------------


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_explain_a_recorded_event(
    client: Client, app: Litestar, new_contact: Callable[..., Any]
) -> None:
    ann = new_contact(segments=["gold", "staff"])
    body = {
        "contact": {"contact_id": ann["id"]},
        "performed_on": moment(),
        "performed_by_unit": "weekly-shop",
        "reference_number": "R-1",
        "process_immediately": True,
        "products": [{"sku": "X", "net_amount": "60.00"}],
    }
    first = client.post("/v1/events/purchases", json=body).json()
    assert [a["offer_id"] for a in first["awards"]] == ["weekly-once"]
    second = client.post("/v1/events/purchases", json=body).json()
    assert second["awards"] == []  # once a week
    runtime = runtime_of(app)
    with app.state.database.transaction(write=False) as session:
        mine = simulation.explain_event(session, runtime, first["id"])
        again = simulation.explain_event(session, runtime, second["id"])
        with pytest.raises(simulation.EventNotFound):
            simulation.explain_event(session, runtime, "00000000-0000-0000-0000-000000000000")
    # the event's own award does not count against it
    assert [(a.offer_id, a.amount) for a in mine.awards] == [("weekly-once", Decimal("3.00"))]
    outcomes = {o.offer_id: o for o in again.offers}
    assert [f.message for f in outcomes["weekly-once"].failed] == [
        "max_awards: 1 award(s) in the last 7 days, max 1"
    ]
    assert [f.message for f in outcomes["gold-basket"].failed][:2] == [
        "segment: contact in staff (excluded)",
        "units: weekly-shop (group weekly) not in store-003, south",
    ]
    assert counts(app) == (2, 1)


# ---- reload -----------------------------------------------------------------------------


def test_reload_unchanged_changed_and_refused(
    client: Client, app: Litestar, rulesets_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = runtime_of(app)
    first = runtime.rulesets.version
    unchanged = client.post("/v1/rulesets/reload")
    assert unchanged.status_code == 200
    assert unchanged.json() | {"loaded_at": None, "files": None} == {
        "version": first,
        "previous_version": first,
        "changed": False,
        "loaded_at": None,
        "files": None,
        "offers": len(runtime.rulesets.offers),
    }
    with_extra_offers(rulesets_dir, "1", "2")
    changed = client.post("/v1/rulesets/reload").json()
    second = folder_version(rulesets_dir)
    assert (changed["version"], changed["previous_version"], changed["changed"]) == (
        second,
        first,
        True,
    )
    assert client.get("/v1/rulesets").json()["version"] == second
    assert {o["id"] for o in client.get("/v1/offers").json()["items"]} >= {"extra-one", "extra-two"}

    # a broken edit is refused: 422 with every problem, the old set keeps serving
    path = rulesets_dir / "achievement.yaml"
    good = path.read_text()
    write_atomically(path, good.replace("award: {amount: 2}", "award: {amount: two}"))
    broken_line = path.read_text().splitlines().index("    award: {amount: two}") + 1
    with caplog.at_level(logging.ERROR, logger="rewards.rulesets"):
        refused = client.post("/v1/rulesets/reload")
    assert refused.status_code == 422
    problem = refused.json()
    assert problem["code"] == "rulesets_invalid"
    assert problem["errors"] == [
        {
            "path": f"{path}:{broken_line}:21",
            "message": "offer extra-two: award.amount: must be a number, not 'two'",
        }
    ]
    assert f"version {second} keeps serving" in problem["detail"]
    described = client.get("/v1/rulesets").json()
    assert described["version"] == second
    assert described["errors"] == [
        f"{path}:{broken_line}:21: offer extra-two: award.amount: must be a number, not 'two'"
    ]
    assert any(f"{path}:{broken_line}:21" in r.getMessage() for r in caplog.records)
    simulated = client.post(
        "/v1/simulations",
        json={
            "type": "achievement",
            "event": {"performed_on": moment(), "classification": "course-completed"},
        },
    ).json()
    assert simulated["ruleset_version"] == second and simulated["total_awarded"] == 5.5

    # fixed again: the errors go away
    write_atomically(path, good)
    assert client.post("/v1/rulesets/reload").json()["changed"] is False
    assert client.get("/v1/rulesets").json()["errors"] == []


def test_a_folder_with_warnings_is_served_and_its_warnings_logged_once(
    client: Client, rulesets_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def warned(phase: Literal["setup", "call"]) -> list[str]:
        return [
            r.getMessage()
            for r in caplog.get_records(phase)
            if "warning: no catalogue" in r.getMessage()
        ]

    # loaded when the app was made: the HTTP tests' offers declare no catalogue
    [logged] = warned("setup")
    assert f"{rulesets_dir / 'definition.yaml'}:3:1: warning: no catalogue" in logged
    assert client.get("/v1/rulesets").json()["errors"] == []
    assert client.post("/v1/rulesets/reload").json()["changed"] is False
    assert warned("call") == []  # the same version: not loaded again, not logged again
    with_extra_offers(rulesets_dir, "1", "2")
    assert client.post("/v1/rulesets/reload").json()["changed"] is True
    assert len(warned("call")) == 1  # a new version: its warnings, once


def test_reload_is_for_admins(client: Client) -> None:
    response = client.post(
        "/v1/rulesets/reload", headers={"Authorization": f"Bearer {INTEGRATOR_KEY}"}
    )
    assert response.status_code == 403


def test_reload_of_a_vanished_folder_is_refused(
    client: Client, rulesets_dir: Path, app: Litestar
) -> None:
    version = runtime_of(app).rulesets.version
    shutil.rmtree(rulesets_dir)
    response = client.post("/v1/rulesets/reload")
    assert response.status_code == 422
    assert response.json()["errors"][0]["message"].startswith("cannot read the folder")
    assert runtime_of(app).rulesets.version == version


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_versions_seen(
    client: Client, app: Litestar, rulesets_dir: Path, new_contact: Callable[..., Any]
) -> None:
    runtime = runtime_of(app)
    first = runtime.rulesets.version
    ann = new_contact()
    body = {
        "contact": {"contact_id": ann["id"]},
        "performed_on": moment(),
        "classification": "course-completed",
        "process_immediately": True,
    }
    assert client.post("/v1/events/achievements", json=body).status_code == 201
    with_extra_offers(rulesets_dir, "1", "2")
    second = client.post("/v1/rulesets/reload").json()["version"]
    assert client.post("/v1/events/achievements", json=body).status_code == 201
    with app.state.database.transaction(write=False) as session:
        seen = reload_service.versions_seen(session, runtime)
    assert [(v.version, v.serving, v.awards) for v in seen] == [
        (second, True, 3),
        (first, False, 1),
    ]
    assert all(v.loaded_at is not None for v in seen)


# ---- concurrent load --------------------------------------------------------------------


def test_reload_under_concurrent_load_serves_exactly_one_version_per_request(
    client: Client, app: Litestar, rulesets_dir: Path, new_contact: Callable[..., Any]
) -> None:
    """Events are recorded (immediate evaluation) while the folder flips between two
    versions and is reloaded: no 5xx, and every event's awards come from one version."""
    with_extra_offers(rulesets_dir, "1", "2")
    assert client.post("/v1/rulesets/reload").json()["changed"]
    version_a = folder_version(rulesets_dir)
    with_extra_offers(rulesets_dir, "3", "4", more=", segments: {exclude: [nobody]}")
    version_b = folder_version(rulesets_dir)
    expected = {
        version_a: {"course-bonus": 2.5, "extra-one": 1.0, "extra-two": 2.0},
        version_b: {"course-bonus": 2.5, "extra-one": 3.0, "extra-two": 4.0},
    }
    contacts = [new_contact() for _ in range(4)]
    failures: list[str] = []
    events: list[dict[str, Any]] = []
    stop = threading.Event()

    def record(contact: dict[str, Any]) -> None:
        while not stop.is_set():
            response = client.post(
                "/v1/events/achievements",
                json={
                    "contact": {"contact_id": contact["id"]},
                    "performed_on": moment(),
                    "classification": "course-completed",
                    "process_immediately": True,
                },
            )
            if response.status_code != 201:
                failures.append(f"{response.status_code} {response.text}")
                return
            events.append(response.json())

    reloads: list[dict[str, Any]] = []

    def flip() -> None:
        for flip_number in range(8):
            if flip_number % 2:
                with_extra_offers(rulesets_dir, "1", "2")
            else:
                with_extra_offers(rulesets_dir, "3", "4", more=", segments: {exclude: [nobody]}")
            response = client.post("/v1/rulesets/reload")
            if response.status_code != 200:
                failures.append(f"reload {response.status_code} {response.text}")
            reloads.append(response.json())
            time.sleep(0.05)
        stop.set()

    threads = [threading.Thread(target=record, args=(c,)) for c in contacts]
    threads.append(threading.Thread(target=flip))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    stop.set()
    assert not failures, failures[:3]
    assert sum(r["changed"] for r in reloads) >= 6
    assert len(events) >= 8
    by_version: dict[str, int] = {}
    with app.state.database.transaction(write=False) as session:
        for event in events:
            got = {a["offer_id"]: a["amount"] for a in event["awards"]}
            assert got in expected.values(), got
            versions = set(
                session.scalars(select(Award.ruleset_version).where(Award.event_id == event["id"]))
            )
            assert len(versions) == 1, versions
            [version] = versions
            assert got == expected[version]
            by_version[version] = by_version.get(version, 0) + 1
    assert set(by_version) == {version_a, version_b}


def test_a_request_holding_the_old_evaluator_finishes_on_the_old_version(
    client: Client, app: Litestar, rulesets_dir: Path
) -> None:
    from rewards.engine import EventFacts

    runtime = runtime_of(app)
    with_extra_offers(rulesets_dir, "1", "2")
    client.post("/v1/rulesets/reload")
    held = runtime.evaluator  # what a request in flight holds
    with_extra_offers(rulesets_dir, "3", "4", more=", segments: {exclude: [nobody]}")
    assert client.post("/v1/rulesets/reload").json()["changed"]
    facts = EventFacts(
        event_type="achievement",
        performed_on=runtime.now(),
        classification="course-completed",
    )
    old = held.evaluate(facts, mode="all")
    new = runtime.evaluator.evaluate(facts, mode="all")
    assert {d.ruleset_version for d in old} == {held.rulesets.version}
    assert [str(d.amount) for d in old] == ["2.50", "1.00", "2.00"]
    assert [str(d.amount) for d in new] == ["2.50", "3.00", "4.00"]


# ---- the folder watcher -----------------------------------------------------------------


def test_a_single_worker_past_its_engine_budget_advises_a_restart_once(
    client: Client, app: Litestar, rulesets_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Value edits build no engine ruleset; a shape edit does, and past the budget a
    server without a supervisor says to restart it (a multi-worker one restarts its
    worker: tests/integration/test_serve_recycle.py)."""
    runtime = runtime_of(app)
    runtime.settings = runtime.settings.with_changes(recycle_after_rulesets=2)
    unique = uuid.uuid4().hex[:8]
    with caplog.at_level(logging.WARNING, logger="rewards.rulesets"):
        segments = f", segments: {{include: [a{unique}]}}"
        with_extra_offers(rulesets_dir, "1", "2", more=segments)  # one new engine ruleset
        assert client.post("/v1/rulesets/reload").json()["changed"]
        with_extra_offers(rulesets_dir, "3", "4", more=segments)  # values only: none
        assert client.post("/v1/rulesets/reload").json()["changed"]
        assert "restart it at a quiet moment" not in caplog.text
        with_extra_offers(rulesets_dir, "3", "4", more=f", segments: {{include: [b{unique}]}}")
        assert client.post("/v1/rulesets/reload").json()["changed"]
        assert caplog.text.count("restart it at a quiet moment") == 1
        with_extra_offers(rulesets_dir, "3", "4", more=f", segments: {{include: [c{unique}]}}")
        assert client.post("/v1/rulesets/reload").json()["changed"]
    assert caplog.text.count("restart it at a quiet moment") == 1
    assert client.get("/health").status_code == 200


def test_the_watcher_reloads_valid_changes_and_reports_refused_ones(
    client: Client, app: Litestar, rulesets_dir: Path
) -> None:
    runtime = runtime_of(app)
    first = runtime.rulesets.version
    folder_watcher = watcher.FolderWatcher(runtime, poll_seconds=0, settle_seconds=0)
    assert folder_watcher.check() is False  # nothing changed
    with_extra_offers(rulesets_dir, "1", "2")
    assert folder_watcher.check() is True
    second = runtime.rulesets.version
    assert second != first and second == folder_version(rulesets_dir)
    path = rulesets_dir / "achievement.yaml"
    write_atomically(path, path.read_text().replace("award: {amount: 2}", "award: {amount: -2}"))
    assert folder_watcher.check() is False
    assert runtime.rulesets.version == second
    [error] = client.get("/v1/rulesets").json()["errors"]
    assert "offer extra-two: award.amount: must be more than 0, not -2" in error
    assert folder_watcher.check() is False  # the refused version is not retried
    write_atomically(path, path.read_text().replace("award: {amount: -2}", "award: {amount: 2}"))
    assert folder_watcher.check() is False  # the serving version again: nothing to load
    assert runtime.rulesets.version == second
    assert client.get("/v1/rulesets").json()["errors"] == []


def test_the_watcher_thread_runs_with_the_app(
    rulesets_dir: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rewards.app import create_app

    monkeypatch.setattr(watcher, "POLL_SECONDS", 0.05)
    monkeypatch.setattr(watcher, "SETTLE_SECONDS", 0.02)
    app = create_app(settings)
    with TestClient(app) as started:
        runtime = runtime_of(app)
        first = runtime.rulesets.version
        with_extra_offers(rulesets_dir, "1", "2")
        deadline = time.monotonic() + 10
        while runtime.rulesets.version == first and time.monotonic() < deadline:
            time.sleep(0.02)
        assert runtime.rulesets.version == folder_version(rulesets_dir)
        assert started.get("/health").json()["rulesets_version"] == runtime.rulesets.version
    assert id(runtime) not in watcher._WATCHERS  # stopped on shutdown
