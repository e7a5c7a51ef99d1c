"""HTTP: POST /v1/evaluation-runs (admin, 202, runs in the background) and
GET /v1/evaluation-runs/{id}."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from rewards import runs
from tests.conftest import BOTH, INTEGRATOR_KEY, ROOT

SHIPPED = ROOT / "rulesets"


@pytest.fixture
def rulesets_dir() -> Path:
    return SHIPPED


def _wait(client: TestClient[Litestar], run_id: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/v1/evaluation-runs/{run_id}")
        assert response.status_code == 200, response.text
        run: dict[str, Any] = response.json()
        if run["status"] != "running" or time.monotonic() > deadline:
            return run
        time.sleep(0.05)


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_an_admin_starts_a_run_and_follows_it(
    client: TestClient[Litestar], new_contact: Any
) -> None:
    contact = new_contact()
    body = {
        "contact": {"wallet_code": contact["wallet"]["code"]},
        "performed_on": "2026-03-02T12:00:00+02:00",
        "classification": "5-star-service",
    }
    created = client.post("/v1/events/achievements", json=body)
    assert created.status_code == 201 and created.json()["awards"] == []

    started = client.post("/v1/evaluation-runs", json={})
    assert started.status_code == 202, started.text
    assert started.json()["status"] == "running"

    run = _wait(client, started.json()["id"])
    assert run["status"] == "finished"
    assert run["events_evaluated"] == 1 and run["awards"] == 1
    assert run["total_awarded"] == 5
    assert run["started_at"] <= run["finished_at"]
    assert run["offers"] == [{"offer_id": "five-star-service", "awards": 1, "total_awarded": 5}]
    event = client.get(f"/v1/events/{created.json()['id']}").json()
    assert [a["offer_id"] for a in event["awards"]] == ["five-star-service"]
    assert event["wallet"]["balance"] == 5


def test_as_of_is_taken_from_the_body(client: TestClient[Litestar]) -> None:
    started = client.post("/v1/evaluation-runs", json={"as_of": "2026-01-01T00:00:00Z"})
    assert started.status_code == 202
    run = _wait(client, started.json()["id"])
    assert run["as_of"].startswith("2026-01-01T00:00:00")


def test_only_admins_start_runs(client: TestClient[Litestar]) -> None:
    response = client.post(
        "/v1/evaluation-runs", json={}, headers={"Authorization": f"Bearer {INTEGRATOR_KEY}"}
    )
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")


def test_a_second_run_is_a_409_while_one_runs(client: TestClient[Litestar], app: Litestar) -> None:
    running = runs.start_run(app.state.database, app.state.runtime, source="test")
    response = client.post("/v1/evaluation-runs", json={})
    assert response.status_code == 409
    problem = response.json()
    assert problem["code"] == "run_in_progress" and running.id in problem["detail"]
    runs.execute_run(app.state.database, app.state.runtime, running.id)
    assert client.post("/v1/evaluation-runs", json={}).status_code == 202


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b'{"as_of": "yesterday"}', 422, "validation_failed"),
        (b'{"as_of": "2026-01-01T00:00:00"}', 422, "validation_failed"),  # no zone
        (b'{"since": "2026-01-01T00:00:00Z"}', 422, "validation_failed"),
        (b"{", 400, "invalid_json"),
    ],
)
def test_bad_bodies_are_refused(
    client: TestClient[Litestar], raw: bytes, status: int, code: str
) -> None:
    response = client.post(
        "/v1/evaluation-runs", content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status
    assert response.json()["code"] == code


def test_an_unknown_run_is_a_404_and_integrators_may_read_runs(
    client: TestClient[Litestar], app: Litestar
) -> None:
    missing = client.get("/v1/evaluation-runs/no-such-run")
    assert missing.status_code == 404 and missing.json()["code"] == "run_not_found"
    done = runs.run_evaluation(app.state.database, app.state.runtime, source="test")
    seen = client.get(
        f"/v1/evaluation-runs/{done.id}", headers={"Authorization": f"Bearer {INTEGRATOR_KEY}"}
    )
    assert seen.status_code == 200 and seen.json()["status"] == "finished"


def test_the_openapi_document_carries_the_request_schema(client: TestClient[Litestar]) -> None:
    document = client.get("/schema/openapi.json").json()
    operation = document["paths"]["/v1/evaluation-runs"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"as_of"}
    assert {"202", "400", "401", "403", "409", "413", "422"} <= set(operation["responses"])
    assert {"200", "401", "404"} <= set(
        document["paths"]["/v1/evaluation-runs/{run_id}"]["get"]["responses"]
    )
