"""Every example embedded in the shipped rulesets/ holds (one test per example)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewards.engine import Evaluator, Rulesets, load_rulesets
from rewards.engine.examples import check_example_outcome
from rewards.engine.model import Example, Offer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shipped() -> Rulesets:
    return load_rulesets(ROOT / "rulesets", run_examples=False)


def _examples() -> list:
    rulesets = load_rulesets(ROOT / "rulesets", run_examples=False)
    return [
        pytest.param(offer.id, index, id=f"{offer.ruleset_file}:{offer.id}:{index}")
        for offer in rulesets.offers
        for index in range(len(offer.examples))
    ]


def test_the_shipped_folder_loads_with_its_examples() -> None:
    rulesets = load_rulesets(ROOT / "rulesets")
    assert len(rulesets.offers) >= 20
    assert {o.classification for o in rulesets.offers} >= {
        "utilise_free_capacity",
        "increase_revenue_transaction",
        "increase_revenue_product",
        "loyalty_transaction_amount",
        "loyalty_transaction_number",
        "loyalty_item_quantity",
        "referral",
        "achievement",
        "financial_achievement",
        "financial_statement",
        "behaviour",
    }
    for offer in rulesets.offers:
        assert any(e.not_awarded or e.expect.award == 0 for e in offer.examples), (
            f"{offer.id}: no non-earning example"
        )
        assert any(not e.not_awarded and e.expect.award > 0 for e in offer.examples), (
            f"{offer.id}: no earning example"
        )


def test_seed_offers_are_shipped_verbatim(shipped: Rulesets) -> None:
    five = shipped.offer("five-star-service")
    assert (five.evaluation, five.award.amount, five.conditions.event_classifications) == (
        "batch",
        5,
        ["5-star-service"],
    )
    top_up = shipped.offer("electron-top-up")
    assert top_up.evaluation == "batch" and top_up.award.amount == 10
    assert top_up.conditions.amount.min == 100 and top_up.conditions.payment_medium.brands == [
        "electron"
    ]
    assert (top_up.conditions.max_awards.count, top_up.conditions.max_awards.window_days) == (
        1,
        365,
    )
    coffee = shipped.offer("quiet-afternoon-coffee")
    assert coffee.evaluation == "immediate" and coffee.award.amount == 1
    assert coffee.conditions.schedule.days == ["mon", "tue", "wed", "thu", "fri"]
    assert (
        coffee.conditions.schedule.hours[0].from_,
        coffee.conditions.schedule.hours[0].until,
    ) == ("14:00", "17:00")
    assert [p.sku for p in coffee.conditions.products] == ["COFFEE-*"]


@pytest.mark.parametrize(("offer_id", "index"), _examples())
def test_example(shipped: Rulesets, offer_id: str, index: int) -> None:
    offer: Offer = shipped.offer(offer_id)
    example: Example = offer.examples[index]
    assert check_example_outcome(shipped, Evaluator(shipped), offer, example) is None
