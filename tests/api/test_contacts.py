"""Contacts, wallets, OTPs, auth and transport-level refusals through HTTP."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.testing import TestClient

from tests.conftest import INTEGRATOR_KEY, purchase_body

Client = TestClient[Litestar]


def test_create_contact_returns_it_with_an_empty_wallet(client: Client) -> None:
    response = client.post(
        "/v1/contacts",
        json={"code": "C-1", "name": "Ann", "segments": ["gold"], "gift_cards": ["GC-1"]},
    )
    assert response.status_code == 201
    contact = response.json()
    assert (
        contact["code"] == "C-1"
        and contact["segments"] == ["gold"]
        and contact["gift_cards"] == ["GC-1"]
    )
    assert contact["wallet"] == {
        "code": contact["wallet"]["code"],
        "currency": "EUR",
        "balance": 0.0,
        "reserved": 0.0,
        "available": 0.0,
    }
    assert len(contact["wallet"]["code"]) == 16
    again = client.get(f"/v1/contacts/{contact['id']}")
    assert again.status_code == 200 and again.json() == contact


def test_duplicate_identifiers_are_a_409_pointing_at_the_field(
    client: Client, new_contact: Any
) -> None:
    new_contact(code="C-1", cim="CIM-1", gift_cards=["GC-1"])
    for body, path in (
        ({"code": "C-1"}, "/code"),
        ({"cim": "CIM-1"}, "/cim"),
        ({"gift_cards": ["X", "GC-1"]}, "/gift_cards/1"),
    ):
        response = client.post("/v1/contacts", json=body)
        assert response.status_code == 409, body
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "duplicate_contact"
        assert [e["path"] for e in response.json()["errors"]] == [path]


def test_patch_changes_only_what_is_sent(client: Client, new_contact: Any) -> None:
    contact = new_contact(code="C-2", name="Bob", segments=["silver"])
    response = client.patch(
        f"/v1/contacts/{contact['id']}",
        json={"segments": ["gold", "staff"], "gift_cards": ["G-9"], "spend_blocked": True},
    )
    assert response.status_code == 200
    changed = response.json()
    assert changed["name"] == "Bob" and changed["segments"] == ["gold", "staff"]
    assert changed["gift_cards"] == ["G-9"] and changed["spend_blocked"] is True


def test_unknown_contact_and_wallet_are_404(client: Client) -> None:
    for path in (
        "/v1/contacts/00000000-0000-0000-0000-000000000000",
        "/v1/wallets/NOPE",
        "/v1/wallets/NOPE/transactions",
    ):
        response = client.get(path)
        assert response.status_code == 404
        assert response.json()["status"] == 404
    assert client.patch("/v1/contacts/nope", json={"name": "x"}).status_code == 404
    assert client.post("/v1/contacts/nope/otp", json={}).status_code == 404


def test_contact_body_errors_point_at_fields(client: Client) -> None:
    response = client.post(
        "/v1/contacts", json={"segments": "gold", "colour": "red", "spend_blocked": "yes"}
    )
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "validation_failed"
    assert {e["path"] for e in problem["errors"]} == {"/segments", "/colour", "/spend_blocked"}


def test_otp_is_six_digits_single_use_and_expires(client: Client, new_contact: Any) -> None:
    contact = new_contact()
    issued = client.post(f"/v1/contacts/{contact['id']}/otp", json={"ttl_seconds": 60})
    assert issued.status_code == 201
    otp = issued.json()["otp"]
    assert len(otp) == 6 and otp.isdigit()
    first = client.post("/v1/events/purchases", json=purchase_body("x", contact={"otp": otp}))
    assert first.status_code == 201, first.text
    assert first.json()["contact_id"] == contact["id"]
    second = client.post("/v1/events/purchases", json=purchase_body("x", contact={"otp": otp}))
    assert second.status_code == 422
    assert second.json()["code"] == "otp_invalid"
    assert second.json()["errors"][0]["path"] == "/contact/otp"


def test_otp_as_a_qr_code_for_a_till(client: Client, new_contact: Any) -> None:
    """``qr: true`` answers the same code as a QR code (SVG), for a till's scanner."""
    contact = new_contact()
    plain = client.post(f"/v1/contacts/{contact['id']}/otp", json={})
    assert plain.status_code == 201 and "qr_svg" not in plain.json()
    issued = client.post(f"/v1/contacts/{contact['id']}/otp", json={"qr": True}).json()
    svg = issued["qr_svg"]
    assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg"')
    assert f"<title>One-time password {issued['otp']}</title>" in svg
    assert "<path" in svg and svg.rstrip().endswith("</svg>")
    refused = client.post(f"/v1/contacts/{contact['id']}/otp", json={"qr": "yes"})
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["path"] == "/qr"


def test_expired_otp_is_refused(client: Client, app: Litestar, new_contact: Any) -> None:
    from datetime import timedelta

    contact = new_contact()
    otp = client.post(f"/v1/contacts/{contact['id']}/otp", json={"ttl_seconds": 30}).json()["otp"]
    runtime = app.state.runtime
    real_clock = runtime.clock
    runtime.clock = lambda: real_clock() + timedelta(seconds=31)
    response = client.post("/v1/events/purchases", json=purchase_body("x", contact={"otp": otp}))
    assert response.status_code == 422 and response.json()["code"] == "otp_invalid"


