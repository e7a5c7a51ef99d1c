"""Webhook subscriptions and their deliveries (admin; an analyst key reads them). The
messages themselves are documented in the OpenAPI document's ``webhooks``
(``notify.messages``)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import PathParameter, QueryParameter, SkipValidation

from rewards.api.bodies import body_provider
from rewards.api.deps import CursorParameter, RuntimeDep, SessionDep
from rewards.api.docs import BODY, problems, request_schema
from rewards.notify import subscriptions
from rewards.wire import (
    DeliveryOut,
    DeliveryPage,
    DeliveryStatus,
    RedeliveryOut,
    WebhookCreate,
    WebhookCreated,
    WebhookOut,
    WebhookPage,
)

ADMIN: dict[str, Any] = {"roles": ("admin",)}
WebhookId = Annotated[
    str,
    PathParameter(
        description="The subscription's id (a UUID, or the id a webhooks-file entry gives).",
        pattern=r"^[A-Za-z0-9._-]{1,36}$",
        max_length=36,
    ),
]
# A string matched by pattern (not ``{delivery_id:int}``): a path that is not a number
# still reaches the handler's role check and its 400, rather than no route (404).
DeliveryId = Annotated[
    str,
    PathParameter(description="The delivery's id.", pattern=r"^[1-9][0-9]{0,17}$", max_length=18),
]
CREATED_LINKS = {
    201: {
        "GetTheWebhook": {
            "operationId": "get_webhook",
            "parameters": {"path.webhook_id": "$response.body#/id"},
        },
        "ListItsDeliveries": {
            "operationId": "list_webhook_deliveries",
            "parameters": {"path.webhook_id": "$response.body#/id"},
        },
    }
}


class WebhooksController(Controller):
    path = "/webhooks"
    tags = ["webhooks"]

    @post(
        "/",
        operation_id="create_webhook",
        summary="Subscribe an endpoint to notifications; the answer shows its secret once",
        description="Body: `schemas/webhook_create.json`. Every notification of the "
        '`event_types` (or `["*"]`: all) is POSTed to `url`, signed with the secret '
        "(Standard Webhooks headers; see the document's `webhooks`). The secret is in this "
        "answer only: keep it.",
        status_code=201,
        dependencies={"payload": Provide(body_provider("webhook_create", WebhookCreate))},
        opt={**request_schema("webhook_create"), **ADMIN, "links": CREATED_LINKS},
        responses=BODY,
        sync_to_thread=True,
    )
    def create(
        self, payload: NamedDependency[SkipValidation[WebhookCreate]], session: SessionDep
    ) -> WebhookCreated:
        return subscriptions.create_subscription(session, payload)

    @get(
        "/",
        operation_id="list_webhooks",
        summary="Webhook subscriptions (every source, active or not), without their secrets",
        opt=ADMIN,
        responses=problems(400),
        sync_to_thread=True,
    )
    def list_all(
        self,
        session: SessionDep,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        cursor: CursorParameter = None,
    ) -> WebhookPage:
        return subscriptions.list_subscriptions(session, limit, cursor)

    @get(
        "/{webhook_id:str}",
        operation_id="get_webhook",
        summary="A webhook subscription, without its secret",
        opt=ADMIN,
        responses=problems(400, 404),
        sync_to_thread=True,
    )
    def read(self, webhook_id: WebhookId, session: SessionDep) -> WebhookOut:
        return subscriptions.get_subscription(session, webhook_id)

    @delete(
        "/{webhook_id:str}",
        operation_id="delete_webhook",
        summary="Delete a subscription and its deliveries; 409 for one of the webhooks file",
        description="Subscriptions of the webhooks file (`source: config`) are removed from "
        "the file (409 `webhook_from_config`); the broker's by unsetting REWARDS_BROKER_URL "
        "(409 `webhook_from_broker`).",
        status_code=204,
        opt=ADMIN,
        responses=problems(400, 404, 409),
        sync_to_thread=True,
    )
    def remove(self, webhook_id: WebhookId, session: SessionDep) -> None:
        subscriptions.delete_subscription(session, webhook_id)

    @get(
        "/{webhook_id:str}/deliveries",
        operation_id="list_webhook_deliveries",
        summary="A subscription's deliveries, newest first, with their attempts",
        opt=ADMIN,
        responses=problems(400, 404),
        sync_to_thread=True,
    )
    def deliveries(
        self,
        webhook_id: WebhookId,
        session: SessionDep,
        status: Annotated[
            DeliveryStatus | None, QueryParameter(description="Only deliveries in this status.")
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        cursor: CursorParameter = None,
    ) -> DeliveryPage:
        return subscriptions.list_deliveries(session, webhook_id, status, limit, cursor)

    @post(
        "/{webhook_id:str}/deliveries/{delivery_id:str}/redeliver",
        operation_id="redeliver_webhook_delivery",
        summary="Send a delivery again (dead or delivered): pending, due now",
        description="A fresh retry budget: the attempt count and first attempt start "
        "again; the last attempt's status and error stay. The message keeps its id: the "
        "receiver dedupes on it. Per contact, messages still go out in order: "
        "a redelivered message goes before that contact's later pending ones.",
        status_code=200,
        opt=ADMIN,
        responses=problems(400, 404),
        sync_to_thread=True,
    )
    def redeliver(
        self,
        webhook_id: WebhookId,
        delivery_id: DeliveryId,
        session: SessionDep,
        runtime: RuntimeDep,
    ) -> DeliveryOut:
        return subscriptions.redeliver(session, webhook_id, int(delivery_id), runtime.now())

    @post(
        "/{webhook_id:str}/deliveries/redeliver-dead",
        operation_id="redeliver_dead_webhook_deliveries",
        summary="Send every dead delivery of a subscription again",
        status_code=200,
        opt=ADMIN,
        responses=problems(400, 404),
        sync_to_thread=True,
    )
    def redeliver_dead(
        self, webhook_id: WebhookId, session: SessionDep, runtime: RuntimeDep
    ) -> RedeliveryOut:
        return subscriptions.redeliver_dead(session, webhook_id, runtime.now())
