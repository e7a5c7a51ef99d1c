"""Body dependencies: each handler's body is read, checked against its JSON Schema and
decoded by a dependency declared next to the handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from litestar import Request

from rewards.schemas import SchemaRegistry

T = TypeVar("T")


def body_provider(name: str, struct: type[T]) -> Callable[[Request[Any, Any, Any]], Awaitable[T]]:
    """A dependency that reads, validates and decodes the request body."""

    async def provide(request: Request[Any, Any, Any]) -> T:
        registry: SchemaRegistry = request.app.state.runtime.schemas
        return registry.decode(name, await request.body(), struct)

    provide.__name__ = f"provide_{name.replace('/', '_')}_body"
    return provide
