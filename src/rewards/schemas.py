"""Request bodies: JSON Schema first (the published contract), then msgspec structs.

Validation takes the fast path (``is_valid``) and collects the full error list only when
the body is invalid; every error points at its field with a JSON Pointer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import jsonschema_rs
import msgspec
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError as SchemaError

from rewards.errors import DomainError, FieldError, ValidationFailed

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
T = TypeVar("T")
# JSON numbers become exact Decimals, so schema checks never see binary floats.
_untyped = msgspec.json.Decoder(float_hook=Decimal)


class InvalidJson(DomainError):
    status = 400
    code = "invalid_json"
    title = "Request body is not valid JSON"


MAX_DEPTH = 32  # objects and arrays inside one another; the deepest body needs 5
# C0 controls but tab, line feed and carriage return, and DEL: no field of this API
# means them, and PostgreSQL cannot store NUL in text at all. The schemas say it with
# TEXT_PATTERN on every free-text string (other strings have stricter patterns).
CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
TEXT_PATTERN = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f]*$"
_INTEGRAL_DIGITS = 18  # an integral JSON number this long or shorter becomes an int


def check_shape(instance: Any) -> None:
    """A decoded body nests at most ``MAX_DEPTH`` levels (400); numbers written with a
    zero fraction (``60.0``) become integers, as JSON Schema counts them (so ``60.0`` is
    a valid ``integer``)."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(instance, ())]
    while stack:
        value, path = stack.pop()
        if not isinstance(value, dict | list):
            continue
        if len(path) >= MAX_DEPTH:
            raise InvalidJson(
                f"The body nests deeper than {MAX_DEPTH} levels.",
                errors=[FieldError(path=pointer(path), message="nested too deeply")],
            )
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(item, Decimal):
                if _is_small_integral(item):
                    value[key] = int(item)
            elif isinstance(item, dict | list):
                stack.append((item, (*path, key)))


def _is_small_integral(number: Decimal) -> bool:
    return (
        number.is_finite()
        and number.adjusted() < _INTEGRAL_DIGITS
        and number == number.to_integral_value()
    )


def _exact_multiple_of(validator: Any, step: Any, instance: Any, schema: Any) -> Any:
    """``multipleOf`` in exact decimal arithmetic (the library's divides floats, or
    fails on a Decimal far from the step); steps are powers of ten in these schemas."""
    if not validator.is_type(instance, "number") or isinstance(instance, bool):
        return
    exact_step = Decimal(str(step))
    value = instance if isinstance(instance, Decimal) else Decimal(str(instance))
    if not value.is_finite():
        yield SchemaError(f"{instance!r} is not a multiple of {step}")
        return
    places = -exact_step.normalize().as_tuple().exponent  # type: ignore[operator]
    if exact_step == Decimal(1).scaleb(-places):
        multiple = value.normalize().as_tuple().exponent >= -places  # type: ignore[operator]
    else:
        multiple = (value / exact_step) == (value / exact_step).to_integral_value()
    if not multiple:
        yield SchemaError(f"{instance!r} is not a multiple of {step}")


_Validator = validators.extend(Draft202012Validator, {"multipleOf": _exact_multiple_of})


