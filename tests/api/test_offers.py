"""Offers earned through HTTP (immediate evaluation), one condition kind at a time, with
the test offers of tests/api/offer_rulesets. Each test sends an event that earns and
events that just miss."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from tests.conftest import BOTH

Client = TestClient[Litestar]
WEDNESDAY = "2026-03-04"  # Europe/Nicosia is UTC+02:00 in March
SATURDAY = "2026-03-07"


@pytest.fixture
def buy(client: Client, new_contact: Any) -> Any:
    def purchase(
        unit: str,
        lines: list[tuple[str, Any]],
        *,
        segments: tuple[str, ...] = ("gold",),
        at: str = f"{WEDNESDAY}T10:00:00+02:00",
        medium: dict[str, str] | None = None,
        contact: dict[str, Any] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        who = contact or new_contact(segments=list(segments))
        body = {
            "contact": {"contact_id": who["id"]},
            "performed_on": at,
            "performed_by_unit": unit,
            "reference_number": "R-1",
            "process_immediately": True,
            "products": [{"sku": sku, "net_amount": net} for sku, net in lines],
            **({"payment_medium": medium} if medium else {}),
            **extra,
        }
        response = client.post("/v1/events/purchases", json=body)
        assert response.status_code in (200, 201), response.text
        event: dict[str, Any] = response.json()
        return event

    return purchase


def awarded(event: dict[str, Any]) -> dict[str, float]:
    return {award["offer_id"]: award["amount"] for award in event["awards"]}


VISA_CREDIT = {"brand": "visa", "type": "credit"}


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_transaction_offer_earns_and_credits_the_wallet(client: Client, buy: Any) -> None:
    event = buy("store-003", [("BASKET", "100.00")], medium=VISA_CREDIT)
    assert event["evaluated"] is True
    assert awarded(event) == {"gold-basket": 5.0}
    assert event["awards"][0]["classification"] == "increase_revenue_transaction"
    assert event["awards"][0]["contact_id"] == event["contact_id"]
    assert event["wallet"]["balance"] == 5.0
    ledger = client.get(f"/v1/wallets/{event['wallet']['code']}/transactions").json()["items"]
    assert [(e["kind"], e["amount"], e["offer_id"], e["event_id"]) for e in ledger] == [
        ("award", 5.0, "gold-basket", event["id"])
    ]


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        ("49.99", None),
        ("50.00", 2.5),
        ("50.10", 2.51),
        ("50.09", 2.5),
        ("159.99", 8.0),
        ("200.00", 8.0),
        ("200.01", None),
    ],
)
def test_amount_range_edges_rounding_and_cap(buy: Any, total: str, expected: float | None) -> None:
    # 5% of 50.10 = 2.505 -> 2.51 (half-up); 50.09 -> 2.5045 -> 2.50; cap 8.
    event = buy("store-003", [("BASKET", total)], medium=VISA_CREDIT)
    assert awarded(event).get("gold-basket") == expected


@pytest.mark.parametrize(
    ("segments", "earns"),
    [
        (("gold",), True),
        (("gold", "vip"), True),
        (("silver",), False),
        (("gold", "staff"), False),
        ((), False),
    ],
)
def test_segment_include_and_exclude(buy: Any, segments: tuple[str, ...], earns: bool) -> None:
    event = buy("store-003", [("BASKET", "100.00")], segments=segments, medium=VISA_CREDIT)
    assert ("gold-basket" in awarded(event)) is earns


@pytest.mark.parametrize(
    ("unit", "earns"),
    [("store-003", True), ("store-004", True), ("store-001", False), ("nowhere", False)],
)
def test_unit_and_unit_group(buy: Any, unit: str, earns: bool) -> None:
    # store-003 is listed by code; store-004 through its group "south"; store-001 is north.
    event = buy(unit, [("BASKET", "100.00")], medium=VISA_CREDIT)
    assert ("gold-basket" in awarded(event)) is earns


@pytest.mark.parametrize(
    ("medium", "both_lists", "brand_only"),
    [
        ({"brand": "visa", "type": "credit"}, True, False),
        ({"brand": "visa", "type": "debit"}, False, False),
        ({"brand": "visa"}, False, False),
        ({"brand": "electron", "type": "debit"}, False, True),
        ({"brand": "electron"}, False, True),
        ({"type": "credit"}, False, False),
    ],
)
def test_payment_medium_brand_and_type_vs_brand_only(
    buy: Any, medium: dict[str, str], both_lists: bool, brand_only: bool
) -> None:
    assert (
        "gold-basket" in awarded(buy("store-003", [("BASKET", "100.00")], medium=medium))
    ) is both_lists
    assert (
        "electron-any-type" in awarded(buy("card-desk", [("BASKET", "100.00")], medium=medium))
    ) is brand_only


@pytest.mark.parametrize(
    ("at", "coffees"),
    [
        (f"{WEDNESDAY}T13:59:59+02:00", None),
        (f"{WEDNESDAY}T14:00:00+02:00", 2.0),
        (f"{WEDNESDAY}T12:00:00Z", 2.0),  # 14:00 in Nicosia
        (f"{WEDNESDAY}T16:59:59+02:00", 2.0),
        (f"{WEDNESDAY}T17:00:00+02:00", None),
        (f"{SATURDAY}T15:00:00+02:00", None),
    ],
)
def test_schedule_edges_and_product_glob_per_line(buy: Any, at: str, coffees: float | None) -> None:
    event = buy(
        "cafe-1",
        [("COFFEE-LATTE", "3.00"), ("CAKE-CHOC", "4.00"), ("COFFEE-ESPRESSO", "2.00")],
        at=at,
    )
    assert awarded(event).get("quiet-afternoon-coffee") == coffees
    if coffees:
        lines = event["awards"][0]["lines"]
        assert [(line["index"], line["sku"], line["amount"]) for line in lines] == [
            (0, "COFFEE-LATTE", 1.0),
            (2, "COFFEE-ESPRESSO", 1.0),
        ]


def test_percentage_per_line_with_line_amount_range(buy: Any) -> None:
    # 10% per TEA line of 2.00+: 2.05 -> 0.205 -> 0.21 (half-up); 1.99 misses; 3.00 -> 0.30.
    event = buy(
        "store-004",
        [("TEA-GREEN", "2.05"), ("TEA-MINT", "1.99"), ("TEA-BLACK", "3.00"), ("COFFEE-X", "9.00")],
        segments=(),
    )
    assert awarded(event) == {"tea-tenth": 0.51}
    assert [(line["index"], line["amount"]) for line in event["awards"][0]["lines"]] == [
        (0, 0.21),
        (2, 0.3),
    ]


def test_product_offer_per_matching_line_vs_transaction_offer_per_event(buy: Any) -> None:
    event = buy("tv-shop", [("TV-OLED", "999.00"), ("TV-SMALL", "499.99"), ("TV-QLED", "500.00")])
    assert awarded(event) == {"big-tv": 40.0}
    assert [line["index"] for line in event["awards"][0]["lines"]] == [0, 2]
    single = buy("store-003", [("A", "40.00"), ("B", "60.00")], medium=VISA_CREDIT)
    assert awarded(single) == {"gold-basket": 5.0} and single["awards"][0].get("lines") is None


def test_exclusive_group_highest_priority_wins_and_batch_offers_wait(buy: Any) -> None:
    event = buy("group-shop", [("THING", "10.00")])
    assert awarded(event) == {"group-high": 2.0}


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_max_awards_rolling_window(buy: Any, new_contact: Any) -> None:
    who = new_contact()

    def at(day: str) -> dict[str, Any]:
        return buy(
            "weekly-shop", [("THING", "1.00")], contact=who, at=f"2026-03-{day}T10:00:00+02:00"
        )

    assert awarded(at("02")) == {"weekly-once": 3.0}
    assert awarded(at("05")) == {}
    assert awarded(at("08")) == {}  # 6 days after the award: still inside the 7-day window
    assert awarded(at("09")) == {"weekly-once": 3.0}  # 7 days after: the window has rolled on


def test_cancelled_award_no_longer_counts_in_the_window(
    client: Client, buy: Any, new_contact: Any
) -> None:
    who = new_contact()
    first = buy("weekly-shop", [("THING", "1.00")], contact=who, at="2026-03-02T10:00:00+02:00")
    cancelled = client.post(f"/v1/events/{first['id']}/cancel").json()
    assert [(r["kind"], r["amount"]) for r in cancelled["reversals"]] == [("award_reversal", -3.0)]
    assert cancelled["wallet"]["balance"] == 0
    again = buy("weekly-shop", [("THING", "1.00")], contact=who, at="2026-03-03T10:00:00+02:00")
    assert awarded(again) == {"weekly-once": 3.0}


def test_events_without_process_immediately_wait_for_the_batch_run(buy: Any) -> None:
    event = buy("store-003", [("BASKET", "100.00")], medium=VISA_CREDIT, process_immediately=False)
    assert event["evaluated"] is False and event["awards"] == []


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_replay_does_not_award_twice(client: Client, buy: Any, new_contact: Any) -> None:
    who = new_contact(segments=["gold"])
    first = buy(
        "store-003",
        [("BASKET", "100.00")],
        contact=who,
        medium=VISA_CREDIT,
        external_system="pos",
        external_reference="T-1",
    )
    replay = buy(
        "store-003",
        [("BASKET", "100.00")],
        contact=who,
        medium=VISA_CREDIT,
        external_system="pos",
        external_reference="T-1",
    )
    assert replay["id"] == first["id"] and awarded(replay) == {"gold-basket": 5.0}
    assert client.get(f"/v1/wallets/{first['wallet']['code']}").json()["balance"] == 5.0


def test_referral_awards_referred_first_then_referrer(client: Client, new_contact: Any) -> None:
    friend, referrer = new_contact(), new_contact()
    body = {
        "referred": {"contact_id": friend["id"]},
        "referred_by": {"contact_id": referrer["id"]},
        "performed_on": "2026-03-04T10:00:00+02:00",
        "classification": "friend-referral",
        "process_immediately": True,
    }
    event = client.post("/v1/events/referrals", json=body).json()
    assert [(a["contact_id"], a["amount"]) for a in event["awards"]] == [
        (friend["id"], 5.0),
        (referrer["id"], 10.0),
    ]
    assert client.get(f"/v1/wallets/{friend['wallet']['code']}").json()["balance"] == 5.0
    assert client.get(f"/v1/wallets/{referrer['wallet']['code']}").json()["balance"] == 10.0
    unclassified = {k: v for k, v in body.items() if k != "classification"} | {
        "referred": {"contact_id": new_contact()["id"]}
    }
    plain = client.post("/v1/events/referrals", json=unclassified).json()
    assert plain["awards"] == []


@pytest.mark.parametrize(
    ("kpis", "earns"),
    [
        (
            [
                {"kpi": "loan-balance", "product": "LOAN-HOME", "value": 6000},
                {"kpi": "loan-balance", "product": "LOAN-BUSINESS", "value": 4000},
            ],
            True,
        ),
        (
            [
                {"kpi": "loan-balance", "product": "LOAN-HOME", "value": 6000},
                {"kpi": "loan-balance", "product": "LOAN-CAR", "value": 4000},
            ],
            False,
        ),
        ([{"kpi": "loan-balance", "product": "LOAN-HOME", "value": 9999.99}], False),
    ],
)
def test_financial_statement_kpi_summed_over_the_kpi_products_only(
    client: Client, new_contact: Any, kpis: list[Any], earns: bool
) -> None:
    body = {
        "contact": {"contact_id": new_contact()["id"]},
        "performed_on": "2026-03-04T10:00:00+02:00",
        "classification": "monthly-statement",
        "period": "2026-02",
        "kpis": kpis,
        "process_immediately": True,
    }
    event = client.post("/v1/events/financial-statements", json=body).json()
    assert awarded(event) == ({"loan-balance-10k": 15.0} if earns else {})


def test_behaviour_platform_action_and_website_glob(client: Client, new_contact: Any) -> None:
    who = {"contact_id": new_contact()["id"]}
    base = {"contact": who, "performed_on": "2026-03-04T10:00:00+02:00"}
    like = client.post(
        "/v1/events/social-media", json={**base, "platform": "instagram", "action": "like"}
    ).json()
    share = client.post(
        "/v1/events/social-media", json={**base, "platform": "instagram", "action": "share"}
    ).json()
    page = client.post(
        "/v1/events/web-visits", json={**base, "website": "https://rewards.example/offers/autumn"}
    ).json()
    other = client.post(
        "/v1/events/web-visits", json={**base, "website": "https://rewards.example/about"}
    ).json()
    assert (awarded(like), awarded(share), awarded(page), awarded(other)) == (
        {"insta-like": 0.5},
        {},
        {"offers-page": 0.25},
        {},
    )
    assert like["evaluated"] is True  # social_media is an always-immediate type in this definition


def test_achievement_immediate_offer_and_batch_offer(client: Client, new_contact: Any) -> None:
    who = {"contact_id": new_contact()["id"]}
    base = {
        "contact": who,
        "performed_on": "2026-03-04T10:00:00+02:00",
        "process_immediately": True,
    }
    course = client.post(
        "/v1/events/achievements", json={**base, "classification": "course-completed"}
    ).json()
    star = client.post(
        "/v1/events/achievements", json={**base, "classification": "5-star-service"}
    ).json()
    assert awarded(course) == {"course-bonus": 2.5}
    assert awarded(star) == {}  # five-star-service is a batch offer here


def test_offers_and_rulesets_endpoints(client: Client) -> None:
    offers = client.get("/v1/offers", params={"limit": 500}).json()
    assert offers["next_cursor"] is None
    by_id = {offer["id"]: offer for offer in offers["items"]}
    assert by_id["gold-basket"] == {
        "id": "gold-basket",
        "name": by_id["gold-basket"]["name"],
        "classification": "increase_revenue_transaction",
        "evaluation": "immediate",
        "valid": None,
        "ruleset_file": "increase_revenue_transaction.yaml",
        "ruleset_version": by_id["gold-basket"]["ruleset_version"],
        "budget": None,  # no budget (tests/api/test_budgets.py: offers with one)
    }
    first = client.get("/v1/offers", params={"limit": 2}).json()
    second = client.get("/v1/offers", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [o["id"] for o in first["items"] + second["items"]] == [
        o["id"] for o in offers["items"][:4]
    ]
    rulesets = client.get("/v1/rulesets").json()
    assert (
        rulesets["version"] == by_id["gold-basket"]["ruleset_version"] and rulesets["errors"] == []
    )
    assert "definition.yaml" in rulesets["files"] or "achievement.yaml" in rulesets["files"]


def test_recorded_event_explains_why_each_offer_did_or_did_not_apply(
    client: Client, buy: Any
) -> None:
    event = buy("store-003", [("BASKET", "40.00")], medium=VISA_CREDIT)
    assert awarded(event) == {}
    assert "explanation" not in client.get(f"/v1/events/{event['id']}").json()
    explained = client.get(f"/v1/events/{event['id']}", params={"explain": "true"}).json()[
        "explanation"
    ]
    outcomes = {offer["offer_id"]: offer for offer in explained["offers"]}
    assert outcomes["gold-basket"]["status"] == "not_applied"
    assert [f["message"] for f in outcomes["gold-basket"]["failed"]] == [
        "transaction_amount 40.00 < min 50.00"
    ]
    assert client.get("/v1/rulesets").json()["versions"][0]["serving"] is True
