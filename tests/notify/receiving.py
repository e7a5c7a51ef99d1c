"""A local webhook receiver for the tests: a threaded HTTP server that keeps every request
it gets (headers, body, when) and answers as the test's policy says."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.serving import HOST, free_port


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float
    status: int

    @property
    def message(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    url: str
    policy: Callable[[dict[str, Any], int], int]  # (message, attempt of its id) -> status
    got: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted(self) -> list[dict[str, Any]]:
        """Messages answered 2xx, in arrival order, deduplicated by id (first kept)."""
        seen: set[str] = set()
        found = []
        with self.lock:
            for item in self.got:
                message = item.message
                if 200 <= item.status < 300 and message["id"] not in seen:
                    seen.add(message["id"])
                    found.append(message)
        return found

    def attempts_of(self, message_id: str) -> list[Received]:
        with self.lock:
            return [r for r in self.got if r.headers.get("webhook-id") == message_id]


@contextmanager
def receiving(
    policy: Callable[[dict[str, Any], int], int] = lambda _m, _n: 200, port: int | None = None
) -> Iterator[Receiver]:
    port = port or free_port()
    receiver = Receiver(url=f"http://{HOST}:{port}/hook", policy=policy)
    counts: dict[str, int] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            message = json.loads(body)
            with receiver.lock:
                counts[message["id"]] = counts.get(message["id"], 0) + 1
                attempt = counts[message["id"]]
            status = receiver.policy(message, attempt)
            with receiver.lock:
                receiver.got.append(
                    Received(
                        headers={k.lower(): v for k, v in self.headers.items()},
                        body=body,
                        at=time.monotonic(),
                        status=status,
                    )
                )
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            return

    server = ThreadingHTTPServer((HOST, port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
