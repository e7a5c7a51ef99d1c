"""Period aggregates in evaluation runs: each classification at its range edges, calendar
periods in the business time zone (Europe/Nicosia), closed periods only, the
contribution filters, max_awards between periods, and cancellation of a contributing
purchase (the whole aggregate award is reversed; the rest becomes unrewarded again)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import select

from rewards.db.run_tables import AggregateAward, AggregateLink, AggregatePending
from rewards.db.tables import Award, Event
from rewards.runs import aggregates
from tests.conftest import BOTH
from tests.integration.test_runs import RUN_RULESETS, World

MARCH = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)


@pytest.fixture
def rulesets_dir() -> Path:
    return RUN_RULESETS


@pytest.fixture(autouse=True, params=["by contact", "in time order"])
def scan(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test with both ways of reading a period's purchases (the contacts' index, or
    the whole period in time order: aggregates.reads_in_time_order)."""
    by_contact = request.param == "by contact"
    monkeypatch.setattr(aggregates, "TIME_SCAN_CONTACTS", 10**9 if by_contact else 0)
    monkeypatch.setattr(aggregates, "TIME_SCAN_SHARE", 0.0)
    return str(request.param)


@pytest.fixture
def world(app: Litestar) -> Iterator[World]:
    with TestClient(app):
        yield World(app)


def _links(world: World, offer_id: str) -> set[str]:
    with world.database.session(write=False) as session:
        rows = session.execute(
            select(Event.external_reference)
            .join(AggregateLink, AggregateLink.event_number == Event.number)
            .where(AggregateLink.offer_id == offer_id)
        ).all()
    return {ref for (ref,) in rows}


# ---- loyalty_transaction_amount ----------------------------------------------------------


MONTH_EDGES = [
    (["150.00", "49.99"], None),  # 199.99: below the range
    (["150.00", "50.00"], 400),  # 200.00 exactly: 2% = 4.00
    (["500.00", "500.00"], 2000),  # 1000.00: the top of the range (and the cap)
    (["500.00", "500.01"], None),  # 1000.01: above the range
    (["123.45", "100.00", "0.50"], 448),  # 223.95 x 2% = 4.479 -> 4.48
]


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_month_spend_at_the_range_edges(world: World) -> None:
    cases = []
    for amounts, award in MONTH_EDGES:
        person = world.contact()
        bought = [
            world.purchase(person, MARCH + timedelta(days=i), "amount-1", [("ITEM", "1", amount)])
            for i, amount in enumerate(amounts)
        ]
        cases.append((person, bought, award))
    world.run()
    standing = world.standing("month-spend")
    links = _links(world, "month-spend")
    for person, bought, award in cases:
        refs = {e.external_reference for e in bought}
        mine = [(ref, cents) for _, ref, cents in standing if ref in refs]
        if award is None:
            assert mine == [] and not refs & links
        else:
            # Made once, on the latest purchase, with every purchase of the month linked.
            assert mine == [(bought[-1].external_reference, award)]
            assert refs <= links
            assert world.balance(person) == award


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_months_are_calendar_months_in_the_business_time_zone(world: World) -> None:
    person = world.contact()
    # 2026-03-31T20:30Z is 23:30 in Nicosia (UTC+3): March. 21:30Z is already April 1st.
    march = world.purchase(
        person, datetime(2026, 3, 31, 20, 30, tzinfo=UTC), "amount-1", [("A", "1", "150.00")]
    )
    april = world.purchase(
        person, datetime(2026, 3, 31, 21, 30, tzinfo=UTC), "amount-1", [("A", "1", "100.00")]
    )
    other = world.contact()
    both = [
        world.purchase(other, datetime(2026, 3, 31, 20, 30, tzinfo=UTC), "amount-2", [("A", "1", "150.00")]),
        world.purchase(other, datetime(2026, 3, 1, 0, 30, tzinfo=UTC), "amount-2", [("A", "1", "100.00")]),
    ]  # fmt: skip

    world.run()

    # 150 in March and 100 in April: neither month reaches 200, although the UTC day is one.
    # The other contact's 250 in March: awarded on the purchase recorded last.
    assert {ref for _, ref, _ in world.standing("month-spend")} == {both[1].external_reference}
    assert _links(world, "month-spend") == {e.external_reference for e in both}
    assert march.external_reference not in _links(world, "month-spend")
    assert april.external_reference not in _links(world, "month-spend")


