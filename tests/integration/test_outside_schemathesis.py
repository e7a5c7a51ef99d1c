"""Issue 16's acceptance: schemathesis run as an outsider would, from outside the repo's
configuration (a fresh directory, no schemathesis.toml), with ``--checks all`` and every
phase (stateful included), against a real ``rewards serve --workers 2`` on PostgreSQL
(the scripted attack and the in-process schemathesis run cover both databases; this run
costs a minute). Every check must hold, but one kind of answer: schemathesis' own
``positive_data_acceptance`` can only allow a status as a whole, so a schema-valid
request refused for a fact no schema can know (a random wallet code is an unknown
contact, API.md's 422 ``contact_not_found``) counts as its failure. Those, and only
those, are let through here: each must be a 400/422 whose problem ``code`` is one of the
documented business refusals (tests/api/test_schemathesis.py); any other failure of
any check, and any error of the run, fails the test.

Examples per operation: REWARDS_OUTSIDE_SCHEMATHESIS_EXAMPLES (default 5: the coverage and stateful phases do most of the work; 50 finds nothing more, see docs/decisions.md)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_schemathesis import BUSINESS_REFUSALS
from tests.conftest import postgres_schema
from tests.serving import rewards_serve

ADMIN_KEY = "outside-schemathesis-admin-key"
EXAMPLES = os.environ.get("REWARDS_OUTSIDE_SCHEMATHESIS_EXAMPLES", "5")


@pytest.fixture
def database_url() -> Iterator[str]:
    with postgres_schema("rewards_outside") as url:
        yield url


def _decoded(content: Any) -> Any:
    if isinstance(content, dict) and "$base64" in content:
        text = base64.b64decode(content["$base64"])
        try:
            return json.loads(text)
        except ValueError:
            return text.decode(errors="replace")
    return content


def _failures(report: Path) -> list[tuple[str, str, int, Any]]:
    """(check, operation, status, answer) of every failed check in the NDJSON report."""
    found = []
    for line in report.read_text().splitlines():
        event = json.loads(line)
        scenario = event.get("ScenarioFinished")
        if not scenario:
            continue
        recorder = scenario["recorder"]
        for case_id, checks in recorder.get("checks", {}).items():
            for check in checks:
                if check["status"] != "failure":
                    continue
                interaction = recorder.get("interactions", {}).get(case_id) or {}
                response = interaction.get("response") or {}
                found.append(
                    (
                        check["name"],
                        recorder.get("label", "?"),
                        response.get("status_code", 0),
                        _decoded(response.get("content")),
                    )
                )
    return found


def test_an_outside_schemathesis_run_finds_nothing_but_business_refusals(
    tmp_path: Path, database_url: str
) -> None:
    log = tmp_path / "server.log"
    outside = tmp_path / "outside"  # no schemathesis.toml here or above
    outside.mkdir()
    report = outside / "report.ndjson"
    with rewards_serve(database_url, log, api_key=ADMIN_KEY, workers=2) as server:
        argv = [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{server.url}/schema/openapi.json",
            "--checks",
            "all",
            "--header",
            f"Authorization: Bearer {ADMIN_KEY}",
            "--max-examples",
            EXAMPLES,
            "--generation-deterministic",
            "--workers",
            "1",  # hypothesis' lambda descriptions are not thread-safe
            "--report",
            "ndjson",
            "--report-ndjson-path",
            str(report),
        ]
        run = subprocess.run(
            argv, cwd=outside, capture_output=True, text=True, timeout=900, check=False
        )
    summary = run.stdout[-3000:]
    assert "Runtime Error" not in run.stdout and "Errors:" not in run.stdout, summary
    assert "Stateful" in run.stdout and "Coverage" in run.stdout, summary
    failures = _failures(report)
    unexpected = [
        failure
        for failure in failures
        if not (
            failure[0] == "positive_data_acceptance"
            and failure[2] in (400, 422)
            and isinstance(failure[3], dict)
            and failure[3].get("code") in BUSINESS_REFUSALS
        )
    ]
    assert not unexpected, f"{unexpected[:5]}\n{summary}"
    assert run.returncode in (0, 1), summary  # 1: the business refusals above
    assert "unhandled error" not in log.read_text()
