"""Offers and the loaded ruleset set."""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.params import QueryParameter

from rewards.api.deps import CursorParameter, RuntimeDep, SessionDep
from rewards.api.docs import problems
from rewards.offers import catalog as offers
from rewards.wire import OfferPage, RulesetsOut


@get(
    "/offers",
    operation_id="list_offers",
    summary="Every loaded offer",
    responses=problems(400),
    tags=["offers"],
    sync_to_thread=True,
)
def list_offers(
    session: SessionDep,
    runtime: RuntimeDep,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    cursor: CursorParameter = None,
) -> OfferPage:
    return offers.list_offers(session, runtime, limit, cursor)


@get(
    "/rulesets",
    operation_id="get_rulesets",
    summary="The loaded ruleset version and files",
    responses=problems(),
    tags=["offers"],
    sync_to_thread=True,
)
def get_rulesets(session: SessionDep, runtime: RuntimeDep) -> RulesetsOut:
    return offers.describe_rulesets(session, runtime)