def test_open_periods_wait_until_they_are_closed(world: World) -> None:
    person = world.contact()
    for i in range(2):
        world.purchase(person, MARCH + timedelta(days=i), "amount-1", [("A", "1", "120.00")])

    inside = world.run(as_of=datetime(2026, 3, 31, 20, 0, tzinfo=UTC))  # 23:00 in Nicosia
    assert inside.events_evaluated == 2 and world.standing("month-spend") == []

    closed = world.run(as_of=datetime(2026, 3, 31, 21, 0, tzinfo=UTC))  # midnight: April
    assert closed.events_evaluated == 0 and closed.awards == 1
    assert world.standing("month-spend")[0][2] == 480


def test_a_late_purchase_into_a_settled_month_is_aggregated_with_the_unrewarded_ones(
    world: World,
) -> None:
    person = world.contact()
    world.purchase(person, MARCH, "amount-1", [("A", "1", "250.00")])
    world.run()
    assert len(world.standing("month-spend")) == 1

    late = world.purchase(person, MARCH + timedelta(days=5), "amount-1", [("A", "1", "150.00")])
    world.run()
    assert len(world.standing("month-spend")) == 1  # 150 alone is below the range

    later = world.purchase(person, MARCH + timedelta(days=6), "amount-1", [("A", "1", "60.00")])
    world.run()
    # The two unrewarded purchases make 210 together: a second award, of 4.20.
    assert len(world.standing("month-spend")) == 2
    assert ("month-spend", later.external_reference, 420) in world.standing("month-spend")
    assert {late.external_reference, later.external_reference} <= _links(world, "month-spend")


# ---- loyalty_transaction_number ----------------------------------------------------------


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_week_visits_at_the_range_edges(world: World) -> None:
    monday = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)  # Monday 2026-03-02 00:00 in Nicosia
    expected = {2: 0, 3: 500, 5: 500, 6: 0}
    people = {}
    for visits in expected:
        people[visits] = world.contact()
        for i in range(visits):
            world.purchase(people[visits], monday + timedelta(days=i), "number-1")
    world.run()
    assert {visits: world.balance(person) for visits, person in people.items()} == expected


def test_weeks_run_from_monday_in_the_business_time_zone(world: World) -> None:
    person = world.contact()
    sunday_night = datetime(2026, 3, 8, 21, 30, tzinfo=UTC)  # Sunday 23:30 in Nicosia
    monday_early = datetime(2026, 3, 8, 22, 30, tzinfo=UTC)  # Monday 00:30 in Nicosia
    world.purchase(person, sunday_night - timedelta(days=1), "number-1")
    world.purchase(person, sunday_night, "number-1")
    world.purchase(person, monday_early, "number-1")
    world.purchase(person, monday_early + timedelta(days=1), "number-1")
    world.run()
    assert world.standing("week-visits") == []  # 2 + 2 visits, never 3 in one week


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_contribution_filters_and_contact_conditions(world: World) -> None:
    visa = {"identifier": "4111111111111111"}  # brand rule: visa
    electron = {"identifier": "4917000011112222"}
    gold = world.contact(segments=["gold"])
    world.purchase(gold, MARCH, "card-1", payment_medium=visa)
    world.purchase(gold, MARCH + timedelta(days=1), "card-1", payment_medium=electron)
    world.purchase(gold, MARCH + timedelta(days=2), "store-001", payment_medium=visa)
    plain = world.contact()
    for i in range(2):
        world.purchase(plain, MARCH + timedelta(days=i), "card-1", payment_medium=visa)
    world.run()
    # gold: one visa purchase at card-1 (electron and another unit do not count): 1 < 2.
    # plain: 2 visa purchases, but not in the gold segment (decided by the engine).
    assert world.standing("gold-visa-visits") == []

    world.purchase(gold, MARCH + timedelta(days=3), "card-1", payment_medium=visa)
    world.run()
    assert [c for *_, c in world.standing("gold-visa-visits")] == [100]


