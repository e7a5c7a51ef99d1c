"""docs/analysts.md section 6 (history, diff, pinned explanations, status), replayed on a
real server with the shipped rulesets: every example of the section is what the
commands and the API answer (versions, the server's address and the folder aside)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from rewards.cli import main
from tests.api.test_analyst import write_atomically
from tests.conftest import ROOT
from tests.serving import rewards_serve

SECTION = (ROOT / "docs" / "analysts.md").read_text().split("## 6. History", 1)[1]
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", SECTION, re.S)
OLD, NEW = "2f1c8e9a4b7d", "9d04e6b1c3a5"  # the versions the guide shows
DOC_URL = "http://127.0.0.1:8000"


def block(starting: str) -> list[list[str]]:
    """The lines of each of the guide's example blocks that start with ``starting``."""
    found = [text.splitlines() for _, text in BLOCKS if text.startswith(starting)]
    assert found, starting
    return found


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    write_atomically(path, text.replace(old, new))


def test_the_history_section_of_the_analysts_guide(
    own_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "rulesets"
    shutil.copytree(ROOT / "rulesets", folder)
    key = "guide-admin-key"
    with rewards_serve(
        own_database_url, tmp_path / "server.log", api_key=key, rulesets_dir=folder
    ) as server:
        api = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )
        old = api.get("/health").json()["rulesets_version"]
        staff = api.post("/v1/contacts", json={"segments": ["staff"]}).json()
        course = api.post(
            "/v1/events/achievements",
            json={
                "contact": {"contact_id": staff["id"]},
                "performed_on": "2026-03-02T12:00:00+02:00",
                "classification": "course-completed",
                "process_immediately": True,
            },
        ).json()
        assert [(a["offer_id"], a["amount"]) for a in course["awards"]] == [
            ("staff-course-completed", 15)
        ]

        # raised from 15 to 20: name, award, example
        path = folder / "achievement.yaml"
        text = path.read_text()
        for before, after in [
            ("name: EUR 15 to staff", "name: EUR 20 to staff"),
            ("award: {amount: 15}", "award: {amount: 20}"),
            ("expect: {award: 15}", "expect: {award: 20}"),
        ]:
            assert text.count(before) == 1, before
            text = text.replace(before, after)
        write_atomically(path, text)
        reloaded = api.post("/v1/rulesets/reload")
        assert reloaded.status_code == 200, reloaded.text
        new = api.get("/health").json()["rulesets_version"]
        assert new != old

        def as_in_the_guide(output: str) -> list[str]:
            text = output.replace(old, OLD).replace(new, NEW).replace(server.url, DOC_URL)
            text = text.replace(str(folder), "rulesets")
            return [re.sub(r"\.yaml:\d+:\d+:", ".yaml:L:C:", line) for line in text.splitlines()]

        # rewards rulesets diff: the headers and every changed line of the guide
        capsys.readouterr()
        assert main(["rulesets", "diff", old, new, "--database", own_database_url]) == 0
        shown = as_in_the_guide(capsys.readouterr().out)
        [guide] = block(f"$ rewards rulesets diff {OLD} {NEW}")
        assert guide[1:3] == shown[:2]

        def changed(lines: list[str]) -> list[str]:
            return [line for line in lines if re.match(r"[-+](?![-+]{2} )", line)]

        assert changed(guide[1:]) == changed(shown)

        # the explanation of the course completed before the change
        [(_, example)] = [(kind, text) for kind, text in BLOCKS if kind == "json"]
        explanation = api.get(f"/v1/events/{course['id']}", params={"explain": "true"}).json()[
            "explanation"
        ]
        expected: dict[str, Any] = json.loads(example.replace(OLD, old))
        assert {k: explanation[k] for k in expected} == expected

        # rewards rulesets status: serving, then a refused change
        ok, degraded = block("$ rewards rulesets status")
        assert main(["rulesets", "status", "--url", server.url]) == 0
        assert as_in_the_guide(capsys.readouterr().out) == ok[1:]
        edit(path, "award: {amount: 20}", "award: {amount: twenty}")
        assert api.post("/v1/rulesets/reload").status_code == 422
        assert main(["rulesets", "status", "--url", server.url]) == 1
        assert as_in_the_guide(capsys.readouterr().out) == [
            re.sub(r"\.yaml:\d+:\d+:", ".yaml:L:C:", line) for line in degraded[1:]
        ]
        health = httpx.get(f"{server.url}/health").json()
        assert (health["status"], health["rulesets_version"]) == ("degraded", new)
