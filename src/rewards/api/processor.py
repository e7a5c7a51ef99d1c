"""Card transactions from processors (role ``processor``) and customers' claims of the
ones no contact was known for (integrators): PLATFORM.md."""

from __future__ import annotations

from typing import Annotated

from litestar import Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import PathParameter, QueryParameter, SkipValidation

from rewards.api.auth import PROCESSOR_ROLES
from rewards.api.bodies import body_provider
from rewards.api.deps import CursorParameter, SessionDep
from rewards.api.docs import BODY, problems, request_schema
from rewards.api.responses import JSONResponse
from rewards.intake import claims, processor
from rewards.wire import (
    ProcessorTransactionIn,
    ProcessorTransactionOut,
    ProcessorTransactionPage,
    RouteStatus,
    TransactionClaimIn,
    TransactionClaimOut,
)

TransactionId = Annotated[str, PathParameter(description="The transaction's id in this service.")]
PROCESSOR = {"roles": PROCESSOR_ROLES}
# OpenAPI links (api.docs): from a posted transaction to reading it and to claiming it.
TRANSACTION_LINKS = {
    201: {
        "GetTheTransaction": {
            "operationId": "get_processor_transaction",
            "parameters": {"path.transaction_id": "$response.body#/id"},
        },
        "ClaimTheTransaction": {
            "operationId": "create_transaction_claim",
            "description": "A customer claims the transaction the processor just posted.",
            "requestBody": {
                "merchant_id": "$response.body#/routes/0/merchant_id",
                "performed_on": "$response.body#/performed_on",
                "amount": "$response.body#/amount",
                "last4": "$response.body#/card/last4",
            },
        },
    }
}


@post(
    "/processor-transactions",
    operation_id="create_processor_transaction",
    summary="Post a card transaction; it is routed to every merchant listing its terminal",
    description=(
        "Body: `schemas/processor_transaction.json`. Keys of role `processor` or `admin`. "
        "201 with the transaction and one route per merchant; 200 on an idempotent replay "
        "(same processor, transaction_id and body); another body: 409. A terminal no "
        "merchant lists: 422 `unknown_terminal`, nothing stored."
    ),
    status_code=201,
    dependencies={
        "payload": Provide(body_provider("processor_transaction", ProcessorTransactionIn))
    },
    opt={**request_schema("processor_transaction"), **PROCESSOR, "links": TRANSACTION_LINKS},
    responses={
        **BODY,
        **problems(409),
        200: ResponseSpec(
            data_container=ProcessorTransactionOut,
            description="Idempotent replay: the transaction as it is now",
        ),
    },
    sync_to_thread=True,
    tags=["processor transactions"],
)
def create_processor_transaction(
    payload: NamedDependency[SkipValidation[ProcessorTransactionIn]], state: State
) -> Response[ProcessorTransactionOut]:
    posted = processor.post_transaction(state.database, state.runtime, payload)
    return JSONResponse(posted.transaction, status_code=201 if posted.created else 200)


@get(
    "/processor-transactions/{transaction_id:str}",
    operation_id="get_processor_transaction",
    summary="One processor transaction and its routes",
    opt=PROCESSOR,
    responses=problems(404),
    sync_to_thread=True,
    tags=["processor transactions"],
)
def get_processor_transaction(
    transaction_id: TransactionId, session: SessionDep
) -> ProcessorTransactionOut:
    return processor.get_transaction(session, transaction_id)


@get(
    "/processor-transactions",
    operation_id="list_processor_transactions",
    summary="Processor transactions, newest first",
    opt=PROCESSOR,
    responses=problems(400),
    sync_to_thread=True,
    tags=["processor transactions"],
)
def list_processor_transactions(
    session: SessionDep,
    status: Annotated[
        RouteStatus | None, QueryParameter(description="Transactions with a route in this status.")
    ] = None,
    merchant_id: Annotated[
        str | None,
        QueryParameter(description="Transactions routed to this merchant.", pattern="^[a-z0-9-]+$"),
    ] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    cursor: CursorParameter = None,
) -> ProcessorTransactionPage:
    return processor.list_transactions(session, status, merchant_id, limit, cursor)


@post(
    "/transaction-claims",
    operation_id="create_transaction_claim",
    summary="A customer claims a card transaction no contact was known for",
    description=(
        "Body: `schemas/transaction_claim.json`. The one `unclaimed` (or `unidentified`) "
        "transaction of the merchant with this amount and card last4 within a day of "
        "`performed_on` (not older than 60 days) becomes the contact's purchase (201), and "
        "the card is linked to the contact when no other contact holds it. None: 422 "
        "`no_matching_transaction`; several: 409 `ambiguous_claim`; claimed already: 409 "
        "`already_claimed`. At most 10 failed claims per contact a day: then 429."
    ),
    status_code=201,
    dependencies={"payload": Provide(body_provider("transaction_claim", TransactionClaimIn))},
    opt=request_schema("transaction_claim"),
    responses={**BODY, **problems(409, 429, 503)},
    sync_to_thread=True,
    tags=["processor transactions"],
)
def create_transaction_claim(
    payload: NamedDependency[SkipValidation[TransactionClaimIn]], state: State
) -> TransactionClaimOut:
    return claims.claim_transaction(state.database, state.counters, state.runtime, payload)


def processor_handlers() -> list[HTTPRouteHandler]:
    return [
        create_processor_transaction,
        get_processor_transaction,
        list_processor_transactions,
        create_transaction_claim,
    ]