def test_otp_carries_its_spend_amount(client: Client, new_contact: Any) -> None:
    contact = new_contact()
    issued = client.post(f"/v1/contacts/{contact['id']}/otp", json={"spend_amount": "12.50"})
    assert issued.json()["spend_amount"] == 12.5
    bad = client.post(f"/v1/contacts/{contact['id']}/otp", json={"spend_amount": 1.234})
    assert bad.status_code == 422 and bad.json()["errors"][0]["path"] == "/spend_amount"


def test_wallet_by_code_and_empty_ledger(client: Client, new_contact: Any) -> None:
    contact = new_contact()
    code = contact["wallet"]["code"]
    wallet = client.get(f"/v1/wallets/{code}").json()
    assert wallet["contact_id"] == contact["id"] and wallet["balance"] == 0
    assert client.get(f"/v1/wallets/{code}/transactions").json() == {
        "items": [],
        "next_cursor": None,
    }
    bad = client.get(f"/v1/wallets/{code}/transactions", params={"limit": 0})
    assert bad.status_code == 400 and bad.headers["content-type"].startswith(
        "application/problem+json"
    )
    assert (
        client.get(f"/v1/wallets/{code}/transactions", params={"cursor": "!!"}).status_code == 400
    )


def test_auth_missing_unknown_and_open_paths(client: Client) -> None:
    del client.headers["Authorization"]
    missing = client.get("/v1/events")
    assert missing.status_code == 401
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert client.get("/v1/events", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert (
        client.get("/v1/events", headers={"Authorization": f"Bearer {INTEGRATOR_KEY}"}).status_code
        == 200
    )
    health = client.get("/health")
    assert (
        health.status_code == 200
        and health.json()["status"] == "ok"
        and health.json()["database"] == "ok"
    )
    assert client.get("/schema/openapi.json").status_code == 200


def test_body_over_64_kb_is_413(client: Client) -> None:
    response = client.post(
        "/v1/contacts",
        content=b'{"name": "' + b"x" * 70_000 + b'"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")


def test_malformed_json_is_400(client: Client) -> None:
    response = client.post(
        "/v1/contacts", content=b'{"name": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["code"] == "invalid_json"


def test_unknown_or_repeated_query_parameters_are_400(client: Client) -> None:
    unknown = client.get("/v1/events", params={"colour": "red"})
    assert unknown.status_code == 400 and unknown.json()["errors"][0]["path"] == "colour"
    repeated = client.get("/v1/events?type=web&type=purchase")
    assert repeated.status_code == 400 and repeated.json()["code"] == "invalid_parameters"
    assert client.get("/v1/events", params={"type": "web", "limit": 5}).status_code == 200


def test_otp_issue_and_use_are_rate_limited(client: Client, new_contact: Any) -> None:
    """The defaults: 5 OTPs per contact per 5 minutes; 10 wrong guesses per client of
    a key per 10 minutes (tests/api/test_otp_limits.py has the rest)."""
    contact = new_contact()
    issued = [client.post(f"/v1/contacts/{contact['id']}/otp", json={}) for _ in range(6)]
    assert [r.status_code for r in issued] == [201] * 5 + [429]
    limited = issued[-1]
    assert limited.json()["code"] == "rate_limited"
    assert limited.headers["RateLimit-Limit"] == "5" and int(limited.headers["Retry-After"]) > 0
    codes = {r.json()["otp"] for r in issued[:5]}
    wrong = (f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in codes)
    guesses = [
        client.post(
            "/v1/events/achievements",
            json={
                "contact": {"otp": next(wrong)},
                "performed_on": "2026-03-04T10:00:00Z",
                "classification": "5-star-service",
            },
        )
        for _ in range(11)
    ]
    assert {r.json()["code"] for r in guesses[:10]} == {"otp_invalid"}
    assert guesses[10].status_code == 429 and guesses[10].json()["code"] == "rate_limited"
    assert guesses[10].headers["RateLimit-Limit"] == "10"


def test_logs_carry_no_names_card_numbers_or_keys(client: Client, caplog: Any) -> None:
    import logging

    from tests.conftest import ADMIN_KEY

    caplog.set_level(logging.DEBUG)
    contact = client.post("/v1/contacts", json={"name": "Zelda Quartermain", "code": "ZQ-1"}).json()
    client.post(
        "/v1/events/purchases",
        json=purchase_body(
            contact["wallet"]["code"], payment_medium={"identifier": "4917555566667777"}
        ),
    )
    client.post("/v1/events/purchases", json={"broken": "Zelda Quartermain 4917555566667777"})
    client.get("/v1/events", headers={"Authorization": "Bearer not-a-key-9f8e7d"})
    text = caplog.text
    assert text  # something was logged, and none of it is personal
    for secret in ("Zelda Quartermain", "4917555566667777", ADMIN_KEY, "not-a-key-9f8e7d"):
        assert secret not in text