def _within_branches(errors: Iterable[SchemaError]) -> Iterator[SchemaError]:
    """Errors of an ``anyOf``/``oneOf`` told from the one branch the instance meant,
    rather than "not valid under any of the given schemas": the branch whose type and
    constants fit (an amount given as a number is judged as a number; a simulation of
    type ``web`` by the web event's schema). Several such branches: the error as is."""
    for error in errors:
        if error.validator not in ("anyOf", "oneOf") or not error.context:
            yield error
            continue
        if _alternative_properties(error):  # none of them given: the first is missing
            yield error.context[0]
            continue
        branches: dict[Any, list[SchemaError]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        meant = [
            found
            for found in branches.values()
            if not any(
                e.validator in ("type", "const") and len(e.relative_path) <= 1 for e in found
            )
        ]
        if len(meant) == 1:
            yield from _within_branches(meant[0])
        else:
            yield error


def _alternative_properties(error: SchemaError) -> list[str]:
    """The properties of a ``oneOf`` that only says "exactly one of these" (a purchase's
    ``performed_by_unit`` or ``performed_by_terminal``); else empty."""
    branches = error.validator_value if error.validator == "oneOf" else None
    if not isinstance(branches, list) or not all(
        isinstance(b, dict) and list(b) == ["required"] and len(b["required"]) == 1
        for b in branches
    ):
        return []
    return [b["required"][0] for b in branches]


def _message(error: SchemaError) -> str:
    if names := _alternative_properties(error):
        return f"give one of {', '.join(names)}, not several"
    if error.validator == "pattern" and error.validator_value == TEXT_PATTERN:
        return "control characters are not allowed"
    if error.validator == "type" and isinstance(error.instance, Decimal):
        return f"{error.instance} is not of type {error.validator_value!r}"
    if error.validator == "multipleOf":
        places = -Decimal(str(error.validator_value)).normalize().as_tuple().exponent  # type: ignore[operator]
        return f"at most {places} decimals"
    return error.message


def pointer(parts: Any) -> str:
    return "".join(f"/{str(p).replace('~', '~0').replace('/', '~1')}" for p in parts)


_REQUIRED = re.compile(r"^'(.+)' is a required property$")


def error_path(error: SchemaError) -> str:
    """Where the error is: a missing or unexpected property is pointed at by name."""
    path = pointer(error.absolute_path)
    if error.validator == "required" and (missing := _REQUIRED.match(error.message)):
        return f"{path}/{missing.group(1)}"
    if (names := _alternative_properties(error)) and isinstance(error.instance, dict):
        return f"{path}/{[n for n in names if n in error.instance][-1]}"
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        unexpected = sorted(str(k) for k in error.instance if k not in known)
        if len(unexpected) == 1:
            return f"{path}/{unexpected[0]}"
    return path


def _sort_key(error: SchemaError) -> tuple[str, str]:
    return (error_path(error), error.message)


class SchemaRegistry:
    """The JSON Schemas of ``schemas/``, loaded once, with compiled validators."""

    def __init__(self, root: Path = SCHEMAS_DIR) -> None:
        self.root = root
        self.documents: dict[str, dict[str, Any]] = {}
        self.validators: dict[str, Any] = {}
        self._fast: dict[str, Any] = {}
        for path in sorted(root.rglob("*.json")):
            name = path.relative_to(root).with_suffix("").as_posix()
            document = json.loads(path.read_text())
            if name in ("ruleset.schema", "definition.schema"):
                continue  # ruleset file schemas are the engine's, not request bodies
            self.documents[name] = document
            self.validators[name] = _Validator(document)
            # Formats stay annotations, as in the Python validator (no format checker).
            self._fast[name] = jsonschema_rs.validator_for(document, validate_formats=False)

    def errors(self, name: str, instance: Any) -> list[FieldError]:
        """Problems of ``instance`` under schema ``name`` (empty when valid).

        jsonschema-rs answers "valid" about 60 times faster than the Python validator
        (1.6 ms for a purchase on the reference machine); only a body it refuses goes to
        the Python validator, which is the authority: it words the errors, and a body it
        accepts is accepted (tests/unit/test_schema_files.py checks the two agree).
        """
        if self._fast[name].is_valid(instance):
            return []
        validator = self.validators[name]
        if validator.is_valid(instance):
            return []
        found = list(_within_branches(validator.iter_errors(instance)))
        # "Not valid under any of the given schemas" says less than an error inside it
        # (an unknown simulation type: the enum at /type).
        paths = [error_path(e) for e in found]
        found = [
            e
            for e, path in zip(found, paths, strict=True)
            if e.validator not in ("anyOf", "oneOf")
            or not any(other.startswith(f"{path}/") for other in paths)
        ]
        return [
            FieldError(path=error_path(e), message=_message(e))
            for e in sorted(found, key=_sort_key)
        ]

    def decode(self, name: str, raw: bytes, struct: type[T]) -> T:
        """Validate ``raw`` against schema ``name`` and decode it into ``struct``."""
        try:
            instance = _untyped.decode(raw) if raw else None
        except msgspec.DecodeError as exc:
            raise InvalidJson(str(exc)) from None
        except RecursionError:  # the decoder's own limit, far deeper than MAX_DEPTH
            raise InvalidJson(f"The body nests deeper than {MAX_DEPTH} levels.") from None
        check_shape(instance)
        return self.convert(name, instance, struct)

    def convert(self, name: str, instance: Any, struct: type[T]) -> T:
        """Validate an already parsed JSON value and convert it into ``struct``."""
        if instance is None:
            raise ValidationFailed.at("", "a JSON body is required")
        if errors := self.errors(name, instance):
            raise ValidationFailed(f"{len(errors)} problem(s) in the request body", errors=errors)
        try:
            return msgspec.convert(instance, struct, strict=False)
        except msgspec.ValidationError as exc:  # e.g. a date the pattern let through
            message, _, where = str(exc).partition(" - at `$")
            path = where.rstrip("`").replace("[", ".").replace("]", "").replace(".", "/")
            raise ValidationFailed.at(path, message) from None


@cache
def shared_registry(root: Path = SCHEMAS_DIR) -> SchemaRegistry:
    """One registry per process and folder (compiled validators are immutable), built on
    first use; every app of the process shares it. The files are checked against the
    JSON Schema meta-schema by the test suite, not at every start."""
    return SchemaRegistry(root)
