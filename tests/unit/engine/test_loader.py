"""Loading ruleset folders: every mistake reported as file:line:column: message."""

from __future__ import annotations

import textwrap
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from rewards.engine import RulesetLoadError, RulesetProblem, load_rulesets
from tests.unit.engine.builders import DEFINITION_YAML, write_folder

GOOD_ACHIEVEMENT = """\
classification: achievement
offers:
  - id: five-star-service
    name: EUR 5 per 5 Star Service feedback
    evaluation: batch
    award: {amount: 5}
    conditions: {event_classifications: [5-star-service]}
"""


def at(text: str, needle: str, nth: int = 1) -> str:
    """'line:column' (1-based) of the nth occurrence of ``needle`` in the dedented ``text``."""
    text = textwrap.dedent(text)
    index = -1
    for _ in range(nth):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    return f"{line}:{index - (text.rfind(chr(10), 0, index) + 1) + 1}"


def problems(folder: Path) -> list[str]:
    with pytest.raises(RulesetLoadError) as caught:
        load_rulesets(folder)
    return [str(p) for p in caught.value.errors]


def test_a_good_folder_loads(tmp_path: Path) -> None:
    rulesets = load_rulesets(write_folder(tmp_path, {"achievement.yaml": GOOD_ACHIEVEMENT}))
    assert [o.id for o in rulesets.offers] == ["five-star-service"]
    offer = rulesets.offers[0]
    assert (offer.classification, offer.ruleset_file, offer.evaluation) == (
        "achievement",
        "achievement.yaml",
        "batch",
    )
    assert offer.award.amount == Decimal(5)
    assert rulesets.files == ["achievement.yaml", "definition.yaml"]
    assert len(rulesets.version) == 12
    assert rulesets.definition.time_zone == "Europe/Nicosia"
    assert rulesets.definition.referrals_per_day == 2  # default
    assert rulesets.unit("store-003").group == "south"
    assert rulesets.unit("nope") is None
    assert rulesets.classification_allowed("5-star-service", "achievement")
    assert not rulesets.classification_allowed("5-star-service", "purchase")
    assert rulesets.offers_for_event_type("achievement") == [offer]
    assert rulesets.source_position("five-star-service") == ("achievement.yaml", 3, 5)


def test_version_changes_with_content(tmp_path: Path) -> None:
    first = load_rulesets(write_folder(tmp_path / "a", {"achievement.yaml": GOOD_ACHIEVEMENT}))
    same = load_rulesets(write_folder(tmp_path / "b", {"achievement.yaml": GOOD_ACHIEVEMENT}))
    other = load_rulesets(
        write_folder(tmp_path / "c", {"achievement.yaml": GOOD_ACHIEVEMENT.replace("5}", "6}")})
    )
    assert first.version == same.version != other.version


def test_defaults_and_dates(tmp_path: Path) -> None:
    text = GOOD_ACHIEVEMENT.replace(
        "    evaluation: batch\n", "    valid: {from: 2026-01-01, until: 2026-12-31}\n"
    )
    offer = load_rulesets(write_folder(tmp_path, {"achievement.yaml": text})).offers[0]
    assert offer.evaluation == "immediate"  # default outside the period aggregates
    assert (offer.valid.from_, offer.valid.until) == (date(2026, 1, 1), date(2026, 12, 31))


def test_bad_yaml(tmp_path: Path) -> None:
    folder = write_folder(
        tmp_path, {"achievement.yaml": "classification: achievement\noffers: [\n"}
    )
    [message] = problems(folder)
    assert message.startswith(f"{folder}/achievement.yaml:3:1: YAML syntax error")


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    text = GOOD_ACHIEVEMENT.replace(
        "    award: {amount: 5}\n", "    award: {amount: 5}\n    award: {amount: 6}\n"
    )
    assert problems(write_folder(tmp_path, {"achievement.yaml": text})) == [
        f"{tmp_path}/achievement.yaml:{at(text, 'award', 2)}: duplicate key 'award'"
    ]


