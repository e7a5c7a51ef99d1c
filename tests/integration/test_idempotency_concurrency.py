"""Idempotency under concurrency, on SQLite and PostgreSQL: requests with one external
reference sent together to ``rewards serve --workers 2`` (two processes), with proof
that they overlapped (tests.serving). The unique constraint on (external_system,
external_reference) decides, not a read-then-insert."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, BOTH, purchase_body
from tests.serving import RewardsServer, api, assert_overlapped, json_of, post_together

pytestmark = pytest.mark.parametrize("database_url", BOTH, indirect=True)


def events_of(server: RewardsServer, contact_id: str) -> list[dict[str, Any]]:
    with api(server, ADMIN_KEY) as client:
        page = json_of(client.get("/v1/events", params={"contact_id": contact_id}), 200)
    assert page["next_cursor"] is None
    events: list[dict[str, Any]] = page["items"]
    return events


def new_contact(server: RewardsServer) -> dict[str, Any]:
    with api(server, ADMIN_KEY) as client:
        contact: dict[str, Any] = json_of(client.post("/v1/contacts", json={}), 201)
    return contact


def test_fifty_concurrent_identical_requests_make_one_event(two_workers: RewardsServer) -> None:
    contact = new_contact(two_workers)
    body = purchase_body(
        contact["wallet"]["code"], external_system="pos", external_reference="SAME-1"
    )

    answers = post_together(two_workers, [("/v1/events/purchases", body)] * 50, ADMIN_KEY)

    assert_overlapped(answers, two_workers)
    assert Counter(a.status for a in answers) == {201: 1, 200: 49}, [
        a.body for a in answers if a.status not in (200, 201)
    ]
    assert len({a.body["id"] for a in answers}) == 1
    assert [event["id"] for event in events_of(two_workers, contact["id"])] == [
        answers[0].body["id"]
    ]


def test_concurrent_twins_with_different_bodies_get_one_201_and_409s(
    two_workers: RewardsServer,
) -> None:
    contact = new_contact(two_workers)
    bodies = [
        purchase_body(
            contact["wallet"]["code"],
            external_system="pos",
            external_reference="SAME-2",
            reference_number=f"R{i}",
        )
        for i in range(20)
    ]

    answers = post_together(two_workers, [("/v1/events/purchases", b) for b in bodies], ADMIN_KEY)

    assert_overlapped(answers, two_workers)
    assert Counter(a.status for a in answers) == {201: 1, 409: 19}, [
        a.body for a in answers if a.status not in (201, 409)
    ]
    assert {a.body["code"] for a in answers if a.status == 409} == {"idempotency_conflict"}
    [recorded] = [i for i, a in enumerate(answers) if a.status == 201]
    [event] = events_of(two_workers, contact["id"])
    assert event["id"] == answers[recorded].body["id"]
    assert event["reference_number"] == f"R{recorded}"  # the body that won is the one stored
