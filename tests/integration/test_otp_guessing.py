"""OTP guessing against real servers (runtime.ratelimit): tills are clients with
addresses of their own (127.0.0.x), requests really overlap.

- A till that guesses spends its own budget: a till whose customers read out valid
  codes at the same time is never refused; the key's budget bounds all tills together.
- ``rewards serve --workers 2``: the wrong guesses both workers accept together never
  pass the key's budget (the counters are shared: the database, or Redis), where each
  worker used to count on its own.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar

from rewards.settings import Budget, Settings
from tests.api.test_otp_limits import never_issued
from tests.conftest import API_KEYS, BOTH, moment, postgres_schema, purchase_body
from tests.integration.test_group_commit import HEADERS, serving
from tests.serving import HOST, connection_owners, rewards_serve, workers

PER_KEY = 10
PER_CLIENT = 4


@pytest.fixture
def settings(database_url: str, rulesets_dir: Path) -> Settings:
    return Settings(
        database_url=database_url,
        rulesets_dir=rulesets_dir,
        api_keys=API_KEYS,
        otp_guesses_per_key=Budget(PER_KEY, 3600),
        otp_guesses_per_client=Budget(PER_CLIENT, 3600),
    )


def till(url: str, address: str) -> httpx.Client:
    """A client whose connections come from ``address`` (a loopback address)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=url, headers=HEADERS, timeout=60, transport=transport)


def otp_purchase(code: str) -> dict[str, Any]:
    return purchase_body("x", contact={"otp": code})


def overlapped(first: list[tuple[float, float]], second: list[tuple[float, float]]) -> bool:
    """Whether a request of ``first`` was in flight while one of ``second`` was."""
    return any(a < d and c < b for a, b in first for c, d in second)


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_a_guessing_till_spends_its_own_budget_not_the_other_tills(app: Litestar) -> None:
    with (
        serving(app) as url,
        till(url, "127.0.0.2") as guesser,
        till(url, "127.0.0.3") as honest,
    ):
        contacts = [honest.post("/v1/contacts", json={}).json() for _ in range(2)]
        codes = [
            honest.post(f"/v1/contacts/{contact['id']}/otp", json={}).json()["otp"]
            for contact in contacts
            for _ in range(3)
        ]
        wrong = never_issued(*codes)
        sent = {"guesser": [next(wrong) for _ in range(2 * PER_CLIENT)], "honest": codes}
        clients = {"guesser": guesser, "honest": honest}
        answers: dict[str, list[tuple[float, float, int]]] = {"guesser": [], "honest": []}
        start = threading.Barrier(2)

        def send(name: str) -> None:
            start.wait()
            for code in sent[name]:
                began = time.monotonic()
                status = clients[name].post("/v1/events/purchases", json=otp_purchase(code))
                answers[name].append((began, time.monotonic(), status.status_code))

        threads = [threading.Thread(target=send, args=(name,)) for name in sent]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

        assert [status for *_, status in answers["guesser"]] == [422] * PER_CLIENT + [
            429
        ] * PER_CLIENT
        assert [status for *_, status in answers["honest"]] == [201] * len(codes)
        assert overlapped(
            [(a, b) for a, b, _ in answers["guesser"]], [(a, b) for a, b, _ in answers["honest"]]
        ), "the two tills' requests never overlapped"

        # The key's budget bounds every till together: two more guessing tills spend
        # what is left of it (PER_KEY - PER_CLIENT), then every till is refused an OTP.
        with till(url, "127.0.0.4") as second, till(url, "127.0.0.5") as third:
            statuses = [
                second.post("/v1/events/purchases", json=otp_purchase(next(wrong))).status_code
                for _ in range(PER_CLIENT)
            ]
            statuses += [
                third.post("/v1/events/purchases", json=otp_purchase(next(wrong))).status_code
                for _ in range(PER_CLIENT)
            ]
            left = PER_KEY - 2 * PER_CLIENT
            assert statuses == [422] * (PER_CLIENT + left) + [429] * (PER_CLIENT - left)
        code = honest.post(f"/v1/contacts/{contacts[0]['id']}/otp", json={}).json()["otp"]
        refused = honest.post("/v1/events/purchases", json=otp_purchase(code))
        assert refused.status_code == 429 and refused.headers["RateLimit-Limit"] == str(PER_KEY)
        # Other identifiers are not limited: the till goes on with wallet codes.
        by_wallet = honest.post(
            "/v1/events/purchases", json=purchase_body(contacts[0]["wallet"]["code"])
        )
        assert by_wallet.status_code == 201, by_wallet.text


