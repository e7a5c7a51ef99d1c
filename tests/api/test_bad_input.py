"""Bad input is a 4xx problem pointing at the field, never a 500 (issue 16, defects 1
and 4), on SQLite and PostgreSQL: bodies nested deeper than anyone means, and control
characters (NUL included, which PostgreSQL cannot store in text) in bodies, paths and
query values."""

from __future__ import annotations

import json
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from tests.conftest import BOTH, moment, purchase_body

Client = TestClient[Litestar]
pytestmark = pytest.mark.parametrize("database_url", BOTH, indirect=True)

BODY_ENDPOINTS = [
    "/v1/contacts",
    "/v1/events/purchases",
    "/v1/events/referrals",
    "/v1/events/bulk",
    "/v1/purchase-estimates",
    "/v1/invoices",
    "/v1/simulations",
    "/v1/evaluation-runs",
]


@pytest.mark.parametrize("depth", [40, 1_000, 10_000])  # 10,000: under the 64 KB body limit
@pytest.mark.parametrize("path", BODY_ENDPOINTS)
def test_deeply_nested_json_is_a_400(client: Client, path: str, depth: int) -> None:
    for body in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
        response = client.post(path, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, (path, depth, response.text)
        problem = response.json()
        assert problem["code"] == "invalid_json"
        assert "nests deeper than 32 levels" in problem["detail"]


@pytest.mark.parametrize("character", ["\u0000", "\u0007", "\u001b", "\u007f"])
def test_control_characters_in_a_body_are_refused_at_their_field(
    client: Client, new_contact: Any, character: str
) -> None:
    refused = client.post("/v1/contacts", json={"name": f"Ann{character}Example"})
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"] == [
        {"path": "/name", "message": "control characters are not allowed"}
    ]
    wallet = new_contact()["wallet"]["code"]
    for field in ("description", "external_system", "external_reference"):
        body = purchase_body(wallet, **{field: f"x{character}y"})
        answer = client.post("/v1/events/purchases", json=body)
        assert answer.status_code == 422, (field, answer.text)
        assert answer.json()["errors"][0]["path"] == f"/{field}"
    key = client.post("/v1/contacts", json={"segments": ["gold"], f"n{character}": 1})
    assert key.status_code == 422
    # Tab, line feed and carriage return are text, not control: a name may not hold
    # them by its schema, a description may.
    fine = client.post(
        "/v1/events/purchases", json=purchase_body(wallet, description="two\nlines\tand\r")
    )
    assert fine.status_code == 201, fine.text


def test_control_characters_in_paths_are_a_404_and_in_queries_a_400(client: Client) -> None:
    for url, status in (
        ("/v1/events/%00", 404),
        ("/v1/contacts/abc%00def", 404),
        ("/v1/wallets/W%00", 404),
        ("/v1/events?contact_id=%00", 400),
        (f"/v1/events?performed_from={moment()}%00".replace("+", "%2B"), 400),
    ):
        response = client.get(url)
        assert response.status_code == status, (url, response.text)
        assert response.json()["errors"][0]["message"] == "control characters are not allowed"


def test_business_timestamps_outside_the_calendar_range_are_refused(
    client: Client, new_contact: Any
) -> None:
    """Issue 16, defects 2 and 3: years before 2000 are refused at the field (the
    schemas' patterns and the server agree: a year of 2000 in any offset is accepted),
    query timestamps that leave the calendar in UTC are taken as its end, never a 500."""
    contact = new_contact()
    contact_id, wallet = contact["id"], contact["wallet"]["code"]
    for performed_on in (
        "0001-01-01T00:00:00+23:59",
        "0001-01-01T00:00:00Z",
        "1999-12-31T23:59:59Z",
        "2023-02-29T00:00:00Z",  # not a date: the schema's pattern knows leap years
    ):
        answer = client.post(
            "/v1/events/purchases", json=purchase_body(wallet, performed_on=performed_on)
        )
        assert answer.status_code == 422, (performed_on, answer.text)
        assert answer.json()["errors"][0]["path"] == "/performed_on"
    for performed_on in (
        "2000-01-01T00:00:00Z",
        "2000-01-01T00:30:00+23:59",
        "2024-02-29t10:00:00z",
    ):
        accepted = client.post(
            "/v1/events/purchases", json=purchase_body(wallet, performed_on=performed_on)
        )
        assert accepted.status_code == 201, (performed_on, accepted.text)
    for url in (
        "/v1/events?performed_from=0001-01-01T00:00:00%2B23:59",
        "/v1/events?performed_from=2023-02-29T00:00:00Z",
        "/v1/analytics/summary?from=0001-01-01T00:00:00%2B23:59",
    ):
        response = client.get(url)
        assert response.status_code == 400, (url, response.text)
    # The last instant of the calendar west of UTC is past its end in UTC: the end.
    every = client.get("/v1/events?performed_to=9999-12-31T23:59:59-23:59&contact_id=" + contact_id)
    assert every.status_code == 200 and len(every.json()["items"]) == 3, every.text
    summary = client.get("/v1/analytics/summary?to=9999-12-31T23:59:59-23:59")
    assert summary.status_code == 200, summary.text
    run = client.post("/v1/evaluation-runs", json={"as_of": "9999-12-31T23:59:59-10:00"})
    assert run.status_code == 422, run.text
    assert run.json()["errors"][0]["path"] == "/as_of"