def test_unknown_key(tmp_path: Path) -> None:
    text = GOOD_ACHIEVEMENT.replace(
        "    evaluation: batch\n", "    evaluation: batch\n    colour: red\n"
    )
    assert problems(write_folder(tmp_path, {"achievement.yaml": text})) == [
        f"{tmp_path}/achievement.yaml:{at(text, 'colour')}: offer five-star-service: colour: unknown key 'colour'"
    ]


def test_wrong_type(tmp_path: Path) -> None:
    text = GOOD_ACHIEVEMENT.replace("{amount: 5}", "{amount: x}")
    assert problems(write_folder(tmp_path, {"achievement.yaml": text})) == [
        f"{tmp_path}/achievement.yaml:{at(text, 'x}')}: offer five-star-service: award.amount: must be a number, not 'x'"
    ]


def test_unknown_unit_and_group(tmp_path: Path) -> None:
    text = GOOD_ACHIEVEMENT.replace(
        "{event_classifications: [5-star-service]}",
        "{event_classifications: [5-star-service], units: [store-001, west, north]}",
    )
    assert problems(write_folder(tmp_path, {"achievement.yaml": text})) == [
        f"{tmp_path}/achievement.yaml:{at(text, 'west')}: offer five-star-service: conditions.units[1]: "
        "unknown unit or unit group 'west' (declare it in units of definition.yaml)"
    ]


def test_duplicate_offer_id_across_files(tmp_path: Path) -> None:
    referral = """\
    classification: referral
    offers:
      - id: five-star-service
        name: duplicate
        award: {referred: {amount: 1}}
    """
    assert problems(
        write_folder(tmp_path, {"achievement.yaml": GOOD_ACHIEVEMENT, "referral.yaml": referral})
    ) == [
        f"{tmp_path}/referral.yaml:{at(referral, 'five-star')}: offer five-star-service: id: duplicate offer id "
        f"'five-star-service' (first used at {tmp_path}/achievement.yaml:{at(GOOD_ACHIEVEMENT, 'five-star')})"
    ]


def test_offer_id_pattern(tmp_path: Path) -> None:
    text = GOOD_ACHIEVEMENT.replace("id: five-star-service", "id: Five Star")
    assert problems(write_folder(tmp_path, {"achievement.yaml": text})) == [
        f"{tmp_path}/achievement.yaml:{at(text, 'Five')}: offers[0].id: use lower-case letters a-z, digits 0-9 and - only, not 'Five Star'"
    ]


def test_condition_not_allowed_for_classification(tmp_path: Path) -> None:
    text = GOOD_ACHIEVEMENT.replace("[5-star-service]}", "[5-star-service], amount: {min: 1}}")
    [message] = problems(write_folder(tmp_path, {"achievement.yaml": text}))
    assert message.startswith(
        f"{tmp_path}/achievement.yaml:{at(text, 'amount: {min')}: offer five-star-service: conditions.amount: "
        "condition 'amount' is not allowed for achievement offers (allowed: segments, units,"
    )


def test_percentage_not_allowed_for_fixed_classifications(tmp_path: Path) -> None:
    text = GOOD_ACHIEVEMENT.replace("{amount: 5}", "{percentage: 5}")
    assert problems(write_folder(tmp_path, {"achievement.yaml": text})) == [
        f"{tmp_path}/achievement.yaml:{at(text, 'percentage')}: offer five-star-service: award.percentage: unknown key 'percentage'"
    ]


def test_award_needs_exactly_one_of_amount_and_percentage(tmp_path: Path) -> None:
    text = """\
    classification: increase_revenue_transaction
    offers:
      - id: both
        name: both
        award: {amount: 1, percentage: 5}
      - id: neither
        name: neither
        award: {max: 5}
    """
    assert problems(write_folder(tmp_path, {"increase_revenue_transaction.yaml": text})) == [
        f"{tmp_path}/increase_revenue_transaction.yaml:{at(text, '{amount')}: offer both: award: "
        "the award needs exactly one of 'amount' or 'percentage'",
        f"{tmp_path}/increase_revenue_transaction.yaml:{at(text, '{max')}: offer neither: award: "
        "the award needs exactly one of 'amount' or 'percentage'",
    ]