WORKERS_PER_KEY = 12
WORKERS_PER_CLIENT = 3
GUESSES_PER_TILL = 4
DAY = 86_400


def _guess(connection: http.client.HTTPConnection, key: str, code: str) -> int:
    body = {"contact": {"otp": code}, "performed_on": moment(), "classification": "5-star-service"}
    connection.request(
        "POST",
        "/v1/events/achievements",
        body=json.dumps(body),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    response = connection.getresponse()
    response.read()
    return response.status


@pytest.mark.parametrize("store", ["sqlite", "postgres", "redis"])
def test_two_workers_accept_no_more_wrong_guesses_than_the_key_budget(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    key = f"workers-{uuid.uuid4().hex}"  # counters of its own, also in a shared Redis
    database_url = f"sqlite:///{tmp_path / 'otp.db'}"
    env = {
        "REWARDS_OTP_GUESSES_PER_KEY": f"{WORKERS_PER_KEY}/{DAY}",
        "REWARDS_OTP_GUESSES_PER_CLIENT": f"{WORKERS_PER_CLIENT}/{DAY}",
    }
    with ExitStack() as stack:
        if store == "postgres":
            database_url = stack.enter_context(postgres_schema("rewards_otp"))
        if store == "redis":
            env["REWARDS_REDIS_URL"] = str(request.getfixturevalue("redis_url"))
        served = stack.enter_context(
            rewards_serve(
                database_url, tmp_path / "server.log", api_key=key, workers=2, environment=env
            )
        )
        pids = workers(served.pid)
        # Keep-alive connections, each from a till (an address) of its own, until both
        # workers hold at least two of them (the kernel spreads connections).
        tills: list[tuple[http.client.HTTPConnection, int]] = []
        for i in range(32):
            connection = http.client.HTTPConnection(
                HOST, served.port, timeout=60, source_address=(f"127.0.0.{10 + i}", 0)
            )
            stack.callback(connection.close)
            connection.request("GET", "/health")
            connection.getresponse().read()
            (owner,) = connection_owners(served.port, pids, [connection])
            assert owner is not None, "connection not found in one worker"
            tills.append((connection, owner))
            held = [owner for _, owner in tills]
            if len(tills) >= 8 and len(set(held)) == 2 and min(map(held.count, set(held))) >= 2:
                break
        assert len({owner for _, owner in tills}) == 2, "one worker holds every connection"

        wrong = never_issued()  # nothing was issued: every code is a wrong guess
        codes = [[next(wrong) for _ in range(GUESSES_PER_TILL)] for _ in tills]
        answers: list[list[tuple[float, float, int]]] = [[] for _ in tills]
        start = threading.Barrier(len(tills))

        def send(i: int) -> None:
            connection = tills[i][0]
            start.wait()
            for code in codes[i]:
                began = time.monotonic()
                status = _guess(connection, key, code)
                answers[i].append((began, time.monotonic(), status))

        first_second = int(time.time())
        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(tills))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        last_second = int(time.time())

    statuses = [status for each in answers for *_, status in each]
    assert len(statuses) == len(tills) * GUESSES_PER_TILL
    assert set(statuses) <= {422, 429}, statuses
    accepted = statuses.count(422)
    windows = last_second // DAY - first_second // DAY + 1  # 2 only across midnight UTC
    if windows == 1:
        assert accepted == WORKERS_PER_KEY, statuses
    assert accepted <= WORKERS_PER_KEY * windows, statuses
    for each in answers:  # and no till had more than its own budget
        assert [status for *_, status in each].count(422) <= WORKERS_PER_CLIENT * windows
    # Both workers answered guesses, and requests of the two were in flight together.
    by_worker: dict[int, list[tuple[float, float]]] = {}
    for (_, owner), each in zip(tills, answers, strict=True):
        by_worker.setdefault(owner, []).extend((a, b) for a, b, _ in each)
    assert len(by_worker) == 2
    first, second = by_worker.values()
    assert overlapped(first, second), "the two workers' requests never overlapped"
