"""The loaded offers and ruleset set, as the API shows them."""

from __future__ import annotations

from sqlmodel import Session

from rewards.db.pages import decode_cursor, encode_cursor
from rewards.offers.budgets import current_budgets
from rewards.runtime import reload
from rewards.runtime.context import Runtime
from rewards.wire import OfferOut, OfferPage, RulesetsOut, ValidityOut


def list_offers(session: Session, runtime: Runtime, limit: int, cursor: str | None) -> OfferPage:
    """Every loaded offer in file order (files sorted by name), with its budget now."""
    rulesets = runtime.rulesets
    start = decode_cursor(cursor) or 0
    chunk = rulesets.offers[start : start + limit]
    budgets = current_budgets(session, rulesets, chunk, runtime.now())
    items = [
        OfferOut(
            id=offer.id,
            name=offer.name,
            classification=offer.classification,
            evaluation=offer.evaluation or "immediate",
            valid=ValidityOut(from_=offer.valid.from_, until=offer.valid.until)
            if offer.valid
            else None,
            ruleset_file=offer.ruleset_file,
            ruleset_version=rulesets.version,
            budget=budgets.get(offer.id),
        )
        for offer in chunk
    ]
    more = start + limit < len(rulesets.offers)
    return OfferPage(items=items, next_cursor=encode_cursor(start + limit) if more else None)


def describe_rulesets(session: Session, runtime: Runtime) -> RulesetsOut:
    rulesets = runtime.rulesets
    return RulesetsOut(
        version=rulesets.version,
        loaded_at=rulesets.loaded_at,
        files=list(rulesets.files),
        offers=len(rulesets.offers),
        errors=list(runtime.reload_errors),
        versions=reload.versions_seen(session, runtime),
    )