def test_bad_globs(tmp_path: Path) -> None:
    text = """\
    classification: increase_revenue_product
    offers:
      - id: globs
        name: globs
        award: {amount: 1}
        conditions:
          products: [{sku: "COFFEE-[A-"}, {sku: "TEA-[]"}, {sku: "X[!a]"}, {sku: "OK-*"}]
    """
    coffee, tea, negated = at(text, '"COFFEE'), at(text, '"TEA'), at(text, '"X[')
    assert problems(write_folder(tmp_path, {"increase_revenue_product.yaml": text})) == [
        f"{tmp_path}/increase_revenue_product.yaml:{coffee}: offer globs: conditions.products[0].sku: "
        "invalid glob 'COFFEE-[A-': '[' at position 8 is never closed",
        f"{tmp_path}/increase_revenue_product.yaml:{tea}: offer globs: conditions.products[1].sku: "
        "invalid glob 'TEA-[]': empty set '[]' at position 5",
        f"{tmp_path}/increase_revenue_product.yaml:{negated}: offer globs: conditions.products[2].sku: "
        "invalid glob 'X[!a]': negated sets ([!...]) are not supported",
    ]


def test_inverted_ranges_and_hours(tmp_path: Path) -> None:
    text = """\
    classification: utilise_free_capacity
    offers:
      - id: inverted
        name: inverted
        valid: {from: 2026-12-31, until: 2026-01-01}
        award: {amount: 1}
        conditions:
          products: [{sku: "A*", amount: {min: 10, max: 5}}]
          schedule: {hours: [{from: "17:00", until: "14:00"}, {from: "25:00", until: "26:00"}]}
    """
    h25, h26 = at(text, '"25'), at(text, '"26')
    # the schedule's schema errors leave it out; the rest of the offer is still checked
    assert problems(write_folder(tmp_path, {"utilise_free_capacity.yaml": text})) == [
        f"{tmp_path}/utilise_free_capacity.yaml:{at(text, '{from: 2026')}: offer inverted: valid: 'from' is after 'until'",
        f"{tmp_path}/utilise_free_capacity.yaml:{at(text, '{min: 10')}: offer inverted: conditions.products[0].amount: "
        "the range is inverted: min 10 is greater than max 5",
        f"{tmp_path}/utilise_free_capacity.yaml:{h25}: offer inverted: conditions.schedule.hours[1].from: "
        "time must be HH:MM, 00:00 to 23:59 (24:00 allowed as until), not '25:00'",
        f"{tmp_path}/utilise_free_capacity.yaml:{h26}: offer inverted: conditions.schedule.hours[1].until: "
        "time must be HH:MM, 00:00 to 23:59 (24:00 allowed as until), not '26:00'",
    ]
    fixed = text.replace(', {from: "25:00", until: "26:00"}', "")
    h17 = at(fixed, '{from: "17')
    assert problems(write_folder(tmp_path, {"utilise_free_capacity.yaml": fixed})) == [
        f"{tmp_path}/utilise_free_capacity.yaml:{at(fixed, '{from: 2026')}: offer inverted: valid: 'from' is after 'until'",
        f"{tmp_path}/utilise_free_capacity.yaml:{at(fixed, '{min: 10')}: offer inverted: conditions.products[0].amount: "
        "the range is inverted: min 10 is greater than max 5",
        f"{tmp_path}/utilise_free_capacity.yaml:{h17}: offer inverted: conditions.schedule.hours[0]: "
        "'from' 17:00 must be before 'until' 14:00",
    ]


def test_unquoted_hours_stay_text(tmp_path: Path) -> None:
    """YAML 1.1 would read 14:00 as the number 840; our loader keeps it as text."""
    text = """\
    classification: utilise_free_capacity
    offers:
      - id: unquoted
        name: unquoted
        award: {amount: 1}
        conditions:
          schedule: {hours: [{from: 14:00, until: 17:00}]}
    """
    offer = load_rulesets(write_folder(tmp_path, {"utilise_free_capacity.yaml": text})).offers[0]
    assert offer.conditions.schedule.hours[0].from_ == "14:00"


