"""Events: one create endpoint per type, reading, listing, cancelling, bulk intake."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from litestar import Response, Router, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import PathParameter, QueryParameter, SkipValidation

from rewards.analyst import simulation
from rewards.api.bodies import body_provider
from rewards.api.deps import CursorParameter, RuntimeDep, SessionDep
from rewards.api.docs import BODY, problems, request_schema
from rewards.api.responses import JSONResponse
from rewards.intake import events
from rewards.intake.group_commit import GroupCommit
from rewards.intake.identify import otp_identifiers, otp_identifiers_in_bulk
from rewards.money import returns
from rewards.runtime.context import Runtime
from rewards.runtime.ratelimit import OtpLimits
from rewards.wire import (
    EVENT_BODIES,
    BulkItemIn,
    BulkOut,
    CancelledEventOut,
    EventIn,
    EventOut,
    EventPage,
    EventType,
    ReturnIn,
    ReturnOut,
)

# RFC 3339 with a zone, years 1000-9999, only dates of the calendar (February 29 in leap
# years): what the pattern admits, the server accepts (a bound past the calendar's end in
# UTC is taken as the end). Business timestamps in bodies: schemas/events/*.json.
_MONTH_DAY = r"((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))"
_LEAP_YEAR = r"([1-9][0-9](0[48]|[2468][048]|[13579][26])|([2468][048]|[13579][26])00)"
RFC3339 = (
    rf"^([1-9][0-9]{{3}}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
    r"[Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
EventId = Annotated[str, PathParameter(description="The event's id (UUID).")]

# path segment -> event type
CREATE_PATHS: dict[str, str] = {
    "purchases": "purchase",
    "referrals": "referral",
    "achievements": "achievement",
    "financial-achievements": "financial_achievement",
    "financial-statements": "financial_statement",
    "social-media": "social_media",
    "web-visits": "web",
    "spend-requests": "spend_request",
}
REPLAY = {
    200: ResponseSpec(
        data_container=EventOut,
        description="Idempotent replay: the same external reference and body; the original event",
    )
}


def _create_handler(segment: str, event_type: str) -> HTTPRouteHandler:
    schema = f"events/{event_type}"

    async def create(
        payload: NamedDependency[SkipValidation[EventIn]], state: State
    ) -> Response[EventOut]:
        # The intake writer from the app's state: one dependency (the body) per request,
        # where two would be resolved in a task group of their own.
        intake: GroupCommit = state.intake
        if wanted := otp_identifiers(payload):  # reserved around the write (ratelimit)
            limits: OtpLimits = state.otp_limits
            async with limits.attempts_async(wanted):
                recorded = await intake.record(event_type, payload)
        else:  # no OTP: the counters are never touched
            recorded = await intake.record(event_type, payload)
        return JSONResponse(recorded.event, status_code=201 if recorded.created else 200)

    create.__name__ = f"create_{event_type}"
    return post(
        f"/{segment}",
        operation_id=f"create_{event_type}",
        summary=f"Record a {event_type.replace('_', ' ')} event",
        description=f"Body: `schemas/{schema}.json`. 201 with the new event; 200 on an idempotent replay.",
        dependencies={"payload": Provide(body_provider(schema, EVENT_BODIES[event_type]))},
        opt=request_schema(schema),
        responses={**BODY, **problems(409, 429, 503), **REPLAY},
        status_code=201,
        tags=["events"],
    )(create)


@get(
    "/{event_id:str}",
    operation_id="get_event",
    summary="One event",
    responses=problems(400, 404),
    sync_to_thread=True,
    tags=["events"],
)
def read_event(
    event_id: EventId,
    session: SessionDep,
    runtime: RuntimeDep,
    explain: Annotated[
        bool, QueryParameter(description="Add why each offer did or did not apply.")
    ] = False,
) -> EventOut:
    event = events.get_event(session, runtime, event_id)
    if explain:
        return msgspec.structs.replace(
            event, explanation=simulation.explain_event(session, runtime, event_id)
        )
    return event


@get(
    "/",
    operation_id="list_events",
    summary="Events, newest first",
    responses=problems(400),
    sync_to_thread=True,
    tags=["events"],
)
def list_events(
    session: SessionDep,
    runtime: RuntimeDep,
    type: Annotated[EventType | None, QueryParameter()] = None,
    contact_id: Annotated[str | None, QueryParameter(pattern=UUID_PATTERN)] = None,
    event_state: Annotated[
        Literal["posted", "cancelled"] | None, QueryParameter(name="state")
    ] = None,
    performed_from: Annotated[
        str | None, QueryParameter(description="Inclusive, RFC 3339 with zone.", pattern=RFC3339)
    ] = None,
    performed_to: Annotated[
        str | None, QueryParameter(description="Exclusive, RFC 3339 with zone.", pattern=RFC3339)
    ] = None,
    merchant_id: Annotated[
        str | None,
        QueryParameter(description="Events at this merchant's units.", pattern="^[a-z0-9-]+$"),
    ] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    cursor: CursorParameter = None,
) -> EventPage:
    where = events.EventFilter(
        type, contact_id, event_state, performed_from, performed_to, merchant_id
    )
    return events.list_events(session, runtime, where, limit, cursor)


@post(
    "/{event_id:str}/cancel",
    operation_id="cancel_event",
    summary="Cancel an event and reverse every ledger entry it caused",
    status_code=200,
    responses=problems(404, 409),
    sync_to_thread=True,
    tags=["events"],
)
def cancel_event(event_id: EventId, session: SessionDep, runtime: RuntimeDep) -> CancelledEventOut:
    return events.cancel_event(session, runtime, event_id)


@post(
    "/{event_id:str}/returns",
    operation_id="return_products",
    summary="Return quantities of a purchase's products; their awards are reversed in proportion",
    status_code=200,
    dependencies={"payload": Provide(body_provider("purchase_return", ReturnIn))},
    opt=request_schema("purchase_return"),
    responses={**BODY, **problems(404, 409)},
    sync_to_thread=True,
    tags=["events"],
)
def return_products(
    event_id: EventId,
    payload: NamedDependency[SkipValidation[ReturnIn]],
    session: SessionDep,
    runtime: RuntimeDep,
) -> ReturnOut:
    return returns.return_products(session, runtime, event_id, payload)


def _bulk_handler(max_body_bytes: int) -> HTTPRouteHandler:
    def bulk(payload: NamedDependency[SkipValidation[list[BulkItemIn]]], state: State) -> BulkOut:
        # The OTP attempts are reserved before the transaction and settled after it.
        runtime: Runtime = state.runtime
        limits: OtpLimits = state.otp_limits
        with limits.attempts(otp_identifiers_in_bulk(payload), partial=True):
            with state.database.transaction() as session:
                return events.record_bulk(session, runtime, payload)

    return post(
        "/bulk",
        operation_id="create_events_bulk",
        summary="Up to 1,000 events, each validated and recorded on its own",
        description=(
            f"Body: `schemas/bulk.json`, at most {max_body_bytes:,} bytes (other bodies: "
            "the service's general limit); larger is a 413. Each item's `status` is 201 "
            "(recorded), 200 (an idempotent replay), or the status of its `problem`: 400, "
            "404, 409, 422 or 429 (too many one-time-password attempts)."
        ),
        status_code=200,
        dependencies={"payload": Provide(body_provider("bulk", list[BulkItemIn]))},
        opt=request_schema("bulk"),
        responses={**BODY, **problems(503)},
        request_max_body_size=max_body_bytes,
        sync_to_thread=True,
        tags=["events"],
    )(bulk)


def events_router(bulk_max_body_bytes: int) -> Router:
    handlers = [
        _create_handler(segment, event_type) for segment, event_type in CREATE_PATHS.items()
    ]
    bulk = _bulk_handler(bulk_max_body_bytes)
    return Router(
        path="/events",
        route_handlers=[*handlers, bulk, list_events, read_event, cancel_event, return_products],
    )
