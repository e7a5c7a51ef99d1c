"""Issue 16's acceptance: a scripted bad-input run against a real ``rewards serve
--workers 2`` on SQLite and PostgreSQL gives no 5xx. Every answer is a problem-details
4xx (or a success where the input is merely odd, never harmful), the server keeps
answering, and its log holds no unhandled error.

The inputs follow the outside attack that found issue 16's defects: malformed and deeply
nested JSON, huge and non-finite numbers, extreme and malformed dates, control
characters and NUL, oversized bodies and arrays, invalid ids in paths and queries,
wrong content types and bad cursors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.conftest import moment, purchase_body
from tests.serving import api, rewards_serve

ADMIN_KEY = "bad-input-attack-admin-key"
JSON = {"Content-Type": "application/json"}


def _raw(body: Any) -> bytes:
    return json.dumps(body).encode()


def _bodies(wallet: str, contact_id: str) -> Iterator[tuple[str, str, bytes, dict[str, str]]]:
    """(method, path, body, headers) of every bad request."""
    purchase = purchase_body(wallet)
    purchases = "/v1/events/purchases"
    # Malformed and deeply nested JSON, on every kind of body.
    for path in (purchases, "/v1/contacts", "/v1/simulations", "/v1/events/bulk"):
        for raw in (b"{", b"[1,]", b"\xff\xfe", b'{"a": tru}', b"", b"null", b"[]", b'"x"'):
            yield "POST", path, raw, JSON
        for depth in (33, 1_000, 100_000):
            yield "POST", path, b"[" * depth + b"]" * depth, JSON
            yield "POST", path, b'{"a":' * depth + b"1" + b"}" * depth, JSON
    # Huge and non-finite numbers where amounts, quantities and integers go.
    for number in (b"1e400", b"-1e400", b"1e-400", b"NaN", b"Infinity", b"-0", b"9" * 5000):
        product = b'{"sku": "CAKE", "net_amount": ' + number + b"}"
        body = _raw(purchase).replace(b'"products": [', b'"products": [' + product + b", ", 1)
        yield "POST", purchases, body, JSON
        quantity = b'{"sku": "CAKE", "net_amount": 1, "quantity": ' + number + b"}"
        body = _raw(purchase).replace(b'"products": [', b'"products": [' + quantity + b", ", 1)
        yield "POST", purchases, body, JSON
        yield "POST", f"/v1/contacts/{contact_id}/otp", b'{"ttl_seconds": ' + number + b"}", JSON
    # Extreme and malformed dates, in bodies and queries.
    for when in (
        "0001-01-01T00:00:00+23:59",
        "9999-12-31T23:59:59-23:59",
        "0000-00-00T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T00:00:60Z",
        "2026-01-01",
        "yesterday",
        "2026-01-01T00:00:00+99:99",
        "2026-01-01T00:00:00." + "9" * 100 + "Z",
    ):
        yield "POST", purchases, _raw(purchase | {"performed_on": when}), JSON
        yield "POST", "/v1/evaluation-runs", _raw({"as_of": when}), JSON
        for query in ("/v1/events?performed_from=", "/v1/analytics/summary?to="):
            yield "GET", query + quote(when), b"", {}
    # Control characters and NUL in every kind of string, keys included.
    for text in ("\u0000", "a\u0000b", "\u001b[31m", "\u007f", "\u0008"):
        yield "POST", "/v1/contacts", _raw({"name": text, "code": f"C{text}"}), JSON
        yield "POST", purchases, _raw(purchase | {"external_reference": text}), JSON
        yield "POST", purchases, _raw(purchase | {text: 1}), JSON
        yield "GET", f"/v1/events?contact_id={quote(text)}", b"", {}
        yield "GET", f"/v1/events/{quote(text)}", b"", {}
    yield "POST", "/v1/contacts", b'{"name": "\\ud800"}', JSON  # a lone surrogate
    # Oversized bodies and arrays.
    yield "POST", "/v1/contacts", _raw({"name": "x" * 70_000}), JSON
    yield "POST", "/v1/events/bulk", b"[" + b"{}," * 1_000_000 + b"{}]", JSON
    many = [{"sku": f"S{i}", "net_amount": 1} for i in range(201)]
    yield "POST", purchases, _raw(purchase | {"products": many}), JSON
    yield "POST", "/v1/events/bulk", _raw([{"type": "web", "event": {}}] * 1001), JSON
    # Invalid ids in paths and queries.
    for bad in ("x", "00000000-0000-0000-0000-000000000000", "../../etc/passwd", "%00", "1" * 5000):
        for path in (
            f"/v1/events/{bad}",
            f"/v1/contacts/{bad}",
            f"/v1/wallets/{bad}",
            f"/v1/wallets/{bad}/transactions",
            f"/v1/purchase-estimates/{bad}",
            f"/v1/evaluation-runs/{bad}",
        ):
            yield "GET", path, b"", {}
        yield "POST", f"/v1/events/{bad}/cancel", b"", {}
        yield "POST", f"/v1/events/{bad}/returns", _raw({"products": []}), JSON
        yield "GET", f"/v1/events?contact_id={bad}", b"", {}
    for query in ("limit=0", "limit=-1", "limit=1e9", "limit=x", "type=nope", "state=x", "a=b"):
        yield "GET", f"/v1/events?{query}", b"", {}
    # Wrong content types.
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        yield "POST", purchases, _raw(purchase), {"Content-Type": content_type}
    yield "POST", purchases, b"name=x&code=y", {"Content-Type": "application/x-www-form-urlencoded"}
    # Bad cursors.
    for cursor in ("x", "!!!", "a" * 5000, "ayE", "k-1", "%ff%fe", "AAAA" * 30):
        for path in ("/v1/events", "/v1/offers", f"/v1/wallets/{wallet}/transactions"):
            yield "GET", f"{path}?cursor={cursor}", b"", {}


def test_a_scripted_bad_input_run_gives_no_5xx(tmp_path: Path, own_database_url: str) -> None:
    database_url = own_database_url
    log = tmp_path / "server.log"
    with (
        rewards_serve(database_url, log, api_key=ADMIN_KEY, workers=2) as server,
        api(server, ADMIN_KEY) as client,
    ):
        contact = client.post("/v1/contacts", json={"name": "Target", "code": "T-1"}).json()
        wallet, contact_id = contact["wallet"]["code"], contact["id"]
        assert client.post("/v1/events/purchases", json=purchase_body(wallet)).status_code == 201
        answers: list[tuple[int, str, str]] = []
        for method, path, body, headers in _bodies(wallet, contact_id):
            response = client.request(method, path, content=body or None, headers=headers)
            answers.append((response.status_code, method, path[:80]))
            assert response.status_code < 500, (method, path[:200], response.text[:500])
            if response.status_code >= 400:
                assert response.headers["content-type"].startswith("application/problem+json")
                assert response.json()["code"], response.text
        # The run was mostly refusals, and the server is still well and unharmed.
        assert len(answers) > 200 and sum(status >= 400 for status, *_ in answers) > 200
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        wallet_after = client.get(f"/v1/wallets/{wallet}").json()
        assert wallet_after["code"] == wallet
        assert (
            client.post(
                "/v1/events/purchases", json=purchase_body(wallet, performed_on=moment())
            ).status_code
            == 201
        )
    output = log.read_text()
    assert "unhandled error" not in output and "Traceback" not in output, output[-4000:]
