"""YAML reading that remembers where every key and value came from.

A file is composed into PyYAML's node tree and turned into plain Python values by hand,
so every mapping key and value keeps its line and column (``SourceMap``) and duplicate
keys are reported instead of silently keeping the last one. Scalars follow YAML 1.2
rather than PyYAML's YAML 1.1 defaults: only ``true``/``false`` are booleans (``no``
and ``on`` stay strings), ``14:00`` is a string and not the sexagesimal number 840,
dates stay strings (the JSON Schema checks their format), and numbers with a fraction
become ``Decimal`` so money is exact from the first byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import yaml

Path_ = tuple[str | int, ...]


if TYPE_CHECKING:  # what this module uses of the loader is common to both classes
    _Base = yaml.SafeLoader
else:
    _Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml parses ~5x faster


class _Loader(_Base):
    """SafeLoader with YAML 1.2-like implicit scalars and ``Decimal`` floats."""


_Loader.yaml_implicit_resolvers = {}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$|^[-+]?[0-9]+[eE][-+]?[0-9]+$"
    ),
    list("-+0123456789."),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    return int(str(node.value).replace("_", ""))


def _construct_decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal:
    value = Decimal(str(node.value).replace("_", ""))
    if not value.is_finite():
        raise InvalidOperation(node.value)
    return value


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based


@dataclass
class SourceMap:
    """Positions of the values (and mapping keys) of one file, by path."""

    values: dict[Path_, Position] = field(default_factory=dict)
    keys: dict[Path_, Position] = field(default_factory=dict)

    def value(self, path: Path_) -> Position:
        """Position of the value at ``path``, or of its nearest ancestor."""
        path = tuple(path)
        while path not in self.values and path:
            path = path[:-1]
        return self.values.get(path, Position(1, 1))

    def key(self, path: Path_) -> Position:
        """Position of the mapping key that names ``path`` (falls back to the value)."""
        path = tuple(path)
        return self.keys.get(path) or self.value(path)


class SourceError(Exception):
    """A YAML problem with its position; ``parse`` collects them."""

    def __init__(self, position: Position, message: str) -> None:
        super().__init__(message)
        self.position = position
        self.message = message


def _mark(mark: yaml.Mark | None) -> Position:
    return Position(mark.line + 1, mark.column + 1) if mark else Position(1, 1)


TAB_MESSAGE = "tabs are not allowed, indent with spaces"


def _indenting_tabs(text: str) -> list[Position]:
    """Where a tab stands in a line's indentation (before its first other character)."""
    positions = []
    for number, line in enumerate(text.splitlines(), start=1):
        indentation = line[: len(line) - len(line.lstrip(" \t"))]
        if "\t" in indentation:
            positions.append(Position(number, indentation.index("\t") + 1))
    return positions


def parse(text: str) -> tuple[Any, SourceMap, list[SourceError]]:
    """Parse one YAML document: (data, positions, problems). Data is None on a syntax error."""
    sources = SourceMap()
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as error:
        tabs = _indenting_tabs(text)
        if tabs:  # the usual cause, whatever the parser says (its words name no tab)
            return None, sources, [SourceError(position, TAB_MESSAGE) for position in tabs]
        mark = error.problem_mark or error.context_mark
        problem = " ".join(p for p in (error.context, error.problem) if p) or "invalid YAML"
        return None, sources, [SourceError(_mark(mark), f"YAML syntax error: {problem}")]
    except yaml.YAMLError as error:
        return None, sources, [SourceError(Position(1, 1), f"YAML error: {error}")]
    if node is None:
        return None, sources, [SourceError(Position(1, 1), "the file is empty")]
    problems: list[SourceError] = []
    loader = _Loader("")
    try:
        data = _build(node, (), loader, sources, problems, 0)
    finally:
        loader.dispose()
    return data, sources, problems


def _build(
    node: yaml.Node,
    path: Path_,
    loader: yaml.SafeLoader,
    sources: SourceMap,
    problems: list[SourceError],
    depth: int,
) -> Any:
    sources.values[path] = _mark(node.start_mark)
    if depth > 50:
        problems.append(SourceError(_mark(node.start_mark), "structure nested too deeply"))
        return None
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(
                    SourceError(_mark(key_node.start_mark), "a key must be a plain value")
                )
                continue
            key = str(_scalar(key_node, loader, problems))
            if key in result:
                problems.append(SourceError(_mark(key_node.start_mark), f"duplicate key '{key}'"))
                continue
            sources.keys[(*path, key)] = _mark(key_node.start_mark)
            result[key] = _build(value_node, (*path, key), loader, sources, problems, depth + 1)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(item, (*path, index), loader, sources, problems, depth + 1)
            for index, item in enumerate(node.value)
        ]
    return _scalar(node, loader, problems)


def _scalar(node: yaml.Node, loader: yaml.SafeLoader, problems: list[SourceError]) -> Any:
    try:
        return loader.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, InvalidOperation) as error:
        problem = getattr(error, "problem", None) or f"invalid value {node.value!r}"
        problems.append(SourceError(_mark(node.start_mark), str(problem)))
        return node.value


def format_path(path: Path_) -> str:
    """('offers', 0, 'award', 'amount') -> 'offers[0].award.amount'."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def describe_path(path: Path_, offer_id: str | None = None) -> str:
    """Where a problem is, in words: ``offer basket-over-50: award.percentage`` inside an
    offer whose id is known, else the path (``offers[3].award``, ``units[2].group``)."""
    if offer_id and len(path) >= 2 and path[0] == "offers" and isinstance(path[1], int):
        rest = format_path(path[2:])
        return f"offer {offer_id}: {rest}" if rest else f"offer {offer_id}"
    return format_path(path)
