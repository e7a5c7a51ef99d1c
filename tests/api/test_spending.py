"""Spending, identify-and-spend, instant spend, estimates with reservations, returns and
the definition's payment medium automation, through HTTP (test rulesets: min 1, max 50,
reject if not covered, 30 days)."""

from __future__ import annotations

import re
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from tests.conftest import BOTH, ROOT, fund, moment

Client = TestClient[Litestar]


def _purchase(
    client: Client,
    contact: dict[str, Any],
    *,
    lines: list[tuple[str, str, float]] | None = None,
    unit: str = "store-001",
    at: str | None = None,
    **extra: Any,
) -> Any:
    body = {
        "contact": extra.pop("who", None) or {"contact_id": contact["id"]},
        "performed_on": at or moment(),
        "performed_by_unit": unit,
        "reference_number": "R-1",
        "products": [
            {"sku": sku, "net_amount": net, "quantity": qty}
            for sku, net, qty in (lines or [("THING", "20.00", 1)])
        ],
        **extra,
    }
    return client.post("/v1/events/purchases", json=body)


def _spend(
    client: Client,
    contact: dict[str, Any],
    purchase_id: str,
    amount: Any = None,
    *,
    at: str | None = None,
    who: dict[str, str] | None = None,
) -> Any:
    body: dict[str, Any] = {
        "contact": who or {"contact_id": contact["id"]},
        "performed_on": at or moment(),
        "purchase_event_id": purchase_id,
    }
    if amount is not None:
        body["requested_amount"] = amount
    return client.post("/v1/events/spend-requests", json=body)


def _balance(client: Client, contact: dict[str, Any]) -> tuple[float, float, float]:
    wallet = client.get(f"/v1/wallets/{contact['wallet']['code']}").json()
    return wallet["balance"], wallet["reserved"], wallet["available"]


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_spend_request_debits_and_cancel_returns_the_funds(
    client: Client, new_contact: Any
) -> None:
    ann = new_contact()
    fund(client, ann, "30.00")
    purchase = _purchase(client, ann).json()
    spent = _spend(client, ann, purchase["id"], "12.50")
    assert spent.status_code == 201, spent.text
    assert [(s["amount"], s["instant"]) for s in spent.json()["spends"]] == [(12.5, False)]
    assert spent.json()["wallet"]["balance"] == 17.5
    assert [s["amount"] for s in client.get(f"/v1/events/{purchase['id']}").json()["spends"]] == [
        12.5
    ]
    ledger = client.get(f"/v1/wallets/{ann['wallet']['code']}/transactions").json()["items"]
    assert (ledger[0]["kind"], ledger[0]["amount"], ledger[0]["event_id"]) == (
        "spend",
        -12.5,
        spent.json()["id"],
    )
    cancelled = client.post(f"/v1/events/{spent.json()['id']}/cancel").json()
    assert [(r["kind"], r["amount"]) for r in cancelled["reversals"]] == [("spend_reversal", 12.5)]
    assert _balance(client, ann) == (30.0, 0.0, 30.0)


def test_spend_defaults_to_the_purchase_total_and_never_exceeds_it(
    client: Client, new_contact: Any
) -> None:
    ann = new_contact()
    fund(client, ann, "100.00")
    purchase = _purchase(client, ann, lines=[("THING", "7.25", 2)]).json()  # 14.50
    assert _spend(client, ann, purchase["id"]).json()["spends"][0]["amount"] == 14.5
    again = _spend(client, ann, purchase["id"], 1)
    assert again.status_code == 422 and again.json()["code"] == "spend_exceeds_purchase"


REFUSALS = [
    ("insufficient_funds", "30.00", None),
    ("spend_amount_out_of_range", "0.99", None),
    ("spend_amount_out_of_range", "50.01", None),
    ("spend_blocked", "5.00", "blocked"),
    ("otp_spend_mismatch", "5.00", "otp"),
]