def test_failing_example(tmp_path: Path) -> None:
    text = GOOD_ACHIEVEMENT + (
        "    examples:\n"
        "      - event: {performed_on: '2026-03-02T12:00:00+02:00', classification: 5-star-service}\n"
        "        expect: {award: 5}\n"
        "      - event: {performed_on: '2026-03-02T12:00:00+02:00', classification: 5-star-service}\n"
        "        expect: {award: 4}\n"
        "      - event: {performed_on: '2026-03-02T12:00:00+02:00', classification: course-completed}\n"
        "        expect: {award: 5}\n"
        "      - event: {performed_on: '2026-03-02T12:00:00', classification: course-completed}\n"
        "        not_awarded: true\n"
    )
    naive = at(text, "'2026-03-02T12:00:00'")
    assert problems(write_folder(tmp_path, {"achievement.yaml": text})) == [
        f"{tmp_path}/achievement.yaml:{at(text, 'event:', 2)}: offer five-star-service: examples[1]: "
        "the example fails: expected award 4.00, got 5.00",
        f"{tmp_path}/achievement.yaml:{at(text, 'event:', 3)}: offer five-star-service: examples[2]: "
        "the example fails: expected award 5.00, got 0.00 (the offer's conditions do not match this event)",
        f"{tmp_path}/achievement.yaml:{naive}: offer five-star-service: "
        "examples[3].event.performed_on: the example fails: performed_on needs a zone (Z or +02:00)",
    ]


def test_example_needs_expect_or_not_awarded(tmp_path: Path) -> None:
    text = GOOD_ACHIEVEMENT + (
        "    examples:\n      - event: {performed_on: '2026-03-02T12:00:00Z'}\n"
    )
    assert problems(write_folder(tmp_path, {"achievement.yaml": text})) == [
        f"{tmp_path}/achievement.yaml:{at(text, 'event:')}: offer five-star-service: examples[0]: "
        "an example needs exactly one of 'expect' or 'not_awarded: true'"
    ]


def test_file_name_must_match_classification(tmp_path: Path) -> None:
    folder = write_folder(
        tmp_path,
        {
            "referral.yaml": GOOD_ACHIEVEMENT,
            "bonus.yaml": GOOD_ACHIEVEMENT.replace("five-star", "other"),
        },
    )
    assert problems(folder) == [
        f"{tmp_path}/bonus.yaml:1:1: 'bonus.yaml' is not a classification file: name it after one of "
        "utilise_free_capacity, increase_revenue_transaction, increase_revenue_product, "
        "loyalty_transaction_amount, loyalty_transaction_number, loyalty_item_quantity, referral, "
        "achievement, financial_achievement, financial_statement, behaviour",
        f"{tmp_path}/bonus.yaml:1:17: classification: 'achievement' does not match the file name 'bonus.yaml'",
        f"{tmp_path}/referral.yaml:1:17: classification: 'achievement' does not match the file name 'referral.yaml'",
    ]


def test_event_classification_unknown_or_for_another_type(tmp_path: Path) -> None:
    text = GOOD_ACHIEVEMENT.replace("[5-star-service]", "[5-star-service, top-up, nope]")
    assert problems(write_folder(tmp_path, {"achievement.yaml": text})) == [
        f"{tmp_path}/achievement.yaml:{at(text, 'top-up')}: offer five-star-service: conditions.event_classifications[1]: "
        "event classification 'top-up' is declared for financial_achievement events, not achievement",
        f"{tmp_path}/achievement.yaml:{at(text, 'nope')}: offer five-star-service: conditions.event_classifications[2]: "
        "unknown event classification 'nope'",
    ]


def test_unknown_kpi(tmp_path: Path) -> None:
    text = """\
    classification: financial_statement
    offers:
      - id: kpi
        name: kpi
        award: {amount: 1}
        conditions: {kpis: [{kpi: loan-balance, min: 1}, {kpi: profit, min: 1}]}
    """
    assert problems(write_folder(tmp_path, {"financial_statement.yaml": text})) == [
        f"{tmp_path}/financial_statement.yaml:{at(text, 'profit')}: offer kpi: conditions.kpis[1].kpi: "
        "unknown KPI 'profit'"
    ]