# ---- loyalty_item_quantity ---------------------------------------------------------------


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_coffee_quantity_counts_matching_lines_only(world: World) -> None:
    person = world.contact()
    day = datetime(2026, 3, 3, 8, 0, tzinfo=UTC)
    first = world.purchase(
        person,
        day,
        "quantity-1",
        [("COFFEE-LATTE", "1.5", "3.00"), ("CAKE", "5", "2.00"), ("ESPRESSO-1", "1", "1.99")],
    )  # 1.5 coffees (the espresso line is below its amount range)
    world.purchase(person, day + timedelta(hours=1), "quantity-1", [("TEA", "9", "1.00")])
    world.run(as_of=datetime(2026, 3, 4, tzinfo=UTC))
    assert world.standing("coffee-day") == []  # 1.5 < 4

    other = world.contact()
    bought = [
        world.purchase(other, day, "quantity-1", [("COFFEE-MOCHA", "2.5", "3.00")]),
        world.purchase(other, day + timedelta(hours=2), "quantity-1", [("ESPRESSO-7", "1.5", "2.00")]),
        world.purchase(other, day + timedelta(hours=3), "quantity-1", [("TEA", "1", "2.00")]),
    ]  # fmt: skip
    world.run()
    # 2.5 + 1.5 = 4 coffees; the tea purchase has no matching line and does not count.
    assert world.standing("coffee-day") == [("coffee-day", bought[1].external_reference, 100)]
    assert _links(world, "coffee-day") == {
        bought[0].external_reference,
        bought[1].external_reference,
    }
    assert first.external_reference not in _links(world, "coffee-day")


# ---- max_awards across periods -----------------------------------------------------------


def test_max_awards_holds_between_periods_of_one_run(world: World) -> None:
    person = world.contact()
    for month in (1, 2, 4):
        world.purchase(
            person, datetime(2026, month, 15, 10, tzinfo=UTC), "capped-1", [("A", "1", "100")]
        )
    world.run()
    # January paid; February is within 60 days of it; April is not.
    paid = world.standing("capped-month")
    assert len(paid) == 2
    with world.database.session(write=False) as session:
        keys = sorted(session.scalars(select(AggregateAward.period_key)))
    assert keys == [202601, 202604]


# ---- cancellation ------------------------------------------------------------------------


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_cancelling_a_contributing_purchase_reverses_the_whole_award(world: World) -> None:
    person = world.contact()
    monday = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)
    p1, p2, p3, p4 = (
        world.purchase(person, monday + timedelta(days=i), "number-1") for i in range(4)
    )
    world.run()
    assert world.standing("week-visits") == [("week-visits", p4.external_reference, 500)]
    assert world.balance(person) == 500

    reversals = world.cancel(p1.id)  # not the award's event: the hook reverses it
    assert [(r.kind, r.amount_cents) for r in reversals] == [("award_reversal", -500)]
    assert world.standing("week-visits") == [] and world.balance(person) == 0
    assert _links(world, "week-visits") == set()
    with world.database.session(write=False) as session:
        pending = session.scalars(select(AggregatePending)).all()
        reversed_award = session.scalars(select(AggregateAward)).one()
    assert reversed_award.reversed_by_event_id == p1.id
    # The week is pending again, for the purchases left in it.
    assert [(p.contact_id, p.period, p.period_key) for p in pending] == [(person, "week", 20260302)]

    world.run()
    # p2, p3, p4 are 3 visits: awarded again, on p3 (p4 carried the reversed award).
    assert world.standing("week-visits") == [("week-visits", p3.external_reference, 500)]
    assert _links(world, "week-visits") == {
        p2.external_reference,
        p3.external_reference,
        p4.external_reference,
    }

    reversals = world.cancel(p3.id)  # the award's own event: reversed once, not twice
    assert [(r.kind, r.amount_cents) for r in reversals] == [("award_reversal", -500)]
    world.run()
    assert world.standing("week-visits") == []  # 2 visits left: out of range
    assert world.balance(person) == 0
    with world.database.session(write=False) as session:
        assert len(session.scalars(select(Award)).all()) == 2  # both kept, both reversed


def test_cancelling_a_purchase_without_aggregate_awards_changes_nothing_else(
    world: World,
) -> None:
    person = world.contact()
    purchase = world.purchase(person, MARCH, "amount-1", [("A", "1", "50.00")])
    world.run()
    assert world.cancel(purchase.id) == []
