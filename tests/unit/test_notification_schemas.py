"""schemas/notifications/<type>.json are what the wire structs give (regenerate with
schemas/generate_notifications.py), one per type; and Standard Webhooks' signature test
vector holds for notify.signing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from jsonschema import Draft202012Validator

from rewards.notify import signing
from rewards.notify.messages import notification_schema
from rewards.wire import NOTIFICATION_DATA, NOTIFICATION_TYPES, LedgerMoved, Notification

FOLDER = Path(__file__).resolve().parents[2] / "schemas" / "notifications"


def test_one_file_per_type_and_no_other() -> None:
    assert {p.name for p in FOLDER.glob("*.json")} == {f"{t}.json" for t in NOTIFICATION_TYPES}
    assert set(NOTIFICATION_DATA) == set(NOTIFICATION_TYPES)


@pytest.mark.parametrize("notification_type", NOTIFICATION_TYPES)
def test_the_file_is_what_the_structs_give(notification_type: str) -> None:
    on_disk = json.loads((FOLDER / f"{notification_type}.json").read_text())
    assert on_disk == notification_schema(notification_type), (
        "out of date: run .venv/bin/python schemas/generate_notifications.py"
    )


def test_an_encoded_message_is_valid_under_its_schema() -> None:
    data = LedgerMoved(
        contact_id="c-1",
        event_id="e-1",
        entry_id=7,
        amount=Decimal("-2.50"),
        balance_after=Decimal("10"),
        spend_id="s-1",
    )
    body = Notification(
        id="42",
        type="spend.created",
        timestamp=datetime(2026, 3, 2, 10, tzinfo=UTC),
        contact_id="c-1",
        data=msgspec.to_builtins(data, builtin_types=(Decimal,)),
    )
    message = json.loads(msgspec.json.Encoder(decimal_format="number").encode(body))
    assert message["data"]["amount"] == -2.5
    validator = Draft202012Validator(notification_schema("spend.created"))
    assert list(validator.iter_errors(message)) == []
    message["type"] = "award.created"
    assert not validator.is_valid(message)


# Standard Webhooks' test vector (standard-webhooks/standard-webhooks, the libraries' tests).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def _headers(signature: str = VECTOR_SIGNATURE, stamp: int = VECTOR_TIMESTAMP) -> dict[str, str]:
    return {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(stamp),
        "webhook-signature": signature,
    }


def test_signing_gives_the_standard_webhooks_vector() -> None:
    assert signing.sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == (
        VECTOR_SIGNATURE
    )
    assert signing.headers(VECTOR_SECRET, VECTOR_ID, VECTOR_BODY, now=VECTOR_TIMESTAMP) == (
        _headers()
    )


def test_verify_accepts_the_vector_and_refuses_changes() -> None:
    assert signing.verify(VECTOR_SECRET, _headers(), VECTOR_BODY, now=VECTOR_TIMESTAMP)
    # one of several signatures (a secret being rotated), header names in any case
    rotated = {k.title(): v for k, v in _headers(f"v1,bm90IGl0 {VECTOR_SIGNATURE}").items()}
    assert signing.verify(VECTOR_SECRET, rotated, VECTOR_BODY, now=VECTOR_TIMESTAMP)
    assert not signing.verify(
        VECTOR_SECRET, _headers(), b'{"test": 2432232315}', now=VECTOR_TIMESTAMP
    )
    assert not signing.verify(signing.new_secret(), _headers(), VECTOR_BODY, now=VECTOR_TIMESTAMP)
    assert not signing.verify(
        VECTOR_SECRET, _headers("v1,AAAA" + VECTOR_SIGNATURE[7:]), VECTOR_BODY, now=VECTOR_TIMESTAMP
    )
    # replays: more than five minutes either side of now
    assert signing.verify(VECTOR_SECRET, _headers(), VECTOR_BODY, now=VECTOR_TIMESTAMP + 300)
    assert not signing.verify(VECTOR_SECRET, _headers(), VECTOR_BODY, now=VECTOR_TIMESTAMP + 301)
    assert not signing.verify(VECTOR_SECRET, _headers(), VECTOR_BODY, now=VECTOR_TIMESTAMP - 301)
    assert not signing.verify(VECTOR_SECRET, {}, VECTOR_BODY, now=VECTOR_TIMESTAMP)


def test_new_secrets_have_the_documented_shape() -> None:
    from rewards.notify.subscriptions import secret_problem

    assert secret_problem(signing.new_secret()) is None
    assert secret_problem(VECTOR_SECRET) is None
    assert secret_problem("whsec_" + "QUFB" * 7) is not None  # 21 bytes
    assert secret_problem("nope_" + VECTOR_SECRET[6:]) is not None


def test_the_readme_verification_example_agrees_with_signing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """README's standalone verify (stdlib only) accepts and refuses as notify.signing."""
    import re
    import time

    readme = (FOLDER.parents[1] / "README.md").read_text()
    code = re.search(r"```python\n(import base64, hashlib, hmac, time\n.*?)```", readme, re.S)
    assert code is not None
    namespace: dict[str, object] = {}
    exec(code.group(1), namespace)
    verify = namespace["verify"]
    monkeypatch.setattr(time, "time", lambda: float(VECTOR_TIMESTAMP))
    assert verify(VECTOR_SECRET, _headers(), VECTOR_BODY)  # type: ignore[operator]
    assert not verify(VECTOR_SECRET, _headers(), VECTOR_BODY + b" ")  # type: ignore[operator]
    monkeypatch.setattr(time, "time", lambda: float(VECTOR_TIMESTAMP + 301))
    assert not verify(VECTOR_SECRET, _headers(), VECTOR_BODY)  # type: ignore[operator]
