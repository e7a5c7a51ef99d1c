"""Every event type through HTTP: valid and invalid bodies, identification, the
per-type rules of DOMAIN.md, idempotency, listing, cancellation and bulk intake."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from tests.conftest import BOTH, fund, moment, purchase_body

Client = TestClient[Litestar]
pytestmark = pytest.mark.parametrize("database_url", BOTH, indirect=True)


@pytest.fixture
def ann(new_contact: Any) -> dict[str, Any]:
    contact: dict[str, Any] = new_contact(
        code="ANN", cim="CIM-ANN", gift_cards=["GC-ANN"], segments=["gold"]
    )
    return contact


def who(contact: dict[str, Any]) -> dict[str, str]:
    return {"wallet_code": contact["wallet"]["code"]}


def bodies(contact: dict[str, Any], purchase_id: str) -> dict[str, tuple[str, dict[str, Any]]]:
    base = {"contact": who(contact), "performed_on": moment()}
    return {
        "achievement": ("achievements", {**base, "classification": "5-star-service"}),
        "financial_achievement": (
            "financial-achievements",
            {
                **base,
                "classification": "top-up",
                "amount": "150.00",
                "payment_medium": {"brand": "electron", "identifier": "4917000000000001"},
            },
        ),
        "financial_statement": (
            "financial-statements",
            {
                **base,
                "classification": "monthly-statement",
                "period": "2026-10",
                "kpis": [{"kpi": "loan-balance", "product": "LOAN-HOME", "value": 1000}],
            },
        ),
        "social_media": (
            "social-media",
            {**base, "platform": "facebook", "action": "like", "profile": "ann.fb"},
        ),
        "web": ("web-visits", {**base, "website": "https://shop.example/offers"}),
        "spend_request": (
            "spend-requests",
            {**base, "purchase_event_id": purchase_id, "requested_amount": 5},
        ),
    }


def test_purchase_totals_are_computed_and_lines_kept(client: Client, ann: Any) -> None:
    response = client.post("/v1/events/purchases", json=purchase_body(ann["wallet"]["code"]))
    assert response.status_code == 201, response.text
    event = response.json()
    assert event["type"] == "purchase" and event["state"] == "posted" and event["number"] >= 1
    assert [line["total_amount"] for line in event["products"]] == [7.14, 5.36]
    assert (event["net_amount"], event["vat_amount"], event["total_amount"]) == (10.5, 2.0, 12.5)
    assert event["currency"] == "EUR" and event["contact_id"] == ann["id"]
    assert event["awards"] == [] and event["spends"] == []
    assert event["wallet"] == {"code": ann["wallet"]["code"], "balance": 0, "available": 0}
    assert client.get(f"/v1/events/{event['id']}").json() == event


def test_sent_totals_must_agree_to_the_cent(client: Client, ann: Any) -> None:
    ok = purchase_body(ann["wallet"]["code"], total_amount="12.50", net_amount=10.5, vat_amount=2)
    assert client.post("/v1/events/purchases", json=ok).status_code == 201
    wrong = purchase_body(ann["wallet"]["code"], total_amount="12.51")
    response = client.post("/v1/events/purchases", json=wrong)
    assert response.status_code == 422
    assert response.json()["code"] == "totals_mismatch"
    assert response.json()["errors"][0]["path"] == "/total_amount"
    line = purchase_body(ann["wallet"]["code"])
    line["products"][1]["total_amount"] = 5.35
    response = client.post("/v1/events/purchases", json=line)
    assert (
        response.status_code == 422
        and response.json()["errors"][0]["path"] == "/products/1/total_amount"
    )


def test_purchase_in_foreign_currency_is_converted(client: Client, ann: Any) -> None:
    body = purchase_body(
        ann["wallet"]["code"],
        currency="USD",
        products=[{"sku": "TV", "net_amount": "100.00", "vat_amount": "19.00"}],
    )
    event = client.post("/v1/events/purchases", json=body).json()
    assert event["original_currency"] == "USD" and event["original_total_amount"] == 119.0
    assert event["currency"] == "EUR" and event["total_amount"] == 109.48  # 92.00 + 17.48
    unknown = client.post(
        "/v1/events/purchases", json=purchase_body(ann["wallet"]["code"], currency="JPY")
    )
    assert unknown.status_code == 422 and unknown.json()["code"] == "unknown_currency"


@pytest.mark.parametrize(
    "kind", ["wallet_code", "contact_id", "contact_code", "cim", "gift_card", "otp"]
)
def test_every_identifier_kind_identifies_the_contact(client: Client, ann: Any, kind: str) -> None:
    value = {
        "wallet_code": ann["wallet"]["code"],
        "contact_id": ann["id"],
        "contact_code": "ANN",
        "cim": "CIM-ANN",
        "gift_card": "GC-ANN",
    }.get(kind) or client.post(f"/v1/contacts/{ann['id']}/otp", json={}).json()["otp"]
    body = {"contact": {kind: value}, "performed_on": moment(), "classification": "5-star-service"}
    response = client.post("/v1/events/achievements", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["contact_id"] == ann["id"]


@pytest.mark.parametrize(
    "kind", ["wallet_code", "contact_id", "contact_code", "cim", "gift_card", "otp"]
)
def test_unknown_identifier_is_a_clear_422(client: Client, kind: str) -> None:
    value = {"contact_id": str(uuid.uuid4()), "otp": "123456"}.get(kind, "UNKNOWN")
    body = {"contact": {kind: value}, "performed_on": moment(), "classification": "5-star-service"}
    response = client.post("/v1/events/achievements", json=body)
    assert response.status_code == 422
    assert response.json()["code"] == ("otp_invalid" if kind == "otp" else "contact_not_found")
    assert response.json()["errors"][0]["path"] == f"/contact/{kind}"


def test_every_other_event_type_is_recorded(client: Client, ann: Any) -> None:
    fund(client, ann, "10.00")
    purchase = client.post("/v1/events/purchases", json=purchase_body(ann["wallet"]["code"])).json()
    for event_type, (path, body) in bodies(ann, purchase["id"]).items():
        response = client.post(f"/v1/events/{path}", json=body)
        assert response.status_code == 201, (event_type, response.text)
        event = response.json()
        assert event["type"] == event_type and event["contact_id"] == ann["id"]
    statement = client.get("/v1/events", params={"type": "financial_statement"}).json()["items"][0]
    assert statement["period"] == "2026-10" and statement["kpis"][0] == {
        "kpi": "loan-balance",
        "product": "LOAN-HOME",
        "value": 1000,
    }
    spend = client.get("/v1/events", params={"type": "spend_request"}).json()["items"][0]
    assert spend["purchase_event_id"] == purchase["id"] and spend["requested_amount"] == 5


INVALID = {
    "purchases": [
        ({"products": []}, "/products"),
        ({"products": [{"sku": "A", "net_amount": -1}]}, "/products/0/net_amount"),
        ({"products": [{"sku": "A", "net_amount": 1, "quantity": 0}]}, "/products/0/quantity"),
        ({"products": [{"sku": "A", "net_amount": "1.234"}]}, "/products/0/net_amount"),
        ({"products": [{"sku": "A", "net_amount": 1.234}]}, "/products/0/net_amount"),
        ({"products": [{"sku": "A", "net_amount": 1, "quantity": 1.0005}]}, "/products/0/quantity"),
        ({"reference_number": None}, "/reference_number"),
        ({"performed_by_unit": None}, "/performed_by_unit"),
        ({"performed_on": "2026-01-01T10:00:00"}, "/performed_on"),
        ({"performed_on": "2026-02-30T10:00:00Z"}, "/performed_on"),
        ({"contact": {"wallet_code": "A", "cim": "B"}}, "/contact"),
        ({"currency": "eur"}, "/currency"),
        ({"surprise": 1}, "/surprise"),
    ],
    "achievements": [
        ({"classification": None}, "/classification"),
        ({"classification": 5}, "/classification"),
    ],
    "financial-achievements": [
        ({"amount": 0}, "/amount"),
        ({"amount": "abc"}, "/amount"),
        ({"amount": None}, "/amount"),
    ],
    "financial-statements": [
        ({"period": "2026-13"}, "/period"),
        ({"kpis": []}, "/kpis"),
        ({"kpis": [{"kpi": "x"}]}, "/kpis/0/value"),
    ],
    "social-media": [({"platform": None}, "/platform"), ({"action": ""}, "/action")],
    "web-visits": [({"website": "ftp://x.example"}, "/website"), ({"website": None}, "/website")],
    "spend-requests": [
        ({"purchase_event_id": "not-a-uuid"}, "/purchase_event_id"),
        ({"requested_amount": -5}, "/requested_amount"),
    ],
    "referrals": [({"referred": None}, "/referred"), ({"referred_by": {}}, "/referred_by")],
}


@pytest.mark.parametrize(
    ("path", "change", "where"), [(p, c, w) for p, cases in INVALID.items() for c, w in cases]
)
def test_invalid_bodies_are_422_pointing_at_the_field(
    client: Client, ann: Any, path: str, change: dict[str, Any], where: str
) -> None:
    valid = {
        "purchases": purchase_body(ann["wallet"]["code"]),
        "referrals": {
            "referred": who(ann),
            "referred_by": {"contact_code": "X"},
            "performed_on": moment(),
        },
        **dict(bodies(ann, str(uuid.uuid4())).values()),
    }[path]
    body = {**valid, **change}
    body = {k: v for k, v in body.items() if v is not None}
    response = client.post(f"/v1/events/{path}", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == 422 and problem["title"] and problem["detail"]
    assert where in [e["path"] for e in problem["errors"]], problem


def test_future_events_are_refused(client: Client, ann: Any) -> None:
    body = {"contact": who(ann), "performed_on": moment(-1), "classification": "5-star-service"}
    response = client.post("/v1/events/achievements", json=body)
    assert response.status_code == 422 and response.json()["code"] == "performed_on_in_future"
    body["performed_on"] = moment(minutes=-4)
    assert client.post("/v1/events/achievements", json=body).status_code == 201


def test_classification_must_be_declared_for_the_type(client: Client, ann: Any) -> None:
    body = {"contact": who(ann), "performed_on": moment(), "classification": "top-up"}
    response = client.post("/v1/events/achievements", json=body)
    assert response.status_code == 422 and response.json()["code"] == "classification_not_allowed"
    assert response.json()["errors"][0]["path"] == "/classification"
    wrong_type = client.post(
        "/v1/events/purchases", json=purchase_body(ann["wallet"]["code"], classification="top-up")
    )
    assert wrong_type.status_code == 422
    new_class = client.post(
        "/v1/events/purchases",
        json=purchase_body(ann["wallet"]["code"], classification="brand-new-class"),
    )
    assert new_class.status_code == 201 and new_class.json()["classification"] == "brand-new-class"


def test_referral_rules(client: Client, ann: Any, new_contact: Any) -> None:
    referrer = new_contact(code="REF")
    day = "2026-06-10T09:00:00+03:00"

    def refer(referred: dict[str, Any], performed_on: str = day) -> Any:
        return client.post(
            "/v1/events/referrals",
            json={
                "referred": who(referred),
                "referred_by": {"contact_code": "REF"},
                "performed_on": performed_on,
            },
        )

    self_referral = client.post(
        "/v1/events/referrals",
        json={"referred": who(referrer), "referred_by": who(referrer), "performed_on": day},
    )
    assert self_referral.status_code == 422 and self_referral.json()["code"] == "self_referral"
    first = refer(ann)
    assert first.status_code == 201
    assert first.json()["contact_id"] == referrer["id"]
    assert (
        first.json()["referred_contact_id"] == ann["id"]
        and first.json()["referrer_contact_id"] == referrer["id"]
    )
    assert refer(new_contact()).status_code == 201
    third = refer(new_contact())
    assert third.status_code == 422 and third.json()["code"] == "referral_limit_exceeded"
    # Europe/Nicosia calendar day: 23:30 UTC on the 10th is already the 11th there.
    assert refer(new_contact(), "2026-06-10T23:30:00+00:00").status_code == 201
    client.post(f"/v1/events/{first.json()['id']}/cancel")
    assert refer(new_contact()).status_code == 201  # a cancelled referral no longer counts


def test_financial_statement_is_unique_per_contact_classification_period(
    client: Client, ann: Any
) -> None:
    path, body = bodies(ann, "")["financial_statement"]
    first = client.post(f"/v1/events/{path}", json=body)
    assert first.status_code == 201
    duplicate = client.post(f"/v1/events/{path}", json=body)
    assert duplicate.status_code == 422 and duplicate.json()["code"] == "duplicate_statement"
    assert client.post(f"/v1/events/{path}", json={**body, "period": "2026-11"}).status_code == 201
    client.post(f"/v1/events/{first.json()['id']}/cancel")
    assert client.post(f"/v1/events/{path}", json=body).status_code == 201
    twice = {
        **body,
        "period": "2026-09",
        "kpis": [{"kpi": "loan-balance", "value": 1}, {"kpi": "loan-balance", "value": 2}],
    }
    assert client.post(f"/v1/events/{path}", json=twice).json()["code"] == "duplicate_kpi"
    unknown = {**body, "period": "2026-08", "kpis": [{"kpi": "no-such-kpi", "value": 1}]}
    assert (
        client.post(f"/v1/events/{path}", json=unknown).json()["errors"][0]["path"] == "/kpis/0/kpi"
    )


def test_spend_request_needs_a_posted_purchase_of_the_same_contact(
    client: Client, ann: Any, new_contact: Any
) -> None:
    bob = new_contact()
    purchase = client.post("/v1/events/purchases", json=purchase_body(ann["wallet"]["code"])).json()
    _, body = bodies(bob, purchase["id"])["spend_request"]
    other = client.post("/v1/events/spend-requests", json=body)
    assert other.status_code == 422 and other.json()["code"] == "purchase_not_found"
    client.post(f"/v1/events/{purchase['id']}/cancel")
    _, body = bodies(ann, purchase["id"])["spend_request"]
    cancelled = client.post("/v1/events/spend-requests", json=body)
    assert cancelled.status_code == 422 and cancelled.json()["code"] == "purchase_not_posted"


def test_idempotent_replay_and_conflict(client: Client, ann: Any) -> None:
    body = purchase_body(ann["wallet"]["code"], external_system="pos-7", external_reference="TX-1")
    first = client.post("/v1/events/purchases", json=body)
    assert first.status_code == 201
    replay = client.post("/v1/events/purchases", json=body)
    assert replay.status_code == 200 and replay.json() == first.json()
    conflict = client.post("/v1/events/purchases", json={**body, "reference_number": "OTHER"})
    assert conflict.status_code == 409 and conflict.json()["code"] == "idempotency_conflict"
    other_system = client.post("/v1/events/purchases", json={**body, "external_system": "pos-8"})
    assert other_system.status_code == 201
    assert len(client.get("/v1/events", params={"type": "purchase"}).json()["items"]) == 2


def test_replay_with_a_used_otp_still_replays(client: Client, ann: Any) -> None:
    otp = client.post(f"/v1/contacts/{ann['id']}/otp", json={}).json()["otp"]
    body = purchase_body("x", contact={"otp": otp}, external_system="app", external_reference="A-1")
    first = client.post("/v1/events/purchases", json=body)
    assert first.status_code == 201
    replay = client.post("/v1/events/purchases", json=body)
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]


def test_cancel_twice_is_409(client: Client, ann: Any) -> None:
    event = client.post("/v1/events/purchases", json=purchase_body(ann["wallet"]["code"])).json()
    cancelled = client.post(f"/v1/events/{event['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "cancelled" and cancelled.json()["cancelled_at"]
    assert cancelled.json()["reversals"] == []
    again = client.post(f"/v1/events/{event['id']}/cancel")
    assert again.status_code == 409 and again.json()["code"] == "already_cancelled"
    assert client.get(f"/v1/events/{event['id']}").json()["state"] == "cancelled"
    assert client.post(f"/v1/events/{uuid.uuid4()}/cancel").status_code == 404


def test_list_filters_and_cursor_pagination(client: Client, ann: Any, new_contact: Any) -> None:
    bob = new_contact()
    ids = [
        client.post(
            "/v1/events/purchases",
            json=purchase_body(ann["wallet"]["code"], performed_on=f"2026-03-0{d}T12:00:00Z"),
        ).json()["id"]
        for d in range(1, 6)
    ]
    client.post(
        "/v1/events/achievements",
        json={"contact": who(bob), "performed_on": moment(), "classification": "5-star-service"},
    )
    seen, cursor = [], None
    while True:
        page = client.get(
            "/v1/events",
            params={"contact_id": ann["id"], "limit": 2, **({"cursor": cursor} if cursor else {})},
        ).json()
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    window = client.get(
        "/v1/events",
        params={"performed_from": "2026-03-02T00:00:00Z", "performed_to": "2026-03-04T00:00:00Z"},
    ).json()
    assert [e["id"] for e in window["items"]] == [ids[2], ids[1]]
    assert [
        e["type"] for e in client.get("/v1/events", params={"type": "achievement"}).json()["items"]
    ] == ["achievement"]
    client.post(f"/v1/events/{ids[0]}/cancel")
    assert [
        e["id"] for e in client.get("/v1/events", params={"state": "cancelled"}).json()["items"]
    ] == [ids[0]]
    assert client.get("/v1/events", params={"type": "nonsense"}).status_code == 400
    assert client.get("/v1/events", params={"limit": 501}).status_code == 400


def test_bulk_with_mixed_items(client: Client, ann: Any) -> None:
    good = purchase_body(ann["wallet"]["code"], external_system="pos", external_reference="B-1")
    items = [
        {"type": "purchase", "event": good},
        {
            "type": "achievement",
            "event": {"contact": who(ann), "performed_on": moment()},
        },  # no classification
        {
            "type": "achievement",
            "event": {
                "contact": {"contact_code": "NOBODY"},
                "performed_on": moment(),
                "classification": "5-star-service",
            },
        },
        {"type": "purchase", "event": good},  # replay of item 0
        {"type": "purchase", "event": {**good, "reference_number": "changed"}},  # conflict
        {
            "type": "web",
            "event": {
                "contact": who(ann),
                "performed_on": moment(),
                "website": "https://a.example",
            },
        },
    ]
    response = client.post("/v1/events/bulk", json=items)
    assert response.status_code == 200
    results = response.json()["items"]
    assert [r["status"] for r in results] == [201, 422, 422, 200, 409, 201]
    assert results[3]["event"]["id"] == results[0]["event"]["id"]
    assert results[1]["problem"]["errors"][0]["path"] == "/1/event/classification"
    assert results[2]["problem"]["code"] == "contact_not_found"
    assert len(client.get("/v1/events").json()["items"]) == 2
    too_many = client.post("/v1/events/bulk", json=[items[5]] * 1001)
    assert too_many.status_code in (413, 422)


def test_answer_replay_and_read_agree_on_an_offset_timestamp(client: Client, ann: Any) -> None:
    """performed_on sent with an offset comes back in UTC from the 201, the replay and a
    GET alike (the 201 is built from what was written, the others from the database)."""
    body = purchase_body(ann["wallet"]["code"], external_reference="TZ-1")
    body["performed_on"] = "2026-03-04T15:00:00+02:00"
    first = client.post("/v1/events/purchases", json=body)
    assert first.status_code == 201
    assert first.json()["performed_on"] in ("2026-03-04T13:00:00Z", "2026-03-04T13:00:00+00:00")
    replay = client.post("/v1/events/purchases", json=body)
    assert replay.status_code == 200 and replay.json() == first.json()
    assert client.get(f"/v1/events/{first.json()['id']}").json() == first.json()