@pytest.mark.parametrize(("code", "amount", "twist"), REFUSALS)
def test_refusals_leave_no_ledger_trace(
    client: Client, new_contact: Any, code: str, amount: str, twist: str | None
) -> None:
    ann = new_contact()
    fund(client, ann, "20.00")
    purchase = _purchase(client, ann, lines=[("THING", "60.00", 1)]).json()
    who = None
    if twist == "blocked":
        client.patch(f"/v1/contacts/{ann['id']}", json={"spend_blocked": True})
    if twist == "otp":
        who = {
            "otp": client.post(
                f"/v1/contacts/{ann['id']}/otp", json={"spend_amount": "4.00"}
            ).json()["otp"]
        }
    before = client.get(f"/v1/wallets/{ann['wallet']['code']}/transactions").json()["items"]
    refused = _spend(client, ann, purchase["id"], amount, who=who)
    assert refused.status_code == 422 and refused.json()["code"] == code, refused.text
    assert client.get(f"/v1/wallets/{ann['wallet']['code']}/transactions").json()["items"] == before
    assert client.get("/v1/events", params={"type": "spend_request"}).json()["items"] == []


def test_otp_spend_amount_must_match_and_is_spent(client: Client, new_contact: Any) -> None:
    ann = new_contact()
    fund(client, ann, "20.00")
    purchase = _purchase(client, ann).json()
    otp = client.post(f"/v1/contacts/{ann['id']}/otp", json={"spend_amount": "4.00"}).json()["otp"]
    assert _spend(client, ann, purchase["id"], "4.00", who={"otp": otp}).status_code == 201
    # identify-and-spend with an OTP carrying a spend amount spends exactly that amount
    otp = client.post(f"/v1/contacts/{ann['id']}/otp", json={"spend_amount": "3.00"}).json()["otp"]
    paid = _purchase(client, ann, who={"otp": otp}).json()
    assert [s["amount"] for s in paid["spends"]] == [3.0]
    otp = client.post(f"/v1/contacts/{ann['id']}/otp", json={"spend_amount": "3.00"}).json()["otp"]
    mismatch = _purchase(client, ann, who={"otp": otp}, spend={"amount": "2.00"})
    assert mismatch.status_code == 422 and mismatch.json()["code"] == "otp_spend_mismatch"


def test_spend_window_day_n_allowed_n_plus_1_refused(client: Client, new_contact: Any) -> None:
    ann = new_contact()
    fund(client, ann, "20.00")
    old = _purchase(client, ann, at=moment(30, hours=1)).json()
    older = _purchase(client, ann, at=moment(31, hours=1)).json()
    assert _spend(client, ann, old["id"], 1).status_code == 201
    refused = _spend(client, ann, older["id"], 1)
    assert refused.status_code == 422 and refused.json()["code"] == "spend_window_expired"


def test_identify_and_spend_is_all_or_nothing_and_uses_funds_before_its_own_awards(
    client: Client, new_contact: Any
) -> None:
    ann = new_contact(segments=["gold"])
    # the purchase itself earns 5.00 (gold-basket) but that cannot pay for its own spend
    body = {
        "payment_medium": {"brand": "visa", "type": "credit"},
        "process_immediately": True,
        "spend": {"amount": "5.00"},
    }
    refused = _purchase(client, ann, unit="store-003", lines=[("BASKET", "100.00", 1)], **body)
    assert refused.status_code == 422 and refused.json()["code"] == "insufficient_funds"
    assert client.get("/v1/events", params={"contact_id": ann["id"]}).json()["items"] == []
    assert _balance(client, ann) == (0.0, 0.0, 0.0)
    fund(client, ann, "5.00")
    paid = _purchase(client, ann, unit="store-003", lines=[("BASKET", "100.00", 1)], **body)
    assert paid.status_code == 201
    assert [s["amount"] for s in paid.json()["spends"]] == [5.0] and [
        a["amount"] for a in paid.json()["awards"]
    ] == [5.0]
    assert paid.json()["wallet"]["balance"] == 5.0


