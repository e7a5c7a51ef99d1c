"""explain(): per offer, applied or every failed condition with the actual value."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import HealthCheck, given, settings

from rewards.engine import EventFacts, KpiValue, PeriodTotals, Rulesets
from rewards.engine.explain import explain, failed_conditions, number
from rewards.engine.model import AGGREGATE_CLASSIFICATIONS
from tests.unit.engine.builders import event, offer, purchase, rulesets
from tests.unit.engine.test_property import scenarios


def messages(rulesets_: Rulesets, facts: EventFacts, offer_id: str) -> list[str]:
    outcome = {o.offer_id: o for o in explain(rulesets_, facts).offers}[offer_id]
    return [f.message for f in outcome.failed] or [outcome.note or outcome.status]


def test_the_issue_examples(shipped: Rulesets) -> None:
    staff = purchase(
        "2026-03-02T11:00:00+02:00",
        ("GROCERY-BASKET", "42.00"),
        segments=["gold", "staff"],
        payment_brand="visa",
    )
    assert messages(shipped, staff, "basket-over-50") == [
        "segment: contact in staff (excluded)",
        "transaction_amount 42.00 < min 50.00",
    ]


def test_applied_and_not_applied_offers_of_one_purchase(shipped: Rulesets) -> None:
    facts = purchase(
        "2026-03-02T15:10:00+02:00",
        ("COFFEE-LATTE", "7.14"),
        ("MUFFIN-BLUEBERRY", "2.98"),
        unit="store-001",
    )
    result = explain(shipped, facts)
    assert result.event_type == "purchase" and result.ruleset_version == shipped.version
    assert [(d.offer_id, d.amount) for d in result.awards] == [
        ("quiet-afternoon-coffee", D("1.00"))
    ]
    assert result.total_awarded == D("1.00")
    outcomes = {o.offer_id: o for o in result.offers}
    # every offer of the purchase classifications is explained, in file order
    assert [o.offer_id for o in result.offers] == [
        o.id for o in shipped.offers_for_event_type("purchase")
    ]
    coffee = outcomes["quiet-afternoon-coffee"]
    assert (coffee.status, coffee.amount, coffee.failed) == ("applied", D("1.00"), [])
    pastry = outcomes["morning-pastry-south"]
    assert pastry.status == "not_applied"
    assert [f.message for f in pastry.failed] == [
        "units: store-001 (group north) not in south",
        "schedule: 15:10 (Europe/Nicosia) not in 07:00-10:00",
        "products: no line matches (COFFEE-LATTE 7.14: sku matches none of PASTRY-*; "
        "MUFFIN-BLUEBERRY 2.98: sku matches none of PASTRY-*)",
    ]
    assert [f.condition for f in pastry.failed] == ["units", "schedule", "products"]
    monthly = outcomes["monthly-spend-200"]
    assert monthly.status == "not_applied" and monthly.failed == []
    assert monthly.note.startswith("period aggregate")


def test_line_amount_reason_and_days() -> None:
    deal = offer(
        "utilise_free_capacity",
        "deal",
        conditions={
            "schedule": {"days": ["mon"], "hours": [{"from": "11:30", "until": "13:00"}]},
            "products": [{"sku": "SANDWICH-*", "amount": {"min": 3}}],
        },
    )
    loaded = rulesets(deal)
    facts = purchase("2026-03-07T18:45:00+02:00", ("SANDWICH-MINI", "2.38"))
    assert messages(loaded, facts, "deal") == [
        "schedule: sat not in mon",
        "schedule: 18:45 (Europe/Nicosia) not in 11:30-13:00",
        "products: no line matches (SANDWICH-MINI 2.38: amount 2.38 < min 3.00 for SANDWICH-*)",
    ]
    loaded.host.close()


def test_every_condition_kind_explains_itself() -> None:
    offers = [
        offer(
            "financial_achievement",
            "fa",
            valid={"from": "2026-04-01"},
            conditions={
                "event_classifications": ["top-up"],
                "amount": {"min": 100, "max": 200},
                "payment_medium": {"brands": ["electron"], "types": ["debit"]},
                "segments": {"include": ["gold"]},
                "units": ["north"],
                "max_awards": {"count": 1, "window_days": 365},
            },
        ),
        offer(
            "financial_statement",
            "fs",
            valid={"until": "2026-01-31"},
            conditions={
                "kpis": [{"kpi": "loan-balance", "min": 1000}, {"kpi": "savings-balance", "min": 5}]
            },
        ),
        offer("behaviour", "web", conditions={"websites": ["https://shop.test/*"]}),
        offer("behaviour", "like", conditions={"platforms": ["facebook"], "actions": ["like"]}),
        offer(
            "loyalty_transaction_number",
            "visits",
            conditions={"period": "month", "count": {"min": 10}},
        ),
    ]
    loaded = rulesets(*offers)
    fa = event(
        "financial_achievement",
        classification="loan-repayment",
        amount=D("250.004"),
        payment_brand="visa",
        unit="store-003",
        awards_in_window={"fa": 1},
    )
    assert messages(loaded, fa, "fa") == [
        "valid: performed on 2026-03-02 (business date), before from 2026-04-01",
        "segments: contact has no segments, none of gold",
        "units: store-003 (group south) not in north",
        "payment_medium: brand visa not in electron",
        "payment_medium: no type (needs debit)",
        "amount 250.00 > max 200.00",
        "event_classifications: loan-repayment not in top-up",
        "max_awards: 1 award(s) in the last 365 days, max 1",
    ]
    fs = event(
        "financial_statement",
        kpis=[
            KpiValue(kpi="loan-balance", product="LOAN-HOME", value=D("600")),
            KpiValue(kpi="loan-balance", product="LOAN-CAR", value=D("600")),  # not counted
            KpiValue(kpi="loan-balance", product="LOAN-BUSINESS", value=D("399.99")),
        ],
    )
    assert messages(loaded, fs, "fs") == [
        "valid: performed on 2026-03-02 (business date), after until 2026-01-31",
        "kpis: loan-balance 999.99 < min 1000.00",
        "kpis: no savings-balance value",
    ]
    web = event("web", website="https://blog.test/a")
    assert messages(loaded, web, "web") == [
        "websites: https://blog.test/a matches none of https://shop.test/*"
    ]
    assert messages(loaded, web, "like") == [
        "platforms/actions: a web event is not a social media event"
    ]
    social = event("social_media", platform="x", action="share")
    assert messages(loaded, social, "like") == [
        "platforms: x not in facebook",
        "actions: share not in like",
    ]
    assert messages(loaded, social, "web") == ["websites: a social_media event is not a web visit"]
    visits = purchase(period_totals={"visits": PeriodTotals(count=3)})
    outcome = explain(loaded, visits).offers
    assert [f.message for f in outcome[0].failed] == ["count 3 < min 10"]
    assert explain(loaded, purchase()).offers[0].note.startswith("period aggregate")
    assert messages(loaded, purchase(period_totals={"other": PeriodTotals()}), "visits") == [
        "period: no period totals given for this month offer"
    ]
    loaded.host.close()


def test_matched_but_not_awarded(shipped: Rulesets) -> None:
    # the seed five-star offer is batch: an immediate evaluation leaves it out
    facts = event("achievement", classification="5-star-service")
    [outcome] = [
        o
        for o in explain(shipped, facts, mode="immediate").offers
        if o.offer_id == "five-star-service"
    ]
    assert outcome.status == "not_applied" and outcome.failed == []
    assert outcome.note == (
        "conditions met, but its evaluation is batch and this evaluation applies immediate offers only"
    )
    referral = event("referral", classification="friend-referral", segments=["gold"])
    outcomes = {o.offer_id: o for o in explain(shipped, referral).offers}
    assert outcomes["gold-referrer-double"].amount == D("25.00")  # referred 5 + referrer 20
    assert outcomes["friend-referral-bonus"].note == (
        "conditions met, but offer 'gold-referrer-double' (priority 10) of exclusive group "
        "'referral' applied instead (this offer: priority 0)"
    )


def test_zero_award_is_explained() -> None:
    tiny = offer("increase_revenue_transaction", "tiny", award={"percentage": 1})
    loaded = rulesets(tiny)
    assert messages(loaded, purchase("2026-03-02T11:00:00+02:00", ("X", "0.10")), "tiny") == [
        "conditions met, but the award comes to 0.00"
    ]
    loaded.host.close()


@pytest.mark.parametrize(
    ("value", "shown"),
    [(D("50"), "50.00"), (D("2.5"), "2.50"), (D("0.125"), "0.125"), (7, "7.00")],
)
def test_number(value: D, shown: str) -> None:
    assert number(value) == shown


@settings(
    derandomize=True,
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios())
def test_failed_conditions_agree_with_the_engine(scenario: tuple[list, list[EventFacts]]) -> None:
    """No failed condition <=> the engine matched the offer, on generated offers and events."""
    from rewards.engine import Evaluator

    generated, facts_list = scenario
    loaded = rulesets(*generated)
    try:
        evaluator = Evaluator(loaded)
        for facts in facts_list:
            matched = set(evaluator.matched_offers(facts, aggregates=True))
            for item in loaded.offers_for_event_type(facts.event_type):
                failed = failed_conditions(loaded, item, facts)
                if (
                    item.classification in AGGREGATE_CLASSIFICATIONS
                    and item.id not in facts.period_totals
                ):
                    assert item.id not in matched
                    continue
                assert (not failed) == (item.id in matched), (item, facts, failed)
            result = explain(loaded, facts, aggregates=True, evaluator=evaluator)
            assert result.awards == evaluator.evaluate(facts, mode="all", aggregates=True)
            applied = {o.offer_id for o in result.offers if o.status == "applied"}
            assert applied == {d.offer_id for d in result.awards}
    finally:
        loaded.host.close()
