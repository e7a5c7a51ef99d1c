"""Webhook subscriptions through HTTP, on SQLite and PostgreSQL: create (the secret shown
once), list, read, delete; refusals pointing at their field; roles; a subscription's
deliveries and redelivery (delivery rows written straight into the tables: the dispatcher
makes them in service); the webhooks file synced at start-up."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlmodel import select

from rewards.app import create_app
from rewards.db.database import Database
from rewards.db.notify_tables import Delivery, OutboxRow, WebhookSubscription
from rewards.notify import signing
from rewards.notify.subscriptions import WebhooksFileError, sync_webhooks_file
from rewards.schemas import shared_registry
from rewards.settings import Settings
from tests.conftest import ADMIN_KEY, ANALYST_KEY, BOTH, INTEGRATOR_KEY

Client = TestClient[Litestar]
pytestmark = pytest.mark.parametrize("database_url", BOTH, indirect=True)
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
T0 = datetime(2026, 3, 2, 10, tzinfo=UTC)


def subscribe(client: Client, **fields: Any) -> dict[str, Any]:
    body = {"url": "https://hooks.example.com/rewards", "event_types": ["*"], **fields}
    answer = client.post("/v1/webhooks", json=body)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def test_create_list_read_delete_and_the_secret_is_shown_once(client: Client) -> None:
    created = subscribe(client, event_types=["award.created", "spend.created"], description="CRM")
    assert created["secret"].startswith("whsec_") and signing.verify is not None
    assert created["source"] == "api" and created["active"] is True
    assert created["event_types"] == ["award.created", "spend.created"]
    given = subscribe(client, secret=SECRET)
    assert given["secret"] == SECRET

    listed = client.get("/v1/webhooks").json()
    assert [item["id"] for item in listed["items"]] == [created["id"], given["id"]]
    assert listed["next_cursor"] is None
    read = client.get(f"/v1/webhooks/{created['id']}")
    assert read.status_code == 200
    assert "secret" not in read.json() and all("secret" not in i for i in listed["items"])
    assert SECRET not in client.get("/v1/webhooks").text
    assert {k: v for k, v in created.items() if k != "secret"} == read.json()

    first = client.get("/v1/webhooks", params={"limit": 1}).json()
    assert [i["id"] for i in first["items"]] == [created["id"]]
    second = client.get("/v1/webhooks", params={"limit": 1, "cursor": first["next_cursor"]})
    assert [i["id"] for i in second.json()["items"]] == [given["id"]]

    assert client.delete(f"/v1/webhooks/{created['id']}").status_code == 204
    gone = client.get(f"/v1/webhooks/{created['id']}")
    assert gone.status_code == 404 and gone.json()["code"] == "webhook_not_found"
    assert client.delete(f"/v1/webhooks/{created['id']}").status_code == 404


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"url": "ftp://hooks.example.com/x"}, "/url"),
        ({"url": "/relative/path"}, "/url"),
        ({"url": "https://user:pw@hooks.example.com/"}, "/url"),
        ({"event_types": ["award.created", "nope"]}, "/event_types/1"),
        ({"event_types": []}, "/event_types"),
        ({"event_types": ["*", "award.created"]}, "/event_types/0"),
        ({"secret": "whsec_tooshort"}, "/secret"),
        ({"secret": "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, "/secret"),
        ({"secret": "whsec_" + "QUFB" * 7}, "/secret"),  # 21 bytes
        ({"colour": "blue"}, "/colour"),
    ],
)
def test_refusals_point_at_the_field(client: Client, fields: dict[str, Any], path: str) -> None:
    body = {"url": "https://hooks.example.com/rewards", "event_types": ["*"], **fields}
    answer = client.post("/v1/webhooks", json=body)
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert answer.headers["content-type"] == "application/problem+json"
    assert problem["code"] == "validation_failed"
    assert path in [error["path"] for error in problem["errors"]], problem


def test_only_admins_write_and_analysts_read(client: Client) -> None:
    created = subscribe(client)
    base = f"/v1/webhooks/{created['id']}"
    for key in (INTEGRATOR_KEY, ANALYST_KEY):
        auth = {"Authorization": f"Bearer {key}"}
        body = {"url": "https://x.example.com/", "event_types": ["*"]}
        assert client.post("/v1/webhooks", json=body, headers=auth).status_code == 403
        assert client.delete(base, headers=auth).status_code == 403
        assert client.post(f"{base}/deliveries/1/redeliver", headers=auth).status_code == 403
        assert client.post(f"{base}/deliveries/redeliver-dead", headers=auth).status_code == 403
    integrator = {"Authorization": f"Bearer {INTEGRATOR_KEY}"}
    assert client.get("/v1/webhooks", headers=integrator).status_code == 403
    analyst = {"Authorization": f"Bearer {ANALYST_KEY}"}
    assert client.get("/v1/webhooks", headers=analyst).status_code == 200
    read = client.get(base, headers=analyst)
    assert read.status_code == 200 and "secret" not in read.json()
    assert client.get(f"{base}/deliveries", headers=analyst).status_code == 200


def _deliveries(database: Database, subscription_id: str) -> list[int]:
    """Four messages of two contacts and one delivery each: delivered, dead, pending,
    dead (ids in that order)."""
    with database.transaction() as session:
        messages = [
            OutboxRow(type="award.created", contact_id="c-1", payload="{}", created_at=T0),
            OutboxRow(type="wallet.balance_changed", contact_id="c-1", payload="{}"),
            OutboxRow(type="spend.created", contact_id="c-2", payload="{}"),
            OutboxRow(type="rulesets.reloaded", contact_id=None, payload="{}"),
        ]
        session.add_all(messages)
        session.flush()
        states = [
            {"status": "delivered", "attempts": 1, "last_status": 204, "delivered_at": T0},
            {"status": "dead", "attempts": 20, "last_status": 500, "last_error": "HTTP 500"},
            {"status": "pending", "attempts": 0},
            {"status": "dead", "attempts": 20, "last_error": "ConnectError: no answer"},
        ]
        rows = [
            Delivery(
                subscription_id=subscription_id,
                outbox_id=message.id or 0,
                contact_key=message.contact_id or "",
                next_attempt_at=T0 + timedelta(days=1),
                first_attempt_at=T0 if state["attempts"] else None,
                last_attempt_at=T0 if state["attempts"] else None,
                **state,
            )
            for message, state in zip(messages, states, strict=True)
        ]
        session.add_all(rows)
        session.flush()
        return [row.id or 0 for row in rows]


def test_deliveries_newest_first_by_status_and_redelivery(client: Client, app: Litestar) -> None:
    created = subscribe(client)
    other = subscribe(client)
    base = f"/v1/webhooks/{created['id']}"
    ids = _deliveries(app.state.database, created["id"])

    page = client.get(f"{base}/deliveries").json()
    assert [d["id"] for d in page["items"]] == ids[::-1] and page["next_cursor"] is None
    oldest = page["items"][-1]
    assert oldest["type"] == "award.created" and oldest["contact_id"] == "c-1"
    assert oldest["status"] == "delivered" and oldest["last_status"] == 204
    assert oldest["delivered_at"] == "2026-03-02T10:00:00Z"
    assert set(oldest) == {
        "id", "outbox_id", "type", "contact_id", "status", "attempts", "next_attempt_at",
        "first_attempt_at", "last_attempt_at", "last_status", "last_error", "delivered_at",
    }  # fmt: skip
    assert (
        page["items"][0]["contact_id"] is None and page["items"][0]["type"] == "rulesets.reloaded"
    )

    dead = client.get(f"{base}/deliveries", params={"status": "dead"}).json()["items"]
    assert [d["id"] for d in dead] == [ids[3], ids[1]]
    first = client.get(f"{base}/deliveries", params={"limit": 3}).json()
    rest = client.get(f"{base}/deliveries", params={"limit": 3, "cursor": first["next_cursor"]})
    assert [d["id"] for d in first["items"] + rest.json()["items"]] == ids[::-1]
    assert client.get(f"/v1/webhooks/{other['id']}/deliveries").json()["items"] == []

    before = datetime.now(UTC) - timedelta(seconds=5)
    again = client.post(f"{base}/deliveries/{ids[1]}/redeliver")
    assert again.status_code == 200, again.text
    redelivered = again.json()
    # a fresh retry budget; the last attempt's outcome stays
    assert redelivered["status"] == "pending" and redelivered["attempts"] == 0
    assert redelivered["first_attempt_at"] is None
    assert redelivered["last_error"] == "HTTP 500"
    assert (
        before < datetime.fromisoformat(redelivered["next_attempt_at"]) < T0 + timedelta(days=300)
    )
    # a delivered one may be sent again too (a receiver lost it)
    resent = client.post(f"{base}/deliveries/{ids[0]}/redeliver").json()
    assert resent["status"] == "pending" and resent["delivered_at"] == "2026-03-02T10:00:00Z"

    # the deliveries of another subscription, or none: 404
    for path in (
        f"/v1/webhooks/{other['id']}/deliveries/{ids[3]}/redeliver",
        f"{base}/deliveries/999999/redeliver",
    ):
        missing = client.post(path)
        assert missing.status_code == 404 and missing.json()["code"] == "delivery_not_found"

    everything = client.post(f"{base}/deliveries/redeliver-dead")
    assert everything.status_code == 200 and everything.json() == {"redelivered": 1}
    statuses = {d["id"]: d["status"] for d in client.get(f"{base}/deliveries").json()["items"]}
    assert set(statuses.values()) == {"pending"}

    # deleting the subscription removes its deliveries
    assert client.delete(base).status_code == 204
    with app.state.database.transaction() as session:
        left = session.scalars(select(Delivery).where(Delivery.subscription_id == created["id"]))
        assert left.all() == []


def test_unknown_subscription_and_bad_ids(client: Client) -> None:
    for method, path in [
        ("GET", "/v1/webhooks/nope"),
        ("DELETE", "/v1/webhooks/nope"),
        ("GET", "/v1/webhooks/nope/deliveries"),
        ("POST", "/v1/webhooks/nope/deliveries/1/redeliver"),
        ("POST", "/v1/webhooks/nope/deliveries/redeliver-dead"),
    ]:
        answer = client.request(method, path)
        assert answer.status_code == 404, (method, path)
        assert answer.json()["code"] == "webhook_not_found"
    assert client.get("/v1/webhooks/" + "x" * 37).status_code == 400
    assert client.get("/v1/webhooks/nope/deliveries", params={"status": "lost"}).status_code == 400
    assert client.get("/v1/webhooks", params={"cursor": "AAAA"}).status_code == 400


# ---- the webhooks file ----------------------------------------------------------------


@pytest.fixture
def webhooks_file(tmp_path: Path) -> Path:
    return tmp_path / "webhooks.yaml"


def _serve(settings: Settings, path: Path | None) -> Iterator[Client]:
    app = create_app(settings.with_changes(webhooks_file=path))
    with TestClient(app, raise_server_exceptions=True) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        yield client


def _by_id(client: Client) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in client.get("/v1/webhooks").json()["items"]}


def test_the_file_creates_updates_and_switches_off(
    settings: Settings, webhooks_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_CRM_SECRET", SECRET)
    webhooks_file.write_text(
        "- id: crm\n"
        "  url: https://crm.example.com/hooks\n"
        "  event_types: [award.created, award.reversed]\n"
        "  secret_env: TEST_CRM_SECRET\n"
        "  description: The CRM\n"
        "- id: warehouse\n"
        "  url: http://warehouse.internal:8080/in\n"
        "  event_types: ['*']\n"
        f"  secret: {signing.new_secret()}\n"
    )
    for client in _serve(settings, webhooks_file):
        found = _by_id(client)
        assert set(found) == {"crm", "warehouse"}
        assert found["crm"]["source"] == "config" and found["crm"]["active"]
        assert found["crm"]["description"] == "The CRM"
        refused = client.delete("/v1/webhooks/crm")
        assert refused.status_code == 409 and refused.json()["code"] == "webhook_from_config"
        api = subscribe(client)
    with Database(settings.database_url).transaction() as session:
        crm = session.get(WebhookSubscription, "crm")
        assert crm is not None and crm.secret == SECRET

    webhooks_file.write_text(
        "- id: crm\n"
        "  url: https://crm.example.com/v2/hooks\n"
        "  event_types: ['*']\n"
        "  secret_env: TEST_CRM_SECRET\n"
    )
    for client in _serve(settings, webhooks_file):
        found = _by_id(client)
        assert found["crm"]["url"] == "https://crm.example.com/v2/hooks"
        assert found["crm"]["event_types"] == ["*"] and "description" not in found["crm"]
        assert found["warehouse"]["active"] is False  # left the file: switched off
        assert found[api["id"]]["active"] is True  # the API's are not the file's business

    webhooks_file.write_text(
        webhooks_file.read_text()
        + (
            "- id: warehouse\n"
            "  url: http://warehouse.internal:8080/in\n"
            "  event_types: ['*']\n"
            f"  secret: {SECRET}\n"
        )
    )
    for client in _serve(settings, webhooks_file):
        assert _by_id(client)["warehouse"]["active"] is True  # back in the file: back on
    for client in _serve(settings, None):  # no file at all: every config one off
        found = _by_id(client)
        assert not found["crm"]["active"] and not found["warehouse"]["active"]
        assert found[api["id"]]["active"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- id: a\n  url: ftp://x.example.com\n  event_types: ['*']\n  secret: S\n", "/url"),
        (
            "- id: a\n  url: https://x.example.com\n  event_types: [nope]\n  secret: S\n",
            "/event_types/0",
        ),
        ("- id: a\n  url: https://x.example.com\n  event_types: ['*']\n", "a secret is required"),
        (
            "- id: a\n  url: https://x.example.com\n  event_types: ['*']\n  secret: whsec_x\n",
            "/secret",
        ),
        (
            "- id: a\n  url: https://x.example.com\n  event_types: ['*']\n  secret_env: TEST_UNSET_VARIABLE\n",
            "TEST_UNSET_VARIABLE",
        ),
        (
            "- id: a b\n  url: https://x.example.com\n  event_types: ['*']\n  secret: S\n",
            "id must be",
        ),
        (
            "- id: a\n  url: https://x.example.com\n  event_types: ['*']\n  secret: S\n  colour: blue\n",
            "colour",
        ),
        (
            "- id: a\n  url: https://x.example.com\n  event_types: ['*']\n  secret: S\n" * 2,
            "listed twice",
        ),
        ("url: https://x.example.com\n", "expected a list"),
    ],
)
def test_a_faulty_file_is_refused_naming_the_entry(
    settings: Settings, webhooks_file: Path, text: str, message: str
) -> None:
    """What stops ``create_app``'s start-up (the service does not start with a faulty
    file); nothing of it is written."""
    webhooks_file.write_text(text.replace("secret: S", f"secret: {SECRET}"))
    database = Database(settings.database_url)
    with pytest.raises(WebhooksFileError, match=message) as refused:
        sync_webhooks_file(database, shared_registry(), webhooks_file, environ={})
    assert str(refused.value).startswith(f"{webhooks_file}: ")
    with database.transaction() as session:
        assert session.scalars(select(WebhookSubscription)).all() == []
    database.dispose()
