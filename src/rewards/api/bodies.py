"""Body dependencies: each handler's body is read, checked against its JSON Schema and
decoded by a dependency declared next to the handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from litestar import Request

from rewards.errors import FieldError, refusal
from rewards.schemas import SchemaRegistry

T = TypeVar("T")

UnsupportedMediaType = refusal("unsupported_media_type", "Unsupported Media Type", 415)
_UTF8 = {"utf-8", "utf8"}


def check_json_media_type(content_type: str | None) -> None:
    """A body must be sent as ``application/json`` or a ``+json`` type (charset UTF-8, the
    only one JSON has); anything else (text/plain, a form...) is a 415. A request without
    a Content-Type is read as JSON: it is not claiming to be something else."""
    if content_type is None:
        return
    media_type, *parameters = (part.strip().lower() for part in content_type.split(";"))
    charset = next(
        (p.partition("=")[2].strip('"') for p in parameters if p.startswith("charset=")), None
    )
    is_json = media_type == "application/json" or (
        "/" in media_type and media_type.endswith("+json")
    )
    if is_json and charset in (None, *_UTF8):
        return
    sent = f"{media_type}; charset={charset}" if is_json else media_type or "an empty Content-Type"
    raise UnsupportedMediaType(
        f"The body was sent as {sent}; send JSON as 'Content-Type: application/json' (UTF-8).",
        errors=[FieldError(path="Content-Type", message="not application/json")],
    )


def body_provider(name: str, struct: type[T]) -> Callable[[Request[Any, Any, Any]], Awaitable[T]]:
    """A dependency that reads, validates and decodes the request body."""

    async def provide(request: Request[Any, Any, Any]) -> T:
        check_json_media_type(request.headers.get("content-type"))
        registry: SchemaRegistry = request.app.state.runtime.schemas
        return registry.decode(name, await request.body(), struct)

    provide.__name__ = f"provide_{name.replace('/', '_')}_body"
    return provide
