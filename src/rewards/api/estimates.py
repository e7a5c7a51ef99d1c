"""Purchase estimates: dry runs with optional reservations and approval."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import PathParameter, SkipValidation

from rewards.api.bodies import body_provider
from rewards.api.deps import RuntimeDep, SessionDep
from rewards.api.docs import BODY, problems, request_schema
from rewards.intake import estimates
from rewards.intake.identify import otp_identifiers
from rewards.runtime.context import Runtime
from rewards.runtime.ratelimit import OtpLimits
from rewards.wire import EstimateIn, EstimateOut

EstimateId = Annotated[str, PathParameter(description="The estimate's id (UUID).")]


class EstimatesController(Controller):
    path = "/purchase-estimates"
    tags = ["estimates"]

    @post(
        "/",
        operation_id="create_purchase_estimate",
        summary="Estimate a purchase: awards, spendable amount, optional reservation",
        dependencies={"payload": Provide(body_provider("purchase_estimate", EstimateIn))},
        opt=request_schema("purchase_estimate"),
        responses={**BODY, **problems(429, 503)},
        sync_to_thread=True,
    )
    def create(
        self, payload: NamedDependency[SkipValidation[EstimateIn]], state: State
    ) -> EstimateOut:
        # An OTP is reserved before the transaction and settled after it.
        runtime: Runtime = state.runtime
        limits: OtpLimits = state.otp_limits
        with limits.attempts(otp_identifiers(payload)):
            with state.database.transaction() as session:
                return estimates.create_estimate(session, runtime, payload)

    @get(
        "/{estimate_id:str}",
        operation_id="get_purchase_estimate",
        summary="One estimate",
        responses=problems(404),
        sync_to_thread=True,
    )
    def read(
        self, estimate_id: EstimateId, session: SessionDep, runtime: RuntimeDep
    ) -> EstimateOut:
        return estimates.get_estimate(session, runtime, estimate_id)

    @post(
        "/{estimate_id:str}/approve",
        operation_id="approve_purchase_estimate",
        summary="Approve an estimate so a purchase may use it",
        status_code=200,
        responses=problems(404, 409),
        sync_to_thread=True,
    )
    def approve(
        self, estimate_id: EstimateId, session: SessionDep, runtime: RuntimeDep
    ) -> EstimateOut:
        return estimates.approve_estimate(session, runtime, estimate_id)
