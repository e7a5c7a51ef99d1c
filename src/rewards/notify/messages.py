"""What the messages look like, for those who receive them: the JSON Schema of each
notification type's envelope (``schemas/notifications/<type>.json``, written from the
structs of ``wire`` by ``schemas/generate_notifications.py``; a test keeps them equal),
and the OpenAPI ``webhooks`` entries that publish them with the signature headers."""

from __future__ import annotations

import copy
from typing import Any

import msgspec
from litestar.openapi.spec import (
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    PathItem,
    RequestBody,
    Schema,
)

from rewards.wire import NOTIFICATION_DATA, NOTIFICATION_TYPES, Notification

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_BASE = "https://rewards.example/schemas/notifications/"

# The three Standard Webhooks headers of every attempt (notify.signing).
HEADERS = {
    "webhook-id": "The message id (the envelope's `id`): the same on every attempt; dedupe on it.",
    "webhook-timestamp": "Unix seconds of this attempt; refuse one more than five minutes "
    "from your clock (replays).",
    "webhook-signature": "`v1,<base64 HMAC-SHA256>` of `<webhook-id>.<webhook-timestamp>.<body>` "
    "keyed with the base64-decoded part of the subscription's `whsec_` secret; several "
    "space-separated signatures may come (secret rotation): accept if one matches.",
}


def _with_formats(struct: type[Any], schema: dict[str, Any]) -> None:
    """msgspec writes a datetime as a bare string and a Decimal as a decimal string; on
    the wire timestamps are RFC 3339 (``date-time``) and money a JSON number."""
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    properties = schema["properties"]
    for field in info.fields:
        kinds = [
            kind.type if isinstance(kind, msgspec.inspect.Metadata) else kind
            for kind in (
                field.type.types
                if isinstance(field.type, msgspec.inspect.UnionType)
                else (field.type,)
            )
        ]
        target = properties[field.encode_name]
        for kind in kinds:
            if isinstance(kind, msgspec.inspect.DateTimeType):
                branch = next(
                    (b for b in target.get("anyOf", [target]) if b.get("type") == "string"), target
                )
                branch["format"] = "date-time"
            elif isinstance(kind, msgspec.inspect.DecimalType):
                branch = next(
                    (b for b in target.get("anyOf", [target]) if b.get("type") == "string"), target
                )
                branch.pop("format", None)
                branch["type"] = "number"


def notification_schema(notification_type: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a ``notification_type`` message body: the
    envelope with that type's ``data``."""
    data_struct = NOTIFICATION_DATA[notification_type]
    (_refs, components) = msgspec.json.schema_components([Notification, data_struct])
    envelope = copy.deepcopy(components["Notification"])
    _with_formats(Notification, envelope)
    data = copy.deepcopy(components[data_struct.__name__])
    _with_formats(data_struct, data)
    envelope["properties"]["type"] = {"const": notification_type}
    envelope["properties"]["data"] = {"$ref": f"#/$defs/{data_struct.__name__}"}
    envelope.pop("title", None)
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": f"{SCHEMA_BASE}{notification_type}.json",
        "title": notification_type,
        **envelope,
        # the data struct, and the structs it holds (a refused reload's errors)
        "$defs": {
            **{name: c for name, c in components.items() if name != "Notification"},
            data_struct.__name__: data,
        },
    }


def openapi_webhooks() -> dict[str, PathItem]:
    """OpenAPI 3.1 ``webhooks``: one POST per notification type, what a subscriber's
    endpoint receives. The body's schema is the file of ``schemas/notifications/``, put
    in when the document is published (``api.docs``), as request bodies are."""
    headers = [
        Parameter(
            name=name,
            param_in="header",
            required=True,
            description=description,
            schema=Schema(type=OpenAPIType.STRING),
        )
        for name, description in HEADERS.items()
    ]
    return {
        notification_type: PathItem(
            post=Operation(
                operation_id=f"notification_{notification_type.replace('.', '_')}",
                summary=f"{notification_type}: sent to subscriptions that want it",
                tags=["webhooks"],
                parameters=list(headers),
                request_body=RequestBody(
                    required=True,
                    description=f"The `{notification_type}` message "
                    f"(schemas/notifications/{notification_type}.json).",
                    content={"application/json": OpenAPIMediaType(schema=Schema())},
                ),
                responses={
                    "2XX": OpenAPIResponse(description="Received: the delivery is done."),
                    "410": OpenAPIResponse(
                        description="Gone: the subscription is switched off, no retries."
                    ),
                    "default": OpenAPIResponse(
                        description="Anything else, or no answer within the timeout: "
                        "retried with backoff (a `Retry-After` in seconds is honoured).",
                        headers={
                            "Retry-After": OpenAPIHeader(
                                schema=Schema(type=OpenAPIType.INTEGER), required=False
                            )
                        },
                    ),
                },
            )
        )
        for notification_type in NOTIFICATION_TYPES
    }
