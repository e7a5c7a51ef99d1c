"""The HTTP protocol of ``rewards serve``: uvicorn's h11 protocol with a deadline for each
request (REWARDS_REQUEST_TIMEOUT).

uvicorn closes a keep-alive connection that stays idle between requests
(``timeout_keep_alive``) but has no limit for a request that has begun: a request line
sent in halves, headers never finished, a body shorter than its Content-Length, or a
connection that never sends a byte each hold a socket and its buffers for as long as the
client likes (a slowloris). Here a request must arrive whole within the deadline, counted
from its first byte (for a connection's first request: from the connection); otherwise
the answer is a 408 problem, when nothing of an answer was sent yet, and the connection
is closed. Once a request has arrived whole, the time the app takes is not limited.
"""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

import h11
import msgspec
from uvicorn import Config
from uvicorn.protocols.http.h11_impl import H11Protocol

from rewards.errors import PROBLEM_MEDIA_TYPE, http_problem
from rewards.settings import Settings

# Until the request is whole: nothing yet (IDLE) or its body (SEND_BODY).
_RECEIVING = (h11.IDLE, h11.SEND_BODY)


@cache
def timeout_response(seconds: float) -> bytes:
    body = msgspec.json.encode(
        http_problem(408, f"The request did not arrive whole within {seconds:g} s.")
    )
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        f"content-type: {PROBLEM_MEDIA_TYPE}\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class ServeConfig(Config):
    """uvicorn's configuration with the request deadline, for the protocol below (it
    travels to the worker processes with the configuration)."""

    def __init__(self, app: Any, *, request_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, http=RequestDeadlineProtocol, **kwargs)
        self.request_timeout = request_timeout


class RequestDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol; a request that does not arrive whole in time is closed."""

    def __init__(self, config: Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.request_timeout: float = getattr(
            config, "request_timeout", Settings.request_timeout_seconds
        )
        self.request_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state not in _RECEIVING:  # whole (or refused, or closed)
            self._disarm()
        elif self.request_deadline is None:
            # the first bytes of the next request on a kept-alive connection (a request
            # that arrives whole at once, the usual case, needs no timer at all)
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self.request_deadline = self.loop.call_later(self.request_timeout, self._expired)

    def _disarm(self) -> None:
        if self.request_deadline is not None:
            self.request_deadline.cancel()
            self.request_deadline = None

    def _expired(self) -> None:
        self.request_deadline = None
        if self.transport.is_closing() or self.conn.their_state not in _RECEIVING:
            return
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):  # no answer begun
            self.transport.write(timeout_response(self.request_timeout))
        self.transport.close()
