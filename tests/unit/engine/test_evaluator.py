"""The engine decides matches per classification and condition kind; awards are exact."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal as D

import pytest

from rewards.engine import Evaluator, EventFacts, KpiValue, PeriodTotals, Rulesets
from rewards.engine.model import Offer
from tests.unit.engine import reference
from tests.unit.engine.builders import event, offer, purchase, rulesets, summary

Decide = Callable[..., list[tuple]]


@pytest.fixture
def decide() -> Iterator[Decide]:
    """decide(offers, facts, mode=..., aggregates=...) -> summary, checked against the reference."""
    built: dict[tuple[str, ...], Rulesets] = {}

    def run(offers: list[Offer] | Offer, facts: EventFacts, **options: object) -> list[tuple]:
        offers = [offers] if isinstance(offers, Offer) else offers
        key = tuple(repr(o) for o in offers)
        if key not in built:
            built[key] = rulesets(*offers)
        loaded = built[key]
        options.setdefault("mode", "all")
        result = summary(Evaluator(loaded).evaluate(facts, **options))
        assert result == reference.evaluate(loaded, facts, **options)
        return result

    yield run
    for loaded in built.values():
        loaded.host.close()


def one(
    offer_id: str, amount: str, lines: tuple | None = None, beneficiary: str = "contact"
) -> tuple:
    return (offer_id, beneficiary, D(amount), lines)


# --- common conditions ----------------------------------------------------------------


def test_segments_include_and_exclude(decide: Decide) -> None:
    o = offer(
        "achievement",
        "seg",
        conditions={"segments": {"include": ["gold", "silver"], "exclude": ["staff"]}},
    )
    assert decide(o, event("achievement", segments=["gold"])) == [one("seg", "1")]
    assert decide(o, event("achievement", segments=["new", "silver"])) == [one("seg", "1")]
    assert decide(o, event("achievement", segments=["gold", "staff"])) == []
    assert decide(o, event("achievement", segments=["new"])) == []
    assert decide(o, event("achievement", segments=[])) == []


def test_segments_exclude_only_holds_without_segments(decide: Decide) -> None:
    o = offer("achievement", "no-staff", conditions={"segments": {"exclude": ["staff", "test"]}})
    assert decide(o, event("achievement", segments=[])) == [one("no-staff", "1")]
    assert decide(o, event("achievement", segments=["gold"])) == [one("no-staff", "1")]
    assert decide(o, event("achievement", segments=["test"])) == []


def test_units_and_unit_groups(decide: Decide) -> None:
    o = offer("achievement", "units", conditions={"units": ["store-003", "north"]})
    assert decide(o, event("achievement", unit="store-001")) == [one("units", "1")]  # north
    assert decide(o, event("achievement", unit="store-003")) == [one("units", "1")]
    only = offer("achievement", "only", conditions={"units": ["store-002"]})
    assert decide(only, event("achievement", unit="store-001")) == []
    assert decide(o, event("achievement", unit="store-999")) == []
    assert decide(o, event("achievement", unit=None)) == []


def test_payment_medium_brand_and_type_vs_brand_only(decide: Decide) -> None:
    both = offer(
        "increase_revenue_transaction",
        "both",
        conditions={"payment_medium": {"brands": ["visa"], "types": ["debit"]}},
    )
    brand = offer(
        "increase_revenue_transaction",
        "brand",
        conditions={"payment_medium": {"brands": ["visa", "electron"]}},
    )
    kind = offer(
        "increase_revenue_transaction", "type", conditions={"payment_medium": {"types": ["credit"]}}
    )
    offers = [both, brand, kind]

    def ids(brand_: str | None, type_: str | None) -> list[str]:
        facts = purchase(
            "2026-03-02T11:00:00+02:00", ("X", "10"), payment_brand=brand_, payment_type=type_
        )
        return [d[0] for d in decide(offers, facts)]

    assert ids("visa", "debit") == ["both", "brand"]
    assert ids("visa", "credit") == ["brand", "type"]
    assert ids("electron", None) == ["brand"]
    assert ids(None, "credit") == ["type"]
    assert ids(None, None) == []


def test_schedule_edges_in_business_time_zone(decide: Decide) -> None:
    o = offer(
        "utilise_free_capacity",
        "afternoon",
        conditions={
            "schedule": {
                "days": ["mon", "tue", "wed", "thu", "fri"],
                "hours": [{"from": "14:00", "until": "17:00"}],
            },
            "products": [{"sku": "COFFEE-*"}],
        },
    )

    def at(when: str) -> list[tuple]:
        return decide(o, purchase(when, ("COFFEE-LATTE", "3.50")))

    awarded = [one("afternoon", "1", ((0, D("1.00")),))]
    assert at("2026-03-02T14:00:00+02:00") == awarded  # from is inclusive
    assert at("2026-03-02T13:59:59+02:00") == []
    assert at("2026-03-02T16:59:59+02:00") == awarded
    assert at("2026-03-02T17:00:00+02:00") == []  # until is exclusive
    assert at("2026-03-02T12:00:00Z") == awarded  # 14:00 in Nicosia (UTC+2 in March)
    assert at("2026-06-15T11:00:00Z") == awarded  # 14:00 in Nicosia (UTC+3 in summer)
    assert at("2026-06-15T14:00:00Z") == []  # 17:00 in Nicosia
    assert at("2026-03-07T15:00:00+02:00") == []  # Saturday
    assert at("2026-03-06T22:30:00Z") == []  # Friday in UTC, Saturday 00:30 in Nicosia


def test_several_hour_windows_and_days_only(decide: Decide) -> None:
    o = offer(
        "achievement",
        "windows",
        conditions={
            "schedule": {
                "hours": [{"from": "08:00", "until": "09:00"}, {"from": "20:00", "until": "24:00"}]
            }
        },
    )
    assert decide(o, event("achievement", "2026-03-02T08:30:00+02:00")) == [one("windows", "1")]
    assert decide(o, event("achievement", "2026-03-02T23:59:00+02:00")) == [one("windows", "1")]
    assert decide(o, event("achievement", "2026-03-02T12:00:00+02:00")) == []
    weekend = offer("achievement", "weekend", conditions={"schedule": {"days": ["sat", "sun"]}})
    assert decide(weekend, event("achievement", "2026-03-08T23:59:00+02:00")) == [
        one("weekend", "1")
    ]
    assert decide(weekend, event("achievement", "2026-03-09T00:00:00+02:00")) == []


def test_validity_dates_inclusive_on_business_date(decide: Decide) -> None:
    o = offer("achievement", "march", valid={"from": "2026-03-01", "until": "2026-03-31"})
    assert decide(o, event("achievement", "2026-03-01T00:00:00+02:00")) == [one("march", "1")]
    assert decide(o, event("achievement", "2026-02-28T22:30:00Z")) == [
        one("march", "1")
    ]  # 1 March local
    assert decide(o, event("achievement", "2026-03-31T23:59:00+03:00")) == [one("march", "1")]
    assert decide(o, event("achievement", "2026-03-31T21:30:00Z")) == []  # 1 April local
    assert decide(o, event("achievement", "2026-02-28T12:00:00+02:00")) == []


def test_max_awards_window(decide: Decide) -> None:
    o = offer("achievement", "twice", conditions={"max_awards": {"count": 2, "window_days": 30}})
    assert decide(o, event("achievement")) == [one("twice", "1")]
    assert decide(o, event("achievement", awards_in_window={"twice": 1})) == [one("twice", "1")]
    assert decide(o, event("achievement", awards_in_window={"twice": 2})) == []
    assert decide(o, event("achievement", awards_in_window={"other": 5})) == [one("twice", "1")]
    assert rulesets(o).award_windows("achievement") == {"twice": 30}
    assert rulesets(o).award_windows("purchase") == {}


# --- purchase classifications --------------------------------------------------------


def test_transaction_amount_range_edges_and_percentage(decide: Decide) -> None:
    o = offer(
        "increase_revenue_transaction",
        "range",
        award={"percentage": 5},
        conditions={"transaction_amount": {"min": 50, "max": 100.5}},
    )

    def award(total: str) -> list[tuple]:
        return decide(o, purchase("2026-03-02T11:00:00+02:00", ("X", total)))

    assert award("49.99") == []
    assert award("50.00") == [one("range", "2.50")]
    assert award("100.50") == [one("range", "5.03")]  # 5.025 rounds half-up
    assert award("100.51") == []
    assert decide(o, purchase("2026-03-02T11:00:00+02:00", ("X", "10"), total="60")) == [
        one("range", "3.00")
    ]


def test_percentage_rounding_half_up_and_cap(decide: Decide) -> None:
    o = offer("increase_revenue_transaction", "pct", award={"percentage": D("2.5"), "max": 3})
    assert decide(o, purchase("2026-03-02T11:00:00+02:00", ("X", "10.10"))) == [
        one("pct", "0.25")
    ]  # 0.2525
    assert decide(o, purchase("2026-03-02T11:00:00+02:00", ("X", "10.30"))) == [
        one("pct", "0.26")
    ]  # 0.2575
    assert decide(o, purchase("2026-03-02T11:00:00+02:00", ("X", "10.20"))) == [
        one("pct", "0.26")
    ]  # 0.255
    assert decide(o, purchase("2026-03-02T11:00:00+02:00", ("X", "500"))) == [one("pct", "3")]
    assert decide(o, purchase("2026-03-02T11:00:00+02:00", ("X", "0.10"))) == []  # 0.0025 -> 0.00


def test_sub_cent_amounts_are_rounded_before_comparing(decide: Decide) -> None:
    o = offer(
        "increase_revenue_transaction", "fifty", conditions={"transaction_amount": {"min": 50}}
    )
    assert decide(o, purchase("2026-03-02T11:00:00+02:00", ("X", "49.995"))) == [one("fifty", "1")]
    assert decide(o, purchase("2026-03-02T11:00:00+02:00", ("X", "49.994"))) == []


def test_per_line_versus_per_event(decide: Decide) -> None:
    lines = [("COFFEE-LATTE", "3.35"), ("MUFFIN", "2.50"), ("COFFEE-MOCHA", "4.10")]
    per_line = offer(
        "utilise_free_capacity",
        "per-line",
        award={"percentage": 10},
        conditions={"products": [{"sku": "COFFEE-*"}]},
    )
    fixed = offer(
        "increase_revenue_product",
        "fixed",
        award={"amount": 2},
        conditions={"products": [{"sku": "COFFEE-*"}]},
    )
    event_level = offer("increase_revenue_transaction", "event", award={"percentage": 10})
    facts = purchase("2026-03-02T11:00:00+02:00", *lines)
    assert decide([per_line, fixed, event_level], facts) == [
        one("per-line", "0.75", ((0, D("0.34")), (2, D("0.41")))),  # 0.335 -> 0.34
        one("fixed", "4", ((0, D("2")), (2, D("2")))),
        one("event", "1.00"),  # 10% of 9.95 = 0.995
    ]


def test_per_line_cap_is_filled_in_line_order(decide: Decide) -> None:
    o = offer(
        "increase_revenue_product",
        "capped",
        award={"amount": 2, "max": 5},
        conditions={"products": [{"sku": "GC-*"}]},
    )
    facts = purchase(
        "2026-03-02T11:00:00+02:00",
        ("GC-1", "10"),
        ("X", "1"),
        ("GC-2", "10"),
        ("GC-3", "10"),
        ("GC-4", "10"),
    )
    assert decide(o, facts) == [one("capped", "5", ((0, D("2")), (2, D("2")), (3, D("1"))))]


def test_product_globs_and_line_amount_ranges(decide: Decide) -> None:
    o = offer(
        "increase_revenue_product",
        "globs",
        conditions={
            "products": [
                {"sku": "BEANS-?", "amount": {"min": 20}},
                {"sku": "GC-[0-9][0-9]"},
                {"sku": "50%.OFF*"},
            ]
        },
    )
    facts = purchase(
        "2026-03-02T11:00:00+02:00",
        ("BEANS-A", "20.00"),
        ("BEANS-A", "19.99"),
        ("BEANS-AB", "30"),
        ("GC-25", "25"),
        ("GC-250", "250"),
        ("50%.OFF-SALE", "1"),
        ("50%xOFF", "1"),
    )
    assert decide(o, facts) == [one("globs", "3", ((0, D(1)), (3, D(1)), (5, D(1))))]


def test_per_line_without_product_condition_awards_every_line(decide: Decide) -> None:
    o = offer("utilise_free_capacity", "all-lines", award={"percentage": 50})
    assert decide(o, purchase("2026-03-02T11:00:00+02:00", ("A", "1"), ("B", "3"))) == [
        one("all-lines", "2", ((0, D("0.50")), (1, D("1.50"))))
    ]
    assert decide(o, purchase("2026-03-02T11:00:00+02:00")) == []


def test_currency_and_instant_spend(shipped: Rulesets) -> None:
    [decision] = Evaluator(shipped).evaluate(
        purchase(
            "2026-03-02T11:00:00+02:00",
            ("TV-55", "600"),
            unit="store-003",
        ),
        mode="immediate",
    )
    assert (decision.offer_id, decision.amount, decision.instant_spend) == (
        "big-basket-bonus",
        D("20.00"),
        True,
    )
    assert decision.ruleset_version == shipped.version
    assert decision.classification == "increase_revenue_transaction"
    assert decision.lines is None


# --- precedence -----------------------------------------------------------------------


def test_exclusive_group_highest_priority_then_file_order(decide: Decide) -> None:
    low = offer(
        "increase_revenue_transaction", "low", award={"amount": 1}, exclusive_group="g", priority=1
    )
    first = offer(
        "increase_revenue_transaction",
        "first",
        award={"amount": 2},
        exclusive_group="g",
        priority=5,
    )
    second = offer(
        "increase_revenue_transaction",
        "second",
        award={"amount": 3},
        exclusive_group="g",
        priority=5,
    )
    free = offer("increase_revenue_transaction", "free", award={"amount": 4})
    other = offer(
        "increase_revenue_transaction",
        "other",
        award={"amount": 5},
        exclusive_group="h",
        priority=-1,
    )
    facts = purchase("2026-03-02T11:00:00+02:00", ("X", "10"))
    assert decide([low, first, second, free, other], facts) == [
        one("first", "2"),
        one("free", "4"),
        one("other", "5"),
    ]
    assert decide([low, second, first], facts) == [one("second", "3")]


def test_exclusive_group_only_counts_offers_that_award(decide: Decide) -> None:
    winner_that_fails = offer(
        "increase_revenue_transaction",
        "big",
        exclusive_group="g",
        priority=9,
        conditions={"transaction_amount": {"min": 100}},
    )
    zero = offer(
        "increase_revenue_transaction",
        "zero",
        award={"percentage": 1},
        exclusive_group="g",
        priority=8,
    )
    fallback = offer("increase_revenue_transaction", "fallback", exclusive_group="g", priority=0)
    facts = purchase("2026-03-02T11:00:00+02:00", ("X", "0.10"))  # 1% -> 0.00
    assert decide([winner_that_fails, zero, fallback], facts) == [one("fallback", "1")]


def test_exclusive_group_across_classifications(decide: Decide) -> None:
    line = offer(
        "utilise_free_capacity", "line", award={"amount": 1}, exclusive_group="g", priority=1
    )
    total = offer(
        "increase_revenue_transaction",
        "total",
        award={"amount": 9},
        exclusive_group="g",
        priority=2,
    )
    assert decide([line, total], purchase("2026-03-02T11:00:00+02:00", ("X", "5"))) == [
        one("total", "9")
    ]


# --- other event types ----------------------------------------------------------------


def test_referral_awards_referred_then_referrer(decide: Decide) -> None:
    o = offer(
        "referral",
        "friend",
        award={"referred": {"amount": 5}, "referrer": {"amount": 10}},
        conditions={"event_classifications": ["friend-referral"]},
    )
    only_referred = offer("referral", "plain", award={"referred": {"amount": 2}})
    facts = event("referral", classification="friend-referral")
    assert decide([o, only_referred], facts) == [
        one("friend", "5", beneficiary="referred"),
        one("friend", "10", beneficiary="referrer"),
        one("plain", "2", beneficiary="referred"),
    ]
    assert decide(o, event("referral")) == []


def test_referral_segments_are_the_referrers(decide: Decide) -> None:
    o = offer(
        "referral",
        "gold",
        award={"referred": {"amount": 1}, "referrer": {"amount": 2}},
        conditions={"segments": {"include": ["gold"]}},
    )
    assert [d[1] for d in decide(o, event("referral", segments=["gold"]))] == [
        "referred",
        "referrer",
    ]
    assert decide(o, event("referral", segments=[])) == []


def test_event_classifications(decide: Decide) -> None:
    o = offer(
        "achievement",
        "five",
        conditions={"event_classifications": ["5-star-service", "course-completed"]},
    )
    assert decide(o, event("achievement", classification="course-completed")) == [one("five", "1")]
    assert decide(o, event("achievement", classification="other")) == []
    assert decide(o, event("achievement")) == []


def test_financial_achievement_amount_and_percentage(decide: Decide) -> None:
    o = offer(
        "financial_achievement",
        "top",
        award={"percentage": 1, "max": 25},
        conditions={"event_classifications": ["top-up"], "amount": {"min": 100, "max": 5000}},
    )
    facts = event("financial_achievement", classification="top-up", amount=D("1234.50"))
    assert decide(o, facts) == [one("top", "12.35")]
    assert (
        decide(o, event("financial_achievement", classification="top-up", amount=D("99.99"))) == []
    )
    assert decide(o, event("financial_achievement", classification="top-up", amount=D("5000"))) == [
        one("top", "25")
    ]
    assert decide(o, event("financial_achievement", classification="top-up")) == []  # no amount
    any_amount = offer("financial_achievement", "any", award={"percentage": 10})
    assert decide(any_amount, event("financial_achievement")) == []  # nothing to take 10% of


def test_financial_statement_kpis_summed_over_their_products(decide: Decide) -> None:
    o = offer(
        "financial_statement", "loans", conditions={"kpis": [{"kpi": "loan-balance", "min": 10000}]}
    )
    savings = offer(
        "financial_statement",
        "savings",
        conditions={"kpis": [{"kpi": "savings-balance", "min": D("0.5")}]},
    )

    def kpis(*entries: tuple[str, str | None, str]) -> EventFacts:
        return event(
            "financial_statement",
            kpis=[KpiValue(kpi=k, product=p, value=D(v)) for k, p, v in entries],
        )

    offers = [o, savings]
    assert decide(
        offers,
        kpis(("loan-balance", "LOAN-HOME", "6000"), ("loan-balance", "LOAN-BUSINESS", "4000")),
    ) == [one("loans", "1")]
    assert (
        decide(
            offers,
            kpis(("loan-balance", "LOAN-HOME", "6000"), ("loan-balance", "LOAN-CAR", "9000")),
        )
        == []
    )
    assert decide(offers, kpis(("loan-balance", None, "20000"))) == []  # KPI has specific products
    assert decide(
        offers, kpis(("savings-balance", None, "0.3"), ("savings-balance", "ANY", "0.2"))
    ) == [one("savings", "1")]
    assert decide(offers, kpis(("savings-balance", None, "0.49"))) == []
    assert decide(savings, kpis()) == []


def test_behaviour_platforms_actions_and_websites(decide: Decide) -> None:
    like = offer(
        "behaviour", "like", conditions={"platforms": ["facebook"], "actions": ["like", "share"]}
    )
    site = offer("behaviour", "site", conditions={"websites": ["https://*.example.com/summer*"]})
    anything = offer("behaviour", "anything", award={"amount": D("0.10")})
    offers = [like, site, anything]
    social = event("social_media", platform="facebook", action="share")
    assert [d[0] for d in decide(offers, social)] == ["like", "anything"]
    assert [
        d[0] for d in decide(offers, event("social_media", platform="facebook", action="comment"))
    ] == ["anything"]
    web = event("web", website="https://shop.example.com/summer-sale")
    assert [d[0] for d in decide(offers, web)] == ["site", "anything"]
    assert [
        d[0] for d in decide(offers, event("web", website="https://example.com.evil/summer"))
    ] == ["anything"]
    assert [d[0] for d in decide(offers, event("web"))] == ["anything"]


def test_event_types_only_reach_their_classifications(decide: Decide) -> None:
    o = offer("achievement", "ach")
    assert decide(o, event("financial_achievement")) == []
    assert decide(o, purchase()) == []


# --- modes and aggregates -------------------------------------------------------------


def test_modes(decide: Decide) -> None:
    now = offer("achievement", "now", evaluation="immediate")
    later = offer("achievement", "later", evaluation="batch")
    facts = event("achievement")
    assert [d[0] for d in decide([now, later], facts, mode="immediate")] == ["now"]
    assert [d[0] for d in decide([now, later], facts, mode="batch")] == ["later"]
    assert [d[0] for d in decide([now, later], facts, mode="all")] == ["now", "later"]
    with pytest.raises(ValueError, match="mode"):
        Evaluator(rulesets(now)).evaluate(facts, mode="sometimes")  # type: ignore[arg-type]


def test_period_aggregates_only_when_asked(decide: Decide) -> None:
    amount = offer(
        "loyalty_transaction_amount",
        "monthly",
        award={"percentage": 2, "max": 20},
        conditions={"period": "month", "total_amount": {"min": 200}},
    )
    number = offer(
        "loyalty_transaction_number",
        "visits",
        award={"amount": 5},
        conditions={"period": "month", "count": {"min": 10}},
    )
    quantity = offer(
        "loyalty_item_quantity",
        "coffees",
        award={"amount": 3},
        conditions={
            "period": "week",
            "products": [{"sku": "COFFEE-*"}],
            "quantity": {"min": D("12.5")},
        },
    )
    offers = [amount, number, quantity]
    totals = {
        "monthly": PeriodTotals(total_amount=D("345.50"), count=7),
        "visits": PeriodTotals(count=10),
        "coffees": PeriodTotals(quantity=D("12.5")),
    }
    facts = purchase("2026-03-31T20:00:00+03:00", ("COFFEE-LATTE", "3"), period_totals=totals)
    assert decide(offers, facts) == []
    assert decide(offers, facts, aggregates=True) == [
        one("monthly", "6.91"),
        one("visits", "5"),
        one("coffees", "3"),
    ]
    assert decide(offers, purchase("2026-03-31T20:00:00+03:00"), aggregates=True) == []
    assert (
        decide(offers, purchase(period_totals={"visits": PeriodTotals(count=9)}), aggregates=True)
        == []
    )


def test_naive_timestamps_are_refused() -> None:
    loaded = rulesets(offer("achievement", "a"))
    with pytest.raises(ValueError, match="timezone-aware"):
        Evaluator(loaded).evaluate(event("achievement", "2026-03-02T11:00:00"), mode="all")
    loaded.host.close()


def test_many_fields_fall_back_to_a_fact_per_ruleset() -> None:
    """260 max_awards offers of one event type exceed durable's 255 fact properties."""
    offers = [
        offer(
            classification,
            f"{classification[:3]}-{n}",
            conditions={"max_awards": {"count": 1, "window_days": 7}},
        )
        for classification in ("increase_revenue_transaction", "utilise_free_capacity")
        for n in range(130)
    ]
    loaded = rulesets(*offers)
    try:
        facts = purchase(
            "2026-03-02T11:00:00+02:00", ("X", "1"), awards_in_window={"inc-7": 1, "uti-3": 1}
        )
        decisions = Evaluator(loaded).evaluate(facts, mode="all")
        assert len(decisions) == 258
        assert {"inc-7", "uti-3"}.isdisjoint(d.offer_id for d in decisions)
    finally:
        loaded.host.close()


def test_more_than_64_matching_offers_in_one_classification(decide: Decide) -> None:
    """durable-rules fails with error 303 past 64 matching paths in one ruleset: we chunk."""
    many = [
        offer(
            "utilise_free_capacity",
            f"o{n}",
            conditions={
                "units": ["store-001", "north"],
                "products": [{"sku": "A*"}, {"sku": "*B"}],
            },
        )
        for n in range(70)
    ]
    result = decide(many, purchase("2026-03-02T11:00:00+02:00", ("AB", "1"), ("C", "1")))
    assert len(result) == 70
    assert all(lines == ((0, D("1.00")),) for *_, lines in result)


def test_one_offer_with_too_many_alternatives_is_refused() -> None:
    from rewards.engine.compiler import CompileError, compile_rulesets

    websites = [f"https://{n}.test/*" for n in range(61)]
    with pytest.raises(CompileError, match="61 ways at once"):
        compile_rulesets(
            rulesets().definition, [offer("behaviour", "w", conditions={"websites": websites})]
        )
