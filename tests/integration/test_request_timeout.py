"""``rewards serve`` closes connections whose request does not arrive whole within
REWARDS_REQUEST_TIMEOUT (uvicorn alone waits for ever: a slowloris holds sockets): half
a request line, headers without their end, a body shorter than its Content-Length, and
a connection that sends nothing, half of a kept-alive connection's next request. A whole
request is answered as usual."""

from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path

from tests.serving import HOST, rewards_serve

TIMEOUT = 1.5  # seconds, REWARDS_REQUEST_TIMEOUT of this server
STALLED = {
    "half a request line": b"GET /hea",
    "headers never finished": b"GET /health HTTP/1.1\r\nHost: x\r\n",
    "a body shorter than announced": b"POST /v1/contacts HTTP/1.1\r\nHost: x\r\n"
    b"Authorization: Bearer timeout-admin-key\r\nContent-Type: application/json\r\n"
    b'Content-Length: 100\r\n\r\n{"name": "A',
    "nothing at all": b"",
}


def read_until_closed(sock: socket.socket, deadline: float) -> bytes:
    """Everything the server sends until it closes the connection, waiting at most until
    ``deadline`` (a blocking read with a timeout: no sleep)."""
    received = b""
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"still open at the deadline; received {received!r}"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"still open at the deadline; received {received!r}") from None
        if not chunk:
            return received
        received += chunk


def test_requests_that_never_arrive_whole_are_closed(tmp_path: Path) -> None:
    env = {"REWARDS_REQUEST_TIMEOUT": str(TIMEOUT)}
    database_url = f"sqlite:///{tmp_path / 'served.db'}"
    log = tmp_path / "server.log"
    with rewards_serve(database_url, log, api_key="timeout-admin-key", environment=env) as served:
        opened = time.monotonic()
        stalled = {}
        for name, sent in STALLED.items():
            sock = socket.create_connection((HOST, served.port))
            sock.sendall(sent)
            stalled[name] = sock
        # a whole request is answered as usual; on the same kept-alive connection, half of
        # the next one is held to the deadline too
        kept = http.client.HTTPConnection(HOST, served.port, timeout=10)
        kept.request("GET", "/health")
        answer = kept.getresponse()
        assert answer.status == 200 and json.loads(answer.read())["status"] == "ok"
        assert kept.sock is not None
        kept.sock.sendall(b"GET /hea")
        stalled["half of a kept-alive connection's second request"] = kept.sock
        deadline = time.monotonic() + TIMEOUT + 10
        for name, sock in stalled.items():
            with sock:
                received = read_until_closed(sock, deadline)
            # closed by the deadline, not at once (the timer cannot fire early)
            assert time.monotonic() - opened >= TIMEOUT * 0.9, name
            head, _, body = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 Request Timeout"), (name, received)
            assert b"content-type: application/problem+json" in head.lower(), name
            problem = json.loads(body)
            assert problem["status"] == 408 and problem["code"] == "request_timeout", name
            assert "within 1.5 s" in problem["detail"], name
