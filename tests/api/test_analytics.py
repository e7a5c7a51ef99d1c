"""The analytics summary and the Prometheus metrics."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from rewards.app import create_app
from rewards.settings import Settings
from tests.conftest import ADMIN_KEY, BOTH, INTEGRATOR_KEY, fund

Client = TestClient[Litestar]


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_summary_aggregates_events_awards_spends_and_liability(
    client: Client, new_contact: Any
) -> None:
    ann, bob = new_contact(segments=["gold"]), new_contact()
    fund(client, ann, "20.00")
    fund(client, bob, "5.00")
    purchase = client.post(
        "/v1/events/purchases",
        json={
            "contact": {"contact_id": ann["id"]},
            "performed_on": "2026-03-04T10:00:00+02:00",
            "performed_by_unit": "store-003",
            "reference_number": "A",
            "process_immediately": True,
            "payment_medium": {"brand": "visa", "type": "credit"},
            "products": [{"sku": "BASKET", "net_amount": "100.00"}],
        },
    ).json()
    client.post(
        "/v1/events/spend-requests",
        json={
            "contact": {"contact_id": ann["id"]},
            "performed_on": "2026-03-05T10:00:00+02:00",
            "purchase_event_id": purchase["id"],
            "requested_amount": 7,
        },
    )
    client.post(f"/v1/events/{purchase['id']}/cancel")
    everything = client.get("/v1/analytics/summary").json()
    assert {e["type"]: (e["posted"], e["cancelled"]) for e in everything["events"]} == {
        "financial_achievement": (2, 0),
        "purchase": (0, 1),
        "spend_request": (0, 1),
    }
    assert everything["awards"]["count"] == 3 and everything["awards"]["amount"] == 30.0
    assert everything["awards"]["reversed"] == 5.0
    assert {o["offer_id"]: (o["count"], o["amount"]) for o in everything["awards"]["by_offer"]} == {
        "wallet-load": (2, 25.0),
        "gold-basket": (1, 5.0),
    }
    assert everything["spends"] == {"count": 1, "amount": 7.0}
    assert (
        everything["outstanding_liability"] == 25.0
    )  # 20 + 5 - 5 (reversed) + 7 - 7 (spent, given back)
    march = client.get(
        "/v1/analytics/summary",
        params={"from": "2026-03-01T00:00:00Z", "to": "2026-04-01T00:00:00Z"},
    ).json()
    assert march["events"] == [
        {"type": "purchase", "posted": 0, "cancelled": 1},
        {"type": "spend_request", "posted": 0, "cancelled": 1},
    ]
    assert march["spends"] == {"count": 1, "amount": 7.0}
    assert march["awards"]["by_offer"] == [{"offer_id": "gold-basket", "count": 1, "amount": 5.0}]
    assert march["outstanding_liability"] == 25.0
    assert client.get("/v1/analytics/summary", params={"from": "yesterday"}).status_code == 400


def test_metrics_in_prometheus_format(client: Client, new_contact: Any) -> None:
    fund(client, new_contact(), "3.00")
    del client.headers["Authorization"]
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert (
        'rewards_requests_total{app_name="rewards",method="POST",path="/v1/events/financial-achievements",status_code="201"}'
        in text
    )
    assert 'rewards_events_recorded_total{type="financial_achievement"}' in text
    assert 'rewards_awards_total{offer_id="wallet-load"}' in text
    assert "rewards_engine_evaluation_seconds_bucket" in text


def test_metrics_are_open_by_default_and_documented(client: Client) -> None:
    operation = client.get("/schema/openapi.json").json()["paths"]["/metrics"]["get"]
    assert operation["operationId"] == "get_metrics"
    assert list(operation["responses"]["200"]["content"]) == ["text/plain"]
    assert "security" not in operation and "401" not in operation["responses"]
    assert "REWARDS_METRICS_KEY" in operation["description"]
    del client.headers["Authorization"]
    assert client.get("/metrics").status_code == 200


def test_metrics_key_required_when_set(settings: Settings) -> None:
    app = create_app(settings.with_changes(metrics_key="scraper-key"))
    with TestClient(app, raise_server_exceptions=False) as client:
        operation = client.get("/schema/openapi.json").json()["paths"]["/metrics"]["get"]
        assert operation["security"] == [{"BearerAuth": []}]
        assert {"401", "403"} <= set(operation["responses"])

        def scrape(key: str | None) -> Any:
            return client.get("/metrics", headers={"Authorization": f"Bearer {key}"} if key else {})

        for key, status in [
            (None, 401),
            ("nope", 401),
            (INTEGRATOR_KEY, 403),
            ("scraper-key", 200),
            (ADMIN_KEY, 200),
        ]:
            answer = scrape(key)
            assert answer.status_code == status, (key, answer.text)
            if status == 200:
                assert "rewards_requests_total" in answer.text
            else:
                assert answer.headers["content-type"] == "application/problem+json"
        # the scraper's key is no API key
        refused = client.get("/v1/offers", headers={"Authorization": "Bearer scraper-key"})
        assert refused.status_code == 401