def test_exclusive_group_ties_across_files(tmp_path: Path) -> None:
    achievement = GOOD_ACHIEVEMENT.replace("    evaluation: batch\n", "    exclusive_group: g\n")
    referral = """\
    classification: referral
    offers:
      - id: friend
        name: friend
        exclusive_group: g
        award: {referred: {amount: 1}}
    """
    assert problems(
        write_folder(tmp_path, {"achievement.yaml": achievement, "referral.yaml": referral})
    ) == [
        f"{tmp_path}/referral.yaml:{at(referral, 'id: friend')}: offer friend: priority: offer 'friend' and 'five-star-service' "
        "(achievement.yaml) share exclusive group 'g' and priority 0: give them different priorities "
        "so precedence is explicit"
    ]


def test_aggregates_are_batch_only_and_need_a_period(tmp_path: Path) -> None:
    text = """\
    classification: loyalty_transaction_number
    offers:
      - id: visits
        name: visits
        evaluation: immediate
        award: {amount: 5}
        conditions: {count: {min: 10}}
    """
    assert problems(write_folder(tmp_path, {"loyalty_transaction_number.yaml": text})) == [
        f"{tmp_path}/loyalty_transaction_number.yaml:{at(text, 'immediate')}: offer visits: evaluation: "
        "'immediate' is not one of ['batch']",
        f"{tmp_path}/loyalty_transaction_number.yaml:{at(text, '{count')}: offer visits: conditions: 'period' is required",
    ]


def test_definition_errors(tmp_path: Path) -> None:
    definition = (
        DEFINITION_YAML.replace("Europe/Nicosia", "Mars/Base").replace(
            "  - {code: store-002, group: north, reduction: back_end}\n",
            "  - {code: store-001, group: north, reduction: sideways}\n",
        )
        + "payment_medium:\n  identifier_adjustment: {keep: last}\n  brand_rules:\n    - {brand: x, when: {regex: '(', begins_with: '4'}}\n"
    )
    # a schema error leaves its key out (units): the cross-checks run on the rest
    paren = at(definition, "'('")
    assert problems(write_folder(tmp_path, {}, definition=definition)) == [
        f"{tmp_path}/definition.yaml:{at(definition, 'Mars')}: time_zone: unknown time zone 'Mars/Base'",
        f"{tmp_path}/definition.yaml:{at(definition, 'sideways')}: units[1].reduction: "
        "'sideways' is not one of ['front_end', 'back_end']",
        f"{tmp_path}/definition.yaml:{at(definition, '{keep')}: payment_medium.identifier_adjustment: "
        "keep: last needs 'characters'",
        f"{tmp_path}/definition.yaml:{at(definition, '{regex')}: payment_medium.brand_rules[0].when: "
        "'regex' stands alone: leave out length, begins_with and ends_with",
        f"{tmp_path}/definition.yaml:{paren}: payment_medium.brand_rules[0].when.regex: "
        "invalid regular expression: missing ), unterminated subpattern at position 0",
    ]
    definition = definition.replace("sideways", "front_end")
    assert problems(write_folder(tmp_path, {}, definition=definition)) == [
        f"{tmp_path}/definition.yaml:{at(definition, 'Mars')}: time_zone: unknown time zone 'Mars/Base'",
        f"{tmp_path}/definition.yaml:{at(definition, '{code: store-001', 2)}: units[1]: duplicate unit code 'store-001'",
        f"{tmp_path}/definition.yaml:{at(definition, '{keep')}: payment_medium.identifier_adjustment: "
        "keep: last needs 'characters'",
        f"{tmp_path}/definition.yaml:{at(definition, '{regex')}: payment_medium.brand_rules[0].when: "
        "'regex' stands alone: leave out length, begins_with and ends_with",
        f"{tmp_path}/definition.yaml:{paren}: payment_medium.brand_rules[0].when.regex: "
        "invalid regular expression: missing ), unterminated subpattern at position 0",
    ]


