"""The facts the engine evaluates, built from a stored event: one place for requests
(``build_facts``: ``EventFacts`` of any event type) and evaluation runs (``purchase_fact``:
a purchase's engine fact straight from its stored JSON, the same fact, faster)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import msgspec
from sqlmodel import Session

from rewards.engine import EventFacts, KpiValue, ProductLine, compiler
from rewards.engine.compiler import CompiledRulesets, scaled


class _EventColumns(Protocol):
    """The columns every fact reads: an ``Event`` row, or the ``EventRecord`` an
    evaluation run reads straight from SQL."""

    @property
    def performed_on(self) -> datetime: ...
    @property
    def classification(self) -> str | None: ...
    @property
    def performed_by_unit(self) -> str | None: ...


class FactSource(_EventColumns, Protocol):
    """What ``build_facts`` reads of an event: the columns, its type and its details."""

    @property
    def type(self) -> str: ...
    @property
    def details(self) -> dict[str, Any]: ...


def build_facts(
    session: Session | None,
    event: FactSource,
    segments: list[str],
    awards_in_window: dict[str, int],
) -> EventFacts:
    """The flat, stateless description of ``event`` the engine evaluates (it reads no
    database: ``session`` may be None)."""
    details: dict[str, Any] = event.details
    medium = details.get("payment_medium") or {}
    return EventFacts(
        event_type=event.type,
        performed_on=event.performed_on,
        classification=event.classification,
        unit=event.performed_by_unit,
        segments=segments,
        awards_in_window=awards_in_window,
        total_amount=Decimal(details["total_amount"]) if "total_amount" in details else None,
        products=[
            ProductLine(
                sku=line["sku"],
                quantity=Decimal(line["quantity"]),
                total_amount=Decimal(line["total_amount"]),
            )
            for line in details.get("products", [])
        ],
        payment_brand=medium.get("brand"),
        payment_type=medium.get("type"),
        amount=Decimal(details["amount"]) if "amount" in details else None,
        kpis=[
            KpiValue(kpi=item["kpi"], product=item.get("product"), value=Decimal(item["value"]))
            for item in details.get("kpis", [])
        ],
        platform=details.get("platform"),
        action=details.get("action"),
        website=details.get("website"),
    )


# ---- purchase facts straight from the stored details ------------------------------------
#
# ``build_facts`` + ``compiler.build_fact`` make every amount a Decimal and
# then cents again; for the purchases of a run (nearly all of its events) the amounts go
# from the stored JSON to cents directly. The result is the same fact (tests compare the
# two on generated purchases); details that do not decode into ``_Purchase`` take the
# general path, and so fail (or not) exactly as it does.


class _Line(msgspec.Struct):
    sku: str
    quantity: str | int | float
    total_amount: str | int | float


class _Medium(msgspec.Struct):
    brand: Any = None
    type: Any = None


class _Purchase(msgspec.Struct):
    products: list[_Line] = []
    total_amount: str | int | float | msgspec.UnsetType = msgspec.UNSET
    payment_medium: _Medium | None = None


_PURCHASE = msgspec.json.Decoder(_Purchase)


# amount text -> cents: prices repeat (bounded below). Only text is stored; numbers are
# looked up too (and never found), hence the key type.
_CENTS: dict[str | int | float, int] = {}


def _cents(value: str | int | float) -> int:
    """``Decimal(value)`` in cents, half-up, as build_facts + build_fact compute it."""
    found = _CENTS.get(value)  # only text is stored: a number never finds one
    if found is not None:
        return found
    if type(value) is str:
        found = _text_cents(value)
        if len(_CENTS) >= 100_000:
            _CENTS.clear()
        _CENTS[value] = found
        return found
    if type(value) is int:
        return value * 100
    return scaled(Decimal(value))


def _text_cents(value: str) -> int:
    if value[-3:-2] == ".":  # "<digits>.<2 digits>": the cents are the digits
        digits = value.replace(".", "", 1)
        if digits.isascii() and digits.isdigit():
            return int(digits)
    return scaled(Decimal(value))


class StoredPurchase(_EventColumns, Protocol):
    """What ``purchase_fact`` reads of a purchase: the columns and its stored details as
    JSON text (``raw``, as a run's ``EventRecord`` has them)."""

    @property
    def raw(self) -> str: ...


def purchase_fact(
    compiled: CompiledRulesets, event: StoredPurchase, segments: list[str], counts: dict[str, int]
) -> dict[str, Any] | None:
    """The engine fact of a purchase (``compiler.build_fact(build_facts(...))``), or None
    when its details need the general path."""
    try:
        details = _PURCHASE.decode(event.raw)
    except msgspec.ValidationError:
        return None
    medium = details.payment_medium or _Medium()
    total = details.total_amount
    return _purchase_fact(
        compiled,
        event,
        [{"s": line.sku, "a": _cents(line.total_amount)} for line in details.products],
        None if total is msgspec.UNSET else _cents(total),
        (medium.brand, medium.type),
        segments,
        counts,
    )


def priced_purchase_fact(
    compiled: CompiledRulesets,
    event: FactSource,
    lines: Sequence[tuple[str, int]],
    total_cents: int,
    segments: list[str],
    counts: dict[str, int],
) -> dict[str, Any]:
    """The engine fact of a purchase being recorded, from its priced lines ((SKU, total
    cents) each) and total: the same ``compiler.purchase_fact`` evaluation runs build
    from the stored JSON (``purchase_fact``), and the same fact as
    ``compiler.build_fact(build_facts(...))``."""
    medium = event.details.get("payment_medium") or {}
    brand_and_type = (medium.get("brand"), medium.get("type"))
    facts_lines = [{"s": sku, "a": cents} for sku, cents in lines]
    return _purchase_fact(
        compiled, event, facts_lines, total_cents, brand_and_type, segments, counts
    )


def _purchase_fact(
    compiled: CompiledRulesets,
    event: _EventColumns,
    lines: list[dict[str, Any]],  # the fact's own {"s": SKU, "a": cents}
    total_cents: int | None,
    brand_and_type: tuple[Any, Any],
    segments: list[str],
    counts: dict[str, int],
) -> dict[str, Any]:
    """``compiler.purchase_fact``: the one function both callers above end in."""
    return compiler.purchase_fact(
        compiled,
        performed_on=event.performed_on,
        classification=event.classification,
        unit=event.performed_by_unit,
        segments=segments,
        awards_in_window=counts,
        lines=lines,
        total_cents=total_cents,
        payment_brand=brand_and_type[0],
        payment_type=brand_and_type[1],
    )