def test_bulk_carries_its_1000_events_and_other_bodies_keep_64_kb(client: Client) -> None:
    """Issue 16, defect 6: the bulk endpoint has its own body limit (2 MB), sized for
    1,000 realistic purchases; every other body keeps the general 64 KB."""
    item = {
        "type": "purchase",
        "event": purchase_body(
            "NO-SUCH-WALLET",  # refused cheaply, item by item: the size is what counts
            external_system="pos",
            payment_medium={"brand": "visa", "type": "credit"},
            products=[
                {"sku": f"SKU-{i}", "quantity": 1, "net_amount": "10.00", "vat_amount": "1.90"}
                for i in range(5)
            ],
        ),
    }
    items = [
        item | {"event": item["event"] | {"external_reference": f"B-{i}"}} for i in range(1000)
    ]
    body = json.dumps(items)
    assert 500_000 < len(body) < 2 * 1024 * 1024
    answer = client.post(
        "/v1/events/bulk", content=body, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 200, answer.text[:300]
    results = answer.json()["items"]
    assert len(results) == 1000
    assert {r["problem"]["code"] for r in results} == {"contact_not_found"}
    too_big = client.post(
        "/v1/events/bulk",
        content=json.dumps(items * 3),
        headers={"Content-Type": "application/json"},
    )
    assert too_big.status_code == 413
    contact = client.post(
        "/v1/contacts",
        content=json.dumps({"name": "x" * 70_000}),
        headers={"Content-Type": "application/json"},
    )
    assert contact.status_code == 413
    documented = client.get("/schema/openapi.json").json()["paths"]["/v1/events/bulk"]["post"]
    assert "2,097,152 bytes" in documented["description"] and "429" in documented["description"]


def test_what_the_schemas_allow_the_server_accepts(client: Client, new_contact: Any) -> None:
    """Issue 16, "the schema must be as strict as the server": requests an outside
    schemathesis run generated from the published schemas and saw refused."""
    contact = new_contact()
    wallet = contact["wallet"]["code"]
    # 60.0 is a JSON Schema integer.
    otp = client.post(f"/v1/contacts/{contact['id']}/otp", json={"ttl_seconds": 60.0})
    assert otp.status_code == 201, otp.text
    estimate = client.post(
        "/v1/purchase-estimates",
        json={k: v for k, v in purchase_body(wallet).items() if k != "reference_number"}
        | {"reserve_ttl_seconds": 3442.0},
    )
    assert estimate.status_code == 201, estimate.text
    # Numbers with trailing zeros, exponents and the largest amount with cents.
    for amount in (1.10, 1e2, 99999999.99):
        body = purchase_body(wallet, products=[{"sku": "CAKE", "net_amount": amount}])
        assert client.post("/v1/events/purchases", json=body).status_code == 201, amount
    # An empty cursor is the first page; every date of the calendar, leap days included.
    assert client.get("/v1/events?cursor=").status_code == 200
    assert client.get("/v1/offers?cursor=").status_code == 200
    assert client.get("/v1/events?performed_from=2024-02-29T00:00:00z").status_code == 200


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        ({"net_amount": 1.005}, "/products/0/net_amount", "at most 2 decimals"),
        ({"net_amount": "1.005"}, "/products/0/net_amount", None),
        ({"net_amount": 1, "quantity": 1.0005}, "/products/0/quantity", "at most 3 decimals"),
        ({"net_amount": 1e400}, "/products/0/net_amount", None),
    ],
)
def test_the_schemas_say_how_many_decimals(
    client: Client, new_contact: Any, body: dict[str, Any], path: str, message: str | None
) -> None:
    """Amounts have at most 2 decimals and quantities 3, in the schemas (``multipleOf``,
    checked in exact decimal arithmetic), not only in descriptions."""
    wallet = new_contact()["wallet"]["code"]
    raw = json.dumps(purchase_body(wallet, products=[{"sku": "CAKE"} | body]))
    raw = raw.replace("Infinity", "1e400")  # json.dumps writes 1e400 as Infinity
    answer = client.post(
        "/v1/events/purchases", content=raw, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 422, answer.text
    error = answer.json()["errors"][0]
    assert error["path"] == path
    if message:
        assert error["message"] == message
    document = client.get("/schema/openapi.json").json()
    purchase = document["paths"]["/v1/events/purchases"]["post"]["requestBody"]
    product = purchase["content"]["application/json"]["schema"]["properties"]["products"]
    assert product["items"]["properties"]["quantity"]["multipleOf"] == 0.001
    assert product["items"]["properties"]["net_amount"]["anyOf"][0]["multipleOf"] == 0.01


def test_a_simulation_event_is_typed_by_its_type(client: Client) -> None:
    """``POST /v1/simulations``: ``event`` is the schema of its ``type`` (contact
    identifiers optional), in OpenAPI and at the server, with errors under /event."""
    document = client.get("/schema/openapi.json").json()
    body = document["paths"]["/v1/simulations"]["post"]["requestBody"]
    branches = body["content"]["application/json"]["schema"]["oneOf"]
    web = next(b for b in branches if b["properties"]["type"]["const"] == "web")
    reference = web["properties"]["event"]["$ref"].rsplit("/", 1)[1]
    web_event = document["components"]["schemas"][reference]
    assert "website" in web_event["required"] and "contact" not in web_event["required"]
    refused = client.post("/v1/simulations", json={"type": "web", "event": {"website": 5}})
    assert refused.status_code == 422, refused.text
    assert {e["path"] for e in refused.json()["errors"]} == {
        "/event/performed_on",
        "/event/website",
    }
