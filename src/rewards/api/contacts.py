"""Contacts, OTPs and wallets."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, patch, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import PathParameter, QueryParameter, SkipValidation

from rewards.api.bodies import body_provider
from rewards.api.deps import CursorParameter, RuntimeDep, SessionDep
from rewards.api.docs import BODY, problems, request_schema
from rewards.intake import contacts
from rewards.money import wallets
from rewards.runtime.context import Runtime
from rewards.runtime.ratelimit import OtpLimits
from rewards.wire import (
    ContactCreate,
    ContactOut,
    ContactUpdate,
    LedgerPage,
    OtpOut,
    OtpRequest,
    WalletWithContact,
)

ContactId = Annotated[str, PathParameter(description="The contact's id (UUID).")]


class ContactsController(Controller):
    path = "/contacts"
    tags = ["contacts"]

    @post(
        "/",
        summary="Create a contact and its wallet",
        dependencies={"payload": Provide(body_provider("contact_create", ContactCreate))},
        opt=request_schema("contact_create"),
        responses={**BODY, **problems(409)},
        sync_to_thread=True,
    )
    def create(
        self,
        payload: NamedDependency[SkipValidation[ContactCreate]],
        session: SessionDep,
        runtime: RuntimeDep,
    ) -> ContactOut:
        return contacts.create_contact(session, runtime, payload)

    @get(
        "/{contact_id:str}",
        summary="A contact with its wallet",
        responses=problems(404),
        sync_to_thread=True,
    )
    def read(self, contact_id: ContactId, session: SessionDep, runtime: RuntimeDep) -> ContactOut:
        return contacts.get_contact(session, runtime, contact_id)

    @patch(
        "/{contact_id:str}",
        summary="Change a contact's name, segments, gift cards or spend block",
        dependencies={"payload": Provide(body_provider("contact_update", ContactUpdate))},
        opt=request_schema("contact_update"),
        responses={**BODY, **problems(404, 409)},
        sync_to_thread=True,
    )
    def update(
        self,
        contact_id: ContactId,
        payload: NamedDependency[SkipValidation[ContactUpdate]],
        session: SessionDep,
        runtime: RuntimeDep,
    ) -> ContactOut:
        return contacts.update_contact(session, runtime, contact_id, payload)

    @post(
        "/{contact_id:str}/otp",
        summary="Issue a six-digit single-use OTP for the contact",
        dependencies={"payload": Provide(body_provider("otp_request", OtpRequest))},
        opt=request_schema("otp_request"),
        responses={**BODY, **problems(404, 429, 503)},
        sync_to_thread=True,
    )
    def issue_otp(
        self,
        contact_id: ContactId,
        payload: NamedDependency[SkipValidation[OtpRequest]],
        state: State,
    ) -> OtpOut:
        # Counted before the transaction, in one of its own (runtime.ratelimit).
        runtime: Runtime = state.runtime
        limits: OtpLimits = state.otp_limits
        limits.count_issue(contact_id)
        with state.database.transaction() as session:
            return contacts.issue_otp(session, runtime, contact_id, payload)


class WalletsController(Controller):
    path = "/wallets"
    tags = ["wallets"]

    @get(
        "/{code:str}",
        summary="A wallet: balance, reserved, available",
        responses=problems(404),
        sync_to_thread=True,
    )
    def read(
        self,
        code: Annotated[str, PathParameter(description="The wallet code.")],
        session: SessionDep,
        runtime: RuntimeDep,
    ) -> WalletWithContact:
        return wallets.get_wallet(session, runtime, code)

    @get(
        "/{code:str}/transactions",
        summary="The wallet's ledger, newest first",
        responses=problems(400, 404),
        sync_to_thread=True,
    )
    def transactions(
        self,
        code: Annotated[str, PathParameter(description="The wallet code.")],
        session: SessionDep,
        runtime: RuntimeDep,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        cursor: CursorParameter = None,
    ) -> LedgerPage:
        return wallets.wallet_transactions(session, runtime, code, limit, cursor)
