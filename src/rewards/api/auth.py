"""API keys: ``Authorization: Bearer <key>``; roles ``admin``, ``integrator``,
``processor`` and ``analyst`` (reads, simulations). Every ``/v1`` handler serves the roles its ``opt["roles"]`` names (default:
admin and integrator); the middleware refuses the others with a 403."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from litestar.connection import ASGIConnection
from litestar.datastructures import Headers
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.middleware.base import DefineMiddleware
from litestar.types import Guard

from rewards.runtime.ratelimit import CALLER, Caller, caller_id

# The console has its own login and session (rewards.console); "/" sends people there.
OPEN_PATHS = ["^/health$", "^/schema", "^/metrics$", "^/console(/|$)", "^/$"]
SECURITY_SCHEME = "BearerAuth"
INTEGRATOR_ROLES = ("admin", "integrator")  # a handler's roles unless its opt names others
PROCESSOR_ROLES = ("admin", "processor")


def _analyst_may(
    role: str, connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> bool:
    """An analyst reads everything (GET, HEAD) and may use the handlers that write nothing
    an analyst should not (simulations: ``opt["analysts"]``); no other write."""
    if role != "analyst":
        return False
    return connection.scope.get("method") in ("GET", "HEAD") or bool(
        handler.opt.get("analysts", False)
    )


def bearer_key(headers: Headers) -> str:
    """The key of ``Authorization: Bearer <key>``; a missing one is a 401."""
    scheme, _, key = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise NotAuthorizedException("Missing 'Authorization: Bearer <key>' header.")
    return key.strip()


class ApiKeyMiddleware(AbstractAuthenticationMiddleware):
    """Resolves the bearer key to a role; a missing or unknown key is a 401, a role the
    route handler does not serve (``opt["roles"]``; an ``analyst`` key reads every
    ``/v1`` resource and uses the handlers marked ``opt["analysts"]``) a 403. (Here rather than a guard:
    Litestar copies the handler for every guard call, measurable on the purchase path.) The caller
    (the key's hash and the client's address: the peer, or the address a trusted proxy
    forwards, as uvicorn's ``FORWARDED_ALLOW_IPS`` decides) is what OTP limits count."""

    def __init__(self, app: Any, keys: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._keys = dict(keys)

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        key = bearer_key(connection.headers)
        for known, role in self._keys.items():  # constant-time compare, every key
            if hmac.compare_digest(known.encode(), key.strip().encode()):
                handler = connection.route_handler
                serves = handler.opt.get("roles", INTEGRATOR_ROLES)
                if role not in serves and not _analyst_may(role, connection, handler):
                    raise PermissionDeniedException(
                        f"This endpoint needs a key of role {' or '.join(serves)}."
                    )
                client = connection.client.host if connection.client else "unknown"
                CALLER.set(Caller(key=caller_id(known), client=client))
                return AuthenticationResult(user=role, auth=key)
        raise NotAuthorizedException("Unknown API key.")


def api_key_middleware(keys: Mapping[str, str]) -> DefineMiddleware:
    return DefineMiddleware(ApiKeyMiddleware, keys=keys, exclude=OPEN_PATHS)


def admin_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard for the admin endpoints: integrator keys get 403."""
    if connection.user != "admin":
        raise PermissionDeniedException("This endpoint needs an admin key.")


def metrics_guard(metrics_key: str, keys: Mapping[str, str]) -> Guard:
    """Guard for /metrics when REWARDS_METRICS_KEY is set: that key (a scraper's) or an
    admin key; an integrator key is a 403, a missing or unknown one a 401."""
    allowed = {metrics_key: "metrics", **keys}

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        key = bearer_key(connection.headers).encode()
        roles = [
            role for known, role in allowed.items() if hmac.compare_digest(known.encode(), key)
        ]
        if not roles:
            raise NotAuthorizedException("Unknown metrics or API key.")
        if roles[0] not in ("metrics", "admin"):
            raise PermissionDeniedException("/metrics needs the metrics key or an admin key.")

    return guard