def _client_with_rules(tmp_path: Path, settings: Any, **rules: str) -> TestClient[Litestar]:
    """A client whose definition's spend_requests differ as given (YAML values)."""
    from rewards.app import create_app
    from tests.conftest import ADMIN_KEY

    folder = tmp_path / "rules"
    shutil.copytree(ROOT / "tests" / "api" / "offer_rulesets", folder)
    definition = folder / "definition.yaml"
    text = definition.read_text()
    for key, value in rules.items():
        text, found = re.subn(rf"{key}: .*", f"{key}: {value}", text)
        if not found:
            text = text.replace("spend_requests:\n", f"spend_requests:\n  {key}: {value}\n")
    definition.write_text(text)
    client = TestClient(create_app(settings.with_changes(rulesets_dir=folder)))
    client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
    return client


def test_partial_spend_when_the_definition_allows_it(tmp_path: Path, settings: Any) -> None:
    with _client_with_rules(tmp_path, settings, reject_if_not_covered="false") as client:
        ann = client.post("/v1/contacts", json={}).json()
        fund(client, ann, "3.00")
        purchase = _purchase(client, ann).json()
        partial = _spend(client, ann, purchase["id"], "10.00")
        assert partial.status_code == 201 and partial.json()["spends"][0]["amount"] == 3.0
        only_full = _purchase(client, ann, spend={"amount": "10.00", "only_if_fully_covered": True})
        assert only_full.status_code == 422 and only_full.json()["code"] == "insufficient_funds"


def test_specific_amounts_and_classifications_per_the_definition(
    tmp_path: Path, settings: Any
) -> None:
    with _client_with_rules(
        tmp_path, settings, allow_specific_amount="false", applicable_classifications="[groceries]"
    ) as client:
        ann = client.post("/v1/contacts", json={}).json()
        fund(client, ann, "30.00")
        groceries = _purchase(client, ann, classification="groceries").json()
        specific = _spend(client, ann, groceries["id"], "5.00")
        assert (
            specific.status_code == 422 and specific.json()["code"] == "specific_amount_not_allowed"
        )
        whole = _spend(client, ann, groceries["id"])
        assert whole.status_code == 201 and whole.json()["spends"][0]["amount"] == 20.0
        other = _purchase(client, ann, classification="fuel").json()
        refused = _spend(client, ann, other["id"])
        assert refused.status_code == 422 and refused.json()["code"] == "spend_not_applicable"


def test_instant_spend_offer_is_credited_and_spent_at_once(
    client: Client, new_contact: Any
) -> None:
    ann = new_contact()
    event = _purchase(client, ann, unit="instant-shop", process_immediately=True).json()
    assert [a["amount"] for a in event["awards"]] == [2.0]
    assert [(s["amount"], s["instant"]) for s in event["spends"]] == [(2.0, True)]
    assert event["wallet"]["balance"] == 0
    kinds = [
        e["kind"]
        for e in client.get(f"/v1/wallets/{ann['wallet']['code']}/transactions").json()["items"]
    ]
    assert kinds == ["spend", "award"]


def test_cancelling_a_purchase_cancels_its_spend_requests(client: Client, new_contact: Any) -> None:
    ann = new_contact()
    fund(client, ann, "20.00")
    purchase = _purchase(client, ann).json()
    spend = _spend(client, ann, purchase["id"], 8).json()
    cancelled = client.post(f"/v1/events/{purchase['id']}/cancel").json()
    assert [(r["kind"], r["amount"]) for r in cancelled["reversals"]] == [("spend_reversal", 8.0)]
    assert client.get(f"/v1/events/{spend['id']}").json()["state"] == "cancelled"
    assert _balance(client, ann)[0] == 20.0


def test_award_reversal_of_spent_awards_may_go_below_zero(client: Client, new_contact: Any) -> None:
    ann = new_contact()
    load = client.post(
        "/v1/events/financial-achievements",
        json={
            "contact": {"contact_id": ann["id"]},
            "performed_on": moment(),
            "classification": "top-up",
            "amount": "10.00",
            "payment_medium": {"brand": "loader"},
            "process_immediately": True,
        },
    ).json()
    purchase = _purchase(client, ann).json()
    _spend(client, ann, purchase["id"], 10)
    client.post(f"/v1/events/{load['id']}/cancel")
    assert _balance(client, ann)[0] == -10.0


# ---- estimates -------------------------------------------------------------------------