def test_purchase_automation(tmp_path: Path) -> None:
    automation = (
        "purchase_automation:\n"
        "  invoice_types: [pos-receipt, monthly-bill, pos-receipt]\n"
        "  credit_note_types: [credit-note, monthly-bill]\n"
    )
    definition = DEFINITION_YAML + automation
    assert problems(write_folder(tmp_path, {}, definition=definition)) == [
        f"{tmp_path}/definition.yaml:{at(definition, 'pos-receipt]')}: "
        "purchase_automation.invoice_types[2]: duplicate invoice type 'pos-receipt'",
        f"{tmp_path}/definition.yaml:{at(definition, 'monthly-bill]')}: "
        "purchase_automation.credit_note_types[1]: 'monthly-bill' is also listed in "
        "invoice_types: a type either creates a purchase or credits one",
    ]
    slash = DEFINITION_YAML + "purchase_automation: {invoice_types: [pos/receipt]}\n"
    assert problems(write_folder(tmp_path, {}, definition=slash)) == [
        f"{tmp_path}/definition.yaml:{at(slash, 'pos/receipt')}: "
        "purchase_automation.invoice_types[0]: 'pos/receipt' does not match "
        "'^[A-Za-z0-9][A-Za-z0-9._:@+-]*$'"
    ]
    fine = DEFINITION_YAML + automation.replace(", pos-receipt]", "]").replace(
        "[credit-note, monthly-bill]", "[credit-note]"
    )
    loaded = load_rulesets(write_folder(tmp_path, {}, definition=fine)).definition
    assert loaded.purchase_automation.invoice_types == ["pos-receipt", "monthly-bill"]
    assert loaded.purchase_automation.credit_note_types == ["credit-note"]
    assert (
        load_rulesets(write_folder(tmp_path, {})).definition.purchase_automation.invoice_types == []
    )


def test_missing_definition(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, {"achievement.yaml": GOOD_ACHIEVEMENT}, definition=None)
    assert problems(folder) == [f"{tmp_path}/definition.yaml:1:1: the definition file is missing"]


def test_errors_are_collected_across_files(tmp_path: Path) -> None:
    folder = write_folder(
        tmp_path,
        {
            "achievement.yaml": GOOD_ACHIEVEMENT.replace("{amount: 5}", "{amount: x}"),
            "referral.yaml": "classification: referral\noffers: [{id: r, name: r, award: {}}]\n",
            "behaviour.yaml": "classification: behaviour\n  bad: [\n",
        },
    )
    files = [message.split(":")[0].rsplit("/", 1)[1] for message in problems(folder)]
    assert files == ["achievement.yaml", "behaviour.yaml", "referral.yaml"]


def test_problem_string_and_error_message() -> None:
    problem = RulesetProblem("rulesets/achievement.yaml", 7, 5, "offers[0].award.amount: bad")
    assert str(problem) == "rulesets/achievement.yaml:7:5: offers[0].award.amount: bad"
    assert str(RulesetLoadError([problem, problem])).count("\n") == 1


def test_empty_file_and_non_mapping(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, {"achievement.yaml": "", "referral.yaml": "- 1\n"})
    assert problems(folder) == [
        f"{tmp_path}/achievement.yaml:1:1: the file is empty",
        f"{tmp_path}/referral.yaml:1:1: the file must be a mapping of keys to values",
    ]


def test_large_classifications_load_and_evaluate(tmp_path: Path) -> None:
    """260 offers with max_awards: chunked rulesets (64-path limit), a fact per ruleset (255 fields)."""
    from rewards.engine import Evaluator
    from tests.unit.engine.builders import event

    offers = "".join(
        f"  - {{id: o{n}, name: o{n}, award: {{amount: 1}}, conditions: {{max_awards: {{count: 1, window_days: 7}}}}}}\n"
        for n in range(260)
    )
    rulesets = load_rulesets(
        write_folder(
            tmp_path, {"achievement.yaml": "classification: achievement\noffers:\n" + offers}
        )
    )
    assert len(rulesets.compiled.event_rulesets["achievement"]) == 5
    decisions = Evaluator(rulesets).evaluate(
        event("achievement", awards_in_window={"o7": 1}), mode="all"
    )
    assert len(decisions) == 259 and "o7" not in {d.offer_id for d in decisions}
    rulesets.host.close()
