"""Award arithmetic (rewards.domain.awards)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal as D

from rewards.domain.awards import choose_exclusive, event_award, line_awards


def test_event_award_fixed_percentage_cap_and_rounding() -> None:
    assert event_award(amount=D("2.5"), percentage=None, base=None) == D("2.50")
    assert event_award(amount=None, percentage=D(5), base=D("80.00")) == D("4.00")
    assert event_award(amount=None, percentage=D(1), base=D("1234.50")) == D("12.35")  # 12.345
    assert event_award(amount=None, percentage=D(1), base=D("1234.40")) == D("12.34")  # 12.344
    assert event_award(amount=None, percentage=D(5), base=D("300"), cap=D(10)) == D("10.00")
    assert event_award(amount=None, percentage=D(5), base=None) == D("0.00")
    assert event_award(amount=None, percentage=D(1), base=D("0.49")) == D("0.00")


def test_line_awards_round_per_line_and_fill_the_cap_in_order() -> None:
    lines = [(0, D("4.25")), (2, D("3.10")), (3, D("0.04"))]
    assert line_awards(lines, amount=None, percentage=D(10)) == [(0, D("0.43")), (2, D("0.31"))]
    assert line_awards(lines, amount=D(1), percentage=None, cap=D("2.5")) == [
        (0, D("1.00")),
        (2, D("1.00")),
        (3, D("0.50")),
    ]
    assert line_awards(lines, amount=D(2), percentage=None, cap=D(2)) == [(0, D("2.00"))]
    assert line_awards([], amount=D(1), percentage=None) == []


@dataclass
class Item:
    name: str
    exclusive_group: str | None
    priority: int


def test_choose_exclusive() -> None:
    items = [
        Item("a", "g", 0),
        Item("b", None, 9),
        Item("c", "g", 5),
        Item("d", "g", 5),
        Item("e", "h", 0),
    ]
    assert [i.name for i in choose_exclusive(items)] == ["b", "c", "e"]
    assert choose_exclusive([]) == []
