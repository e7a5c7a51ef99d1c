"""Globs (SKU and website patterns) translated to the engine's pattern language.

Glob syntax: ``*`` any run of characters, ``?`` one character, ``[abc]`` / ``[a-z0-9]``
one character of a set; everything else is literal; the whole value must match.

durable-rules 2.0.28 matches ``$mt`` patterns with its own small regex engine (measured,
see ENGINE-NOTES.md): the pattern must match the whole value; ``. | ? * + ( ) [ ] { }``
are special and ``%`` escapes them (``%%`` is a literal percent); ``^ $ - /`` and
backslash are literal and may not be escaped (``%-`` is refused). Sets are byte ranges
without negation, so ``?`` and sets match one ASCII character (a non-ASCII character
is several bytes); literal non-ASCII text is fine.
"""

from __future__ import annotations

import re

_ENGINE_SPECIAL = set(".|?*+()[]{}%")
_SET_BODY = re.compile(r"^(?:[^-]-[^-]|[^-])*-?$")
_SET_CHARS = re.compile(r"^[A-Za-z0-9 _.:/@#&=~,;!'\"<>$^+*?(){}|-]+$")


class GlobError(ValueError):
    """The glob cannot be translated (message says why)."""


def _tokens(glob: str) -> list[tuple[str, str]]:
    """Split a glob into ('any'|'one'|'set'|'lit', text) tokens, validating it."""
    if not glob:
        raise GlobError("empty pattern")
    tokens: list[tuple[str, str]] = []
    i = 0
    while i < len(glob):
        char = glob[i]
        if char == "*":
            if not tokens or tokens[-1][0] != "any":  # ** is *
                tokens.append(("any", "*"))
        elif char == "?":
            tokens.append(("one", "?"))
        elif char == "[":
            end = glob.find("]", i + 1)
            if end == -1:
                raise GlobError(f"'[' at position {i + 1} is never closed")
            body = glob[i + 1 : end]
            if not body:
                raise GlobError(f"empty set '[]' at position {i + 1}")
            if body[0] in "!^":
                raise GlobError("negated sets ([!...]) are not supported")
            if "[" in body or not _SET_CHARS.match(body):
                raise GlobError(f"set [{body}] may only hold ASCII letters, digits and punctuation")
            if body.startswith("-"):  # a literal '-' goes last, where the engine reads it so
                body = body[1:] + "-"
            if not _SET_BODY.match(body):
                raise GlobError(f"set [{glob[i + 1 : end]}] mixes ranges and '-' ambiguously")
            for start, stop in re.findall(r"([^-])-([^-])", body):
                if start > stop:
                    raise GlobError(f"range {start}-{stop} in [{body}] is reversed")
            tokens.append(("set", body))
            i = end
        elif char == "]":
            raise GlobError(f"']' at position {i + 1} has no opening '['")
        else:
            tokens.append(("lit", char))
        i += 1
    return tokens


def validate(glob: str) -> None:
    """Raise GlobError when the glob is not valid."""
    _tokens(glob)


def to_engine_pattern(glob: str) -> str:
    """Glob -> durable-rules ``$mt`` pattern (implicitly anchored at both ends)."""
    parts: list[str] = []
    for kind, text in _tokens(glob):
        if kind == "any":
            parts.append(".*")
        elif kind == "one":
            parts.append(".")
        elif kind == "set":
            parts.append(f"[{text}]")
        else:
            parts.append(f"%{text}" if text in _ENGINE_SPECIAL else text)
    return "".join(parts)


def to_regex(glob: str) -> re.Pattern[str]:
    """Glob -> Python regex with the same meaning (for the reference evaluator and tools)."""
    parts: list[str] = []
    for kind, text in _tokens(glob):
        if kind == "any":
            parts.append(".*")
        elif kind == "one":
            parts.append(".")
        elif kind == "set":
            parts.append("[" + "".join("\\" + c if c in "\\]^[" else c for c in text) + "]")
        else:
            parts.append(re.escape(text))
    return re.compile("".join(parts), re.DOTALL)
