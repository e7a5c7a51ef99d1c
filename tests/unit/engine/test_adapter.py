"""The durable-rules adapter: crash paths, no growth, one engine thread, many callers."""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal as D

import pytest

from rewards.engine import Evaluator, Rulesets
from rewards.engine import adapter as adapter_module
from rewards.engine.adapter import EngineError, EngineHost
from rewards.engine.compiler import SESSION, prepare
from tests.unit.engine.builders import event, purchase, summary


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 1e6


def test_importing_the_package_does_no_work() -> None:
    code = (
        "import threading, rewards.engine, rewards.engine.evaluator, rewards.engine.adapter as a;"
        "assert threading.active_count() == 1, threading.enumerate();"
        "assert a._executor is None"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_event_matching_nothing_is_an_empty_result(shipped: Rulesets) -> None:
    evaluator = Evaluator(shipped)
    nothing = purchase("2026-03-02T03:00:00+02:00", ("NOTHING", "0.01"), unit="store-003")
    assert evaluator.evaluate(nothing, mode="all") == []
    assert evaluator.evaluate(event("web", website="https://nowhere.test/"), mode="all") == []
    assert evaluator.evaluate(event("achievement"), mode="all") == []  # no classification at all
    assert evaluator.evaluate(event("spend_request"), mode="all") == []  # no ruleset for the type


def test_engine_calls_run_on_one_dedicated_thread(shipped: Rulesets) -> None:
    Evaluator(shipped).evaluate(event("achievement"), mode="all")
    names = adapter_module.call(lambda: threading.current_thread().name)
    assert names.startswith("rewards-engine")
    assert adapter_module.call(lambda: threading.current_thread()) is adapter_module._engine_thread


def test_no_growth_over_5000_sequential_evaluations(shipped: Rulesets) -> None:
    evaluator = Evaluator(shipped)
    events = [
        purchase(
            "2026-03-02T15:00:00+02:00",
            ("COFFEE-LATTE", "3.50"),
            ("PASTRY-BAGEL", "2.00"),
            unit="store-003",
        ),
        purchase("2026-03-02T03:00:00+02:00", ("NOTHING", "1")),  # matches nothing
        event("achievement", classification="5-star-service"),
        event("referral", classification="friend-referral", segments=["gold"]),
        event("social_media", platform="facebook", action="like"),
    ]
    for facts in events * 200:  # warm up allocator pools
        evaluator.evaluate(facts, mode="all")
    before = _rss_mb()
    awarded = 0
    for facts in events * 1000:
        awarded += len(evaluator.evaluate(facts, mode="all"))
    assert awarded == 1000 * 5  # coffee, five star, gold referral (referred + referrer), like
    grown = _rss_mb() - before
    assert grown < 8, f"memory grew by {grown:.1f} MB over 5,000 evaluations"
    for name in shipped.compiled.rulesets:
        assert adapter_module.call(shipped.host.facts_left, name) == []  # nothing left asserted
    states = adapter_module.call(lambda: shipped.host._host.get_state("achievement", SESSION))
    assert states["sid"] == SESSION  # the one session we use


def test_fast_path_and_stock_durable_path_agree(shipped: Rulesets) -> None:
    evaluator = Evaluator(shipped)
    compiled = shipped.compiled
    samples = [
        purchase(
            f"2026-03-0{day}T{hour:02d}:30:00+02:00",
            ("COFFEE-LATTE", "3.50"),
            ("PASTRY-CROISSANT", "4.25"),
            ("SANDWICH-CLUB", "5.00"),
            ("BEANS-PREMIUM-KENYA", "24.99"),
            ("GC-25", "25"),
            unit=unit,
            segments=segments,
            payment_brand="visa",
        )
        for day in (2, 7)
        for hour in (8, 12, 15, 18)
        for unit in ("store-001", "store-003")
        for segments in ([], ["gold"], ["staff"])
    ]
    for facts in samples:
        prepared = prepare(compiled, facts)
        fast = adapter_module.call(evaluator._match, prepared, "all", False, False)
        stock = adapter_module.call(evaluator._match, prepared, "all", False, True)
        assert sorted(fast) == sorted(stock)


def test_assert_facts_outcome_of_last_fact_does_not_hide_earlier_hits(shipped: Rulesets) -> None:
    """The last line matches nothing: durable reports 'not handled', yet line 0 fired."""
    facts = purchase("2026-03-02T15:00:00+02:00", ("COFFEE-LATTE", "3.50"), ("MUFFIN", "2.00"))
    [decision] = Evaluator(shipped).evaluate(facts, mode="all")
    assert decision.offer_id == "quiet-afternoon-coffee"
    assert [(line.index, line.amount) for line in decision.lines] == [(0, D("1.00"))]


def test_many_threads_evaluate_at_once(shipped: Rulesets) -> None:
    evaluator = Evaluator(shipped)
    cases = [
        (
            purchase("2026-03-02T15:00:00+02:00", ("COFFEE-LATTE", "3.50"), ("COFFEE-MOCHA", "4")),
            "quiet-afternoon-coffee",
        ),
        (event("achievement", classification="5-star-service"), "five-star-service"),
        (
            event(
                "financial_achievement",
                classification="top-up",
                amount=D(150),
                payment_brand="electron",
            ),
            "electron-top-up",
        ),
        (purchase("2026-03-02T03:00:00+02:00", ("NOTHING", "1")), None),
    ]
    expected = [summary(evaluator.evaluate(facts, mode="all")) for facts, _ in cases]
    assert [e[0][0] if e else None for e in expected] == [offer for _, offer in cases]
    start = threading.Barrier(16)

    def worker(index: int) -> list[bool]:
        start.wait()
        results = []
        for round_ in range(150):
            case = (index + round_) % len(cases)
            results.append(
                summary(evaluator.evaluate(cases[case][0], mode="all")) == expected[case]
            )
        return results

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = [ok for result in pool.map(worker, range(16)) for ok in result]
    assert len(outcomes) == 16 * 150
    assert all(outcomes)


def test_evaluate_many_equals_evaluate(shipped: Rulesets) -> None:
    evaluator = Evaluator(shipped)
    batch = [
        purchase("2026-03-02T15:00:00+02:00", ("COFFEE-LATTE", "3.50")),
        event("achievement", classification="5-star-service"),
        purchase("2026-03-02T03:00:00+02:00", ("NOTHING", "1")),
    ]
    assert evaluator.evaluate_many(batch, mode="all") == [
        evaluator.evaluate(f, mode="all") for f in batch
    ]
    assert evaluator.evaluate_many([], mode="all") == []


def test_a_reload_builds_a_new_host(shipped: Rulesets) -> None:
    from rewards.engine import load_rulesets

    again = load_rulesets(shipped.path)
    assert again.version == shipped.version
    assert again.host is not shipped.host
    assert summary(
        Evaluator(again).evaluate(event("achievement", classification="5-star-service"), mode="all")
    ) == summary(
        Evaluator(shipped).evaluate(
            event("achievement", classification="5-star-service"), mode="all"
        )
    )


def test_an_item_test_ending_in_an_or_is_refused_before_durable_sees_it() -> None:
    """durable-rules reads an unset byte for such a test: it fails or not by heap luck."""
    either = {"$or": [{"$i": "gold"}, {"$i": "silver"}]}
    for test in (either, {"$and": [{"$neq": {"$i": ""}}, either]}):
        rule = {"all": [{"m": {"$iany": {"seg": test}}}], "run": "r"}
        with pytest.raises(EngineError, match=r"item test ends in an \$or"):
            EngineHost({"unsafe_item_test": {"r": rule}})
    guarded = {"$and": [either, {"$neq": {"$i": ""}}]}
    rule = {"all": [{"m": {"$iany": {"seg": guarded}}}], "run": "r"}
    EngineHost({"guarded_item_test": {"r": rule}}).close()
