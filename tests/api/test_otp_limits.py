"""OTP guessing through HTTP (runtime.ratelimit), with the counters in the database
(SQLite, PostgreSQL) and in Redis: a wrong guess costs its caller one attempt, a valid
code costs nothing, every path that tries an OTP takes from the same budget, and
without its counters the service refuses OTPs (503) but nothing else. Guesses from
several clients and worker processes: tests/integration/test_otp_guessing.py."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from rewards.app import create_app
from rewards.settings import Budget, Settings, SettingsError
from tests.conftest import moment, purchase_body
from tests.serving import free_port

Client = TestClient[Litestar]
PER_CLIENT = 3  # wrong guesses per window (an hour) per client of a key; per key: 6

STORES = pytest.mark.parametrize(
    ("database_url", "counters"),
    [("sqlite", "database"), ("postgres", "database"), ("sqlite", "redis")],
    indirect=True,
)


@pytest.fixture
def counters(request: pytest.FixtureRequest) -> str | None:
    """Where the app counts: the database (None) or the test Redis (its URL)."""
    return str(request.getfixturevalue("redis_url")) if request.param == "redis" else None


@pytest.fixture
def api_key() -> str:
    return f"otp-{uuid.uuid4().hex}"  # counters of its own, also in a shared Redis


@pytest.fixture
def settings(database_url: str, rulesets_dir: Any, counters: str | None, api_key: str) -> Settings:
    return Settings(
        database_url=database_url,
        rulesets_dir=rulesets_dir,
        api_keys={api_key: "admin"},
        redis_url=counters,
        otp_guesses_per_key=Budget(2 * PER_CLIENT, 3600),
        otp_guesses_per_client=Budget(PER_CLIENT, 3600),
    )


def issue(client: Client, contact: dict[str, Any]) -> str:
    response = client.post(f"/v1/contacts/{contact['id']}/otp", json={})
    assert response.status_code == 201, response.text
    code: str = response.json()["otp"]
    return code


def never_issued(*issued: str) -> Iterator[str]:
    """Six-digit codes that identify nobody: none of these was issued."""
    return (f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in issued)


def achievement(client: Client, code: str) -> httpx.Response:
    return client.post(
        "/v1/events/achievements",
        json={
            "contact": {"otp": code},
            "performed_on": moment(),
            "classification": "5-star-service",
        },
    )


@STORES
def test_a_wrong_guess_costs_its_caller_and_a_valid_code_nothing(
    client: Client, app: Litestar, new_contact: Any
) -> None:
    contact = new_contact()
    codes = [issue(client, contact) for _ in range(PER_CLIENT + 1)]
    for code in codes:  # more valid codes than the budget: each is given back
        used = client.post("/v1/events/purchases", json=purchase_body("x", contact={"otp": code}))
        assert used.status_code == 201, used.text
    wrong = never_issued(*codes)
    guesses = [achievement(client, next(wrong)) for _ in range(PER_CLIENT + 1)]
    assert [r.status_code for r in guesses] == [422] * PER_CLIENT + [429]
    assert {r.json()["code"] for r in guesses[:PER_CLIENT]} == {"otp_invalid"}
    limited = guesses[-1]
    assert limited.json()["code"] == "rate_limited"
    assert "otp-guesses-client" in limited.json()["detail"]
    assert limited.headers["RateLimit-Limit"] == str(PER_CLIENT)
    assert limited.headers["RateLimit-Remaining"] == "0"
    assert 0 < int(limited.headers["Retry-After"]) <= 3600
    assert limited.headers["RateLimit-Reset"] == limited.headers["Retry-After"]
    # The caller that guessed is refused its next code too, valid or not, until its
    # window ends; then it has its budget again.
    valid = issue(client, contact)
    assert achievement(client, valid).status_code == 429
    runtime = app.state.runtime
    real_clock = runtime.clock
    runtime.clock = lambda: real_clock() + timedelta(hours=1)
    assert achievement(client, issue(client, contact)).status_code == 201
    assert achievement(client, next(wrong)).status_code == 422


def _guessers(wallet: str) -> dict[str, Callable[[Client, str], int]]:
    """Every request that can try an OTP, as (client, code) -> status of the attempt."""

    def purchase(client: Client, code: str) -> int:
        body = purchase_body("x", contact={"otp": code})
        return client.post("/v1/events/purchases", json=body).status_code

    def referral(client: Client, code: str) -> int:
        body = {"referred": {"otp": code}, "referred_by": {"wallet_code": wallet}}
        return client.post(
            "/v1/events/referrals", json=body | {"performed_on": moment()}
        ).status_code

    def spend_request(client: Client, code: str) -> int:
        body = {"contact": {"otp": code}, "purchase_event_id": str(uuid.uuid4())}
        response = client.post("/v1/events/spend-requests", json=body | {"performed_on": moment()})
        return response.status_code

    def estimate(client: Client, code: str) -> int:
        body = {
            "contact": {"otp": code},
            "performed_by_unit": "store-003",
            "products": [{"sku": "BASKET", "net_amount": "100.00"}],
        }
        return client.post("/v1/purchase-estimates", json=body).status_code

    def bulk(client: Client, code: str) -> int:
        items = [{"type": "purchase", "event": purchase_body("x", contact={"otp": code})}]
        response = client.post("/v1/events/bulk", json=items)
        assert response.status_code == 200, response.text
        status: int = response.json()["items"][0]["status"]
        return status

    return {
        "purchase": purchase,
        "achievement": lambda client, code: achievement(client, code).status_code,
        "referral": referral,
        "spend_request": spend_request,
        "estimate": estimate,
        "bulk": bulk,
    }


@STORES
def test_every_request_that_tries_an_otp_takes_from_the_budget(
    client: Client, app: Litestar, new_contact: Any
) -> None:
    wallet = new_contact()["wallet"]["code"]
    guessers = _guessers(wallet)
    wrong = never_issued()
    runtime = app.state.runtime
    real_clock = runtime.clock
    for hours, (name, guess) in enumerate(guessers.items()):
        # Each path in a window of its own: a full budget, spent through that path alone.
        runtime.clock = lambda hours=hours: real_clock() + timedelta(hours=hours)
        statuses = [guess(client, next(wrong)) for _ in range(PER_CLIENT + 1)]
        assert statuses == [422] * PER_CLIENT + [429], name
    # And they share one budget: a miss through each of three paths spends it.
    runtime.clock = lambda: real_clock() + timedelta(hours=len(guessers))
    mixed = [guessers[name](client, next(wrong)) for name in ("estimate", "bulk", "referral")]
    assert mixed == [422] * PER_CLIENT
    assert guessers["purchase"](client, next(wrong)) == 429


@STORES
def test_a_bulk_gets_what_is_left_and_each_item_past_it_is_refused(
    client: Client, new_contact: Any
) -> None:
    contact = new_contact()
    valid = issue(client, contact)
    wrong = never_issued(valid)
    assert achievement(client, next(wrong)).status_code == 422  # PER_CLIENT - 1 left
    items = [
        {"type": "purchase", "event": purchase_body("x", contact={"otp": valid})},
        {"type": "purchase", "event": purchase_body(contact["wallet"]["code"])},
        *(
            {"type": "purchase", "event": purchase_body("x", contact={"otp": next(wrong)})}
            for _ in range(3)
        ),
    ]
    response = client.post("/v1/events/bulk", json=items)
    assert response.status_code == 200, response.text
    answers = response.json()["items"]
    assert [item["status"] for item in answers] == [201, 201, 422, 429, 429]
    assert answers[3]["problem"]["code"] == "rate_limited"
    # The valid code was given back after the bulk: one miss is left.
    assert achievement(client, next(wrong)).status_code == 422
    assert achievement(client, next(wrong)).status_code == 429


def test_without_its_counters_the_service_refuses_otps_and_nothing_else(
    database_url: str, rulesets_dir: Any, api_key: str
) -> None:
    unreachable = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = Settings(
        database_url=database_url,
        rulesets_dir=rulesets_dir,
        api_keys={api_key: "admin"},
        redis_url=unreachable,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {api_key}"
        contact = client.post("/v1/contacts", json={}).json()
        issued = client.post(f"/v1/contacts/{contact['id']}/otp", json={})
        guess = achievement(client, "123456")
        # Requests without an OTP never touch the counters.
        by_wallet = client.post(
            "/v1/events/purchases", json=purchase_body(contact["wallet"]["code"])
        )
    for refused in (issued, guess):
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "rate_limits_unavailable"
        assert "127.0.0.1" not in refused.text  # the cause is logged, not answered
    assert by_wallet.status_code == 201, by_wallet.text


@pytest.mark.parametrize("raw", ["10", "0/60", "10/0", "ten/60", "10/-5", "10/60/2"])
def test_a_malformed_budget_stops_the_app_naming_its_variable(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REWARDS_OTP_GUESSES_PER_CLIENT", raw)
    with pytest.raises(SettingsError, match=r"REWARDS_OTP_GUESSES_PER_CLIENT: .* is not"):
        create_app()