def _estimate(client: Client, contact: dict[str, Any], **extra: Any) -> Any:
    body = {
        "contact": {"contact_id": contact["id"]},
        "performed_by_unit": "store-003",
        "products": [{"sku": "BASKET", "net_amount": "100.00"}],
        "payment_medium": {"brand": "visa", "type": "credit"},
        **extra,
    }
    return client.post("/v1/purchase-estimates", json=body)


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_estimate_reserves_and_a_purchase_consumes_it(client: Client, new_contact: Any) -> None:
    ann = new_contact(segments=["gold"])
    fund(client, ann, "30.00")
    estimate = _estimate(client, ann, reserve=True, spend={"amount": "20.00"})
    assert estimate.status_code == 201, estimate.text
    found = estimate.json()
    assert [(a["offer_id"], a["amount"]) for a in found["awards"]] == [("gold-basket", 5.0)]
    assert (found["total_award"], found["instant_spend"], found["allow_spending"]) == (
        5.0,
        0.0,
        True,
    )
    assert found["spendable"] == {"amount": 20.0, "min_spend": 1.0, "max_spend": 50.0}
    assert found["reservation"]["amount"] == 20.0 and found["status"] == "approved"
    assert found["wallet"] == {"code": ann["wallet"]["code"], "balance": 30.0, "available": 10.0}
    assert _balance(client, ann) == (30.0, 20.0, 10.0)
    assert (
        _spend(client, ann, _purchase(client, ann).json()["id"], "10.01").json()["code"]
        == "insufficient_funds"
    )
    assert client.get(f"/v1/purchase-estimates/{found['id']}").json()["status"] == "approved"
    paid = _purchase(
        client,
        ann,
        unit="store-003",
        lines=[("BASKET", "100.00", 1)],
        estimate_id=found["id"],
        payment_medium={"brand": "visa", "type": "credit"},
        process_immediately=True,
    )
    assert paid.status_code == 201, paid.text
    assert [s["amount"] for s in paid.json()["spends"]] == [20.0] and [
        a["amount"] for a in paid.json()["awards"]
    ] == [5.0]
    assert _balance(client, ann) == (15.0, 0.0, 15.0)
    assert client.get(f"/v1/purchase-estimates/{found['id']}").json()["status"] == "consumed"
    twice = _purchase(client, ann, estimate_id=found["id"])
    assert twice.status_code == 409 and twice.json()["code"] == "estimate_consumed"


def test_estimate_requiring_approval_and_expiry(
    client: Client, app: Litestar, new_contact: Any
) -> None:
    ann = new_contact()
    fund(client, ann, "10.00")
    estimate = _estimate(
        client, ann, reserve=True, requires_approval=True, reserve_ttl_seconds=60
    ).json()
    assert estimate["status"] == "pending" and estimate["reservation"]["amount"] == 10.0
    unapproved = _purchase(client, ann, estimate_id=estimate["id"])
    assert unapproved.status_code == 409 and unapproved.json()["code"] == "estimate_not_approved"
    assert (
        client.post(f"/v1/purchase-estimates/{estimate['id']}/approve").json()["status"]
        == "approved"
    )
    runtime = app.state.runtime
    real_clock = runtime.clock
    runtime.clock = lambda: real_clock() + timedelta(seconds=61)
    assert _balance(client, ann) == (10.0, 0.0, 10.0)  # an expired reservation never counts
    assert client.get(f"/v1/purchase-estimates/{estimate['id']}").json()["status"] == "expired"
    late = client.post(f"/v1/purchase-estimates/{estimate['id']}/approve")
    assert late.status_code == 409 and late.json()["code"] == "estimate_expired"
    assert _purchase(client, ann, estimate_id=estimate["id"]).json()["code"] == "estimate_expired"
    assert (
        client.get("/v1/purchase-estimates/00000000-0000-0000-0000-000000000000").status_code == 404
    )


def test_estimate_of_a_blocked_contact_does_not_allow_spending(
    client: Client, new_contact: Any
) -> None:
    ann = new_contact(spend_blocked=True)
    fund(client, ann, "10.00")
    estimate = _estimate(client, ann, reserve=True).json()
    assert estimate["allow_spending"] is False and estimate["reservation"] is None


# ---- returns ---------------------------------------------------------------------------


