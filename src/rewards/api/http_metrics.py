"""Request metrics for ``/metrics``: count, duration, errors and requests in progress per
method, route template and status, under the names Litestar's Prometheus middleware uses
(``rewards_requests_total{app_name,method,path,status_code}`` ...).

Litestar's middleware builds a ``Request`` and looks every labelled series up again on
each request; it cost about 70 µs per purchase (5% of its CPU, bench/http_load.py).
Here the labelled series are looked up once per (method, route, status) and kept."""

from __future__ import annotations

import time
from functools import cache
from typing import Any, cast

from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send
from prometheus_client import Counter, Gauge, Histogram

APP_NAME = "rewards"
NOT_MEASURED = frozenset({"/metrics"})
LABELS = ["method", "path", "status_code", "app_name"]


class _Series:
    def __init__(self) -> None:
        self.count = Counter("rewards_requests", "Total requests", LABELS)
        self.errors = Counter("rewards_requests_error", "Total errors in requests", LABELS)
        self.duration = Histogram(
            "rewards_request_duration_seconds", "Request duration, in seconds", LABELS
        )
        self.in_progress = Gauge(
            "rewards_requests_in_progress",
            "Total requests currently in progress",
            ["method", "path", "app_name"],
            multiprocess_mode="livesum",
        )
        self._done: dict[tuple[str, str, int], tuple[Any, Any, Any | None]] = {}
        self._running: dict[tuple[str, str], Any] = {}

    def running(self, method: str, path: str) -> Any:
        found = self._running.get((method, path))
        if found is None:
            found = self._running[(method, path)] = self.in_progress.labels(method, path, APP_NAME)
        return found

    def done(self, method: str, path: str, status: int) -> tuple[Any, Any, Any | None]:
        key = (method, path, status)
        found = self._done.get(key)
        if found is None:
            values = (method, path, str(status), APP_NAME)
            errors = self.errors.labels(*values) if status >= 500 else None
            found = self._done[key] = (
                self.count.labels(*values),
                self.duration.labels(*values),
                errors,
            )
        return found


@cache
def _series() -> _Series:
    """Created once per process on first use (not at import), in the default registry."""
    return _Series()


def http_metrics(app: ASGIApp) -> ASGIApp:
    """The middleware (Litestar calls it with the route's ASGI app)."""
    series = _series()

    async def measured(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in NOT_MEASURED:
            await app(scope, receive, send)
            return
        http = cast("HTTPScope", scope)
        method = http["method"]
        # The route's template: a path that matched no route (a 404) is not a label of
        # its own, or the series would grow with every path anyone tries.
        path = http.get("path_template") or "<unmatched>"
        started = time.perf_counter()
        status = [500]  # what a handler that never answers is counted as

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        running = series.running(method, path)
        running.inc()
        try:
            await app(scope, receive, send_status)
        finally:
            running.dec()
            count, duration, errors = series.done(method, path, status[0])
            count.inc()
            duration.observe(time.perf_counter() - started)
            if errors is not None:
                errors.inc()

    return measured
