"""Globs become engine patterns that match exactly what the glob means."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from rewards.engine import Evaluator
from rewards.engine.globs import GlobError, to_engine_pattern, to_regex, validate
from tests.unit.engine.builders import event, offer, rulesets

GLOBS = [
    "COFFEE-*",
    "TEA-?",
    "GC-[0-9][0-9]",
    "[a-c-]x",
    "[-a]x",
    "50%.OFF*",
    "A.B",
    "(x)|{y}+",
    "https://*.example.com/summer*",
    "^start$",
    "back\\slash",
    "café-*",
    "*",
    "a**b",
]
VALUES = [
    "COFFEE-",
    "COFFEE-LATTE",
    "XCOFFEE-1",
    "TEA-A",
    "TEA-AB",
    "GC-25",
    "GC-250",
    "ax",
    "-x",
    "dx",
    "50%.OFF-SALE",
    "50%xOFF",
    "A.B",
    "AxB",
    "(x)|{y}+",
    "https://shop.example.com/summer-sale",
    "https://example.com.evil/summer",
    "^start$",
    "back\\slash",
    "café-crème",
    "cafe-x",
    "",
    "ab",
    "aXb",
]


def test_translation() -> None:
    assert to_engine_pattern("COFFEE-*") == "COFFEE-.*"
    assert to_engine_pattern("50%.OFF?") == "50%%%.OFF."
    assert to_engine_pattern("(a)|{b}+[x]") == "%(a%)%|%{b%}%+[x]"
    assert to_engine_pattern("[-a]") == "[a-]"
    assert to_regex("GC-[0-9]").fullmatch("GC-7")


@pytest.mark.parametrize(
    ("glob", "reason"),
    [
        ("", "empty"),
        ("A[", "never closed"),
        ("A[]", "empty set"),
        ("A[!x]", "negated"),
        ("A]", "no opening"),
        ("[z-a]", "reversed"),
        ("[a-c-e]", "ambiguously"),
        ("[é]", "ASCII"),
    ],
)
def test_invalid_globs(glob: str, reason: str) -> None:
    with pytest.raises(GlobError, match=reason):
        validate(glob)


@pytest.fixture(scope="module")
def website_rulesets() -> Iterator:
    loaded = rulesets(
        *(
            offer("behaviour", f"g{i}", conditions={"websites": [glob]})
            for i, glob in enumerate(GLOBS)
        )
    )
    yield loaded
    loaded.host.close()


def test_engine_patterns_agree_with_the_glob_meaning(website_rulesets) -> None:
    evaluator = Evaluator(website_rulesets)
    for value in VALUES:
        matched = {d.offer_id for d in evaluator.evaluate(event("web", website=value), mode="all")}
        expected = {
            f"g{i}" for i, glob in enumerate(GLOBS) if value and to_regex(glob).fullmatch(value)
        }
        assert matched == expected, value
        # and the Python meaning is the usual glob meaning
        for glob in GLOBS:
            if "[-" not in glob and "\\" not in glob:
                assert bool(to_regex(glob).fullmatch(value)) == bool(
                    re.fullmatch(glob_to_re(glob), value, re.DOTALL)
                ), (glob, value)


def glob_to_re(glob: str) -> str:
    import fnmatch

    return fnmatch.translate(glob)