def test_returns_reverse_per_line_and_event_awards_in_proportion(
    client: Client, new_contact: Any
) -> None:
    ann = new_contact()
    coffee = _purchase(
        client,
        ann,
        unit="store-004",
        lines=[("TEA-GREEN", "3.00", 3), ("CAKE", "5.00", 1)],
        process_immediately=True,
    ).json()
    assert [a["amount"] for a in coffee["awards"]] == [0.9]  # 10% of the 9.00 tea line
    first = client.post(
        f"/v1/events/{coffee['id']}/returns",
        json={"products": [{"sku": "TEA-GREEN", "quantity": 1}]},
    )
    assert first.status_code == 200, first.text
    assert [(r["kind"], r["amount"], r["reverses_id"]) for r in first.json()["reversals"]] == [
        ("award_reversal", -0.3, None)
    ]
    assert first.json()["products"] == [
        {"index": 0, "sku": "TEA-GREEN", "quantity": 1.0, "amount": 3.0}
    ]
    client.post(
        f"/v1/events/{coffee['id']}/returns", json={"products": [{"sku": "CAKE", "quantity": 1}]}
    )  # no award on cake
    too_many = client.post(
        f"/v1/events/{coffee['id']}/returns",
        json={"products": [{"sku": "TEA-GREEN", "quantity": 2.5}]},
    )
    assert (
        too_many.status_code == 422
        and too_many.json()["errors"][0]["path"] == "/products/0/quantity"
    )
    rest = client.post(
        f"/v1/events/{coffee['id']}/returns",
        json={"products": [{"sku": "TEA-GREEN", "quantity": 2}]},
    ).json()
    assert [r["amount"] for r in rest["reversals"]] == [-0.6]
    assert rest["wallet"]["balance"] == 0
    assert (
        client.post(
            f"/v1/events/{coffee['id']}/returns",
            json={"products": [{"sku": "TEA-GREEN", "quantity": 0.001}]},
        ).status_code
        == 422
    )


def test_event_level_award_reversed_pro_rata_and_cancel_reverses_only_the_rest(
    client: Client, new_contact: Any
) -> None:
    ann = new_contact(segments=["gold"])
    event = _purchase(
        client,
        ann,
        unit="store-003",
        lines=[("A", "60.00", 1), ("B", "40.00", 1)],
        payment_medium={"brand": "visa", "type": "credit"},
        process_immediately=True,
    ).json()
    assert [a["amount"] for a in event["awards"]] == [5.0]
    returned = client.post(
        f"/v1/events/{event['id']}/returns", json={"products": [{"sku": "B", "quantity": 1}]}
    ).json()
    assert [r["amount"] for r in returned["reversals"]] == [-2.0]  # 40% of 5.00
    cancelled = client.post(f"/v1/events/{event['id']}/cancel").json()
    assert [r["amount"] for r in cancelled["reversals"]] == [-3.0]
    assert cancelled["wallet"]["balance"] == 0
    assert (
        client.post(
            f"/v1/events/{event['id']}/returns", json={"products": [{"sku": "A", "quantity": 1}]}
        ).status_code
        == 409
    )


# ---- payment medium automation ---------------------------------------------------------


@pytest.mark.parametrize(
    ("identifier", "brand", "type_"),
    [
        (
            "4917123412341230",
            "electron",
            "debit",
        ),  # simple: begins with 4917 and 16 long; ends with 0
        ("4111111111111111", "visa", None),  # advanced: regex
        ("5500000000000004", None, "credit"),
        ("4917", None, None),
    ],
)
def test_brand_and_type_rules_then_the_identifier_is_masked(
    client: Client, new_contact: Any, identifier: str, brand: str | None, type_: str | None
) -> None:
    ann = new_contact()
    event = _purchase(client, ann, payment_medium={"identifier": identifier}).json()
    medium = event["payment_medium"]
    assert (medium.get("brand"), medium.get("type"), medium["identifier"]) == (
        brand,
        type_,
        identifier[-4:],
    )
    given = _purchase(client, ann, payment_medium={"identifier": identifier, "brand": "own"}).json()
    assert given["payment_medium"]["brand"] == "own"
