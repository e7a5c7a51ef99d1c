"""``rewards rulesets diff A B`` (stored versions or folders) and ``rewards rulesets status``
(a running server's serving version and its refused reload)."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from rewards.cli import main
from rewards.runtime import watcher
from tests.api.test_analyst import runtime_of, with_extra_offers, write_atomically
from tests.conftest import BOTH, ROOT
from tests.serving import free_port, rewards_serve

Client = TestClient[Litestar]


@pytest.fixture(autouse=True)
def no_background_reloads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watcher, "POLL_SECONDS", 3600.0)


@pytest.fixture
def rulesets_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "rulesets"
    shutil.copytree(ROOT / "tests" / "api" / "offer_rulesets", folder)
    return folder


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_diff_between_stored_versions_and_a_folder(
    client: Client,
    app: Litestar,
    rulesets_dir: Path,
    database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = runtime_of(app).rulesets.version
    unpublished = tmp_path / "unpublished"
    shutil.copytree(rulesets_dir, unpublished)
    with_extra_offers(rulesets_dir, "1", "2")
    (rulesets_dir / "behaviour.yaml").unlink()
    second = client.post("/v1/rulesets/reload").json()["version"]
    capsys.readouterr()

    assert main(["rulesets", "diff", first, second, "--database", database_url]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"--- {first}/achievement.yaml\n+++ {second}/achievement.yaml\n@@ ")
    assert "+  - id: extra-one\n" in out
    assert f"--- {first}/behaviour.yaml\n+++ /dev/null\n" in out
    assert "definition.yaml" not in out  # unchanged files are left out

    # a stored version against a folder (a change not published yet): the same content
    assert main(["rulesets", "diff", first, str(unpublished), "--database", database_url]) == 0
    assert capsys.readouterr().out == f"{first} and {unpublished}: no differences\n"

    assert main(["rulesets", "diff", first, "0123456789ab", "--database", database_url]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "rewards rulesets diff: No stored ruleset version '0123456789ab'. (nor a folder; "
        "the stored versions: GET /v1/rulesets/history)\n"
    )


def test_diff_refuses_a_database_that_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.db"
    assert main(["rulesets", "diff", "a", "b", "--database", f"sqlite:///{missing}"]) == 1
    assert capsys.readouterr().err == (
        f"rewards rulesets diff: no database file {missing} (give --database or "
        "REWARDS_DATABASE_URL)\n"
    )
    assert not missing.exists()


def test_status_of_a_running_server_ok_then_degraded(
    tmp_path: Path, rulesets_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "status-admin-key"
    database_url = f"sqlite:///{tmp_path / 'served.db'}"
    with rewards_serve(
        database_url,
        tmp_path / "server.log",
        api_key=key,
        rulesets_dir=rulesets_dir,
    ) as server:
        version = httpx.get(f"{server.url}/health").json()["rulesets_version"]
        assert main(["rulesets", "status", "--url", server.url]) == 0
        assert capsys.readouterr().out == f"{server.url}: serving rulesets version {version}\n"

        path = rulesets_dir / "achievement.yaml"
        write_atomically(
            path, path.read_text().replace("award: {amount: 5}", "award: {amount: five}")
        )
        line = path.read_text().splitlines().index("    award: {amount: five}") + 1
        # refused by this reload (or by the server's watcher first: the same problems)
        refused = httpx.post(
            f"{server.url}/v1/rulesets/reload", headers={"Authorization": f"Bearer {key}"}
        )
        assert refused.status_code == 422
        assert main(["rulesets", "status", "--url", server.url]) == 1
        assert capsys.readouterr().out == (
            f"{server.url}: serving rulesets version {version}; the last reload was refused "
            f"(1 problem(s)), version {version} keeps serving:\n"
            f"  {path}:{line}:21: offer five-star-service: award.amount: must be a number, not 'five'\n"
        )

    nobody = f"http://127.0.0.1:{free_port()}"
    assert main(["rulesets", "status", "--url", nobody]) == 1
    assert capsys.readouterr().err.startswith(f"rewards rulesets status: {nobody} does not answer")
    assert main(["rulesets", "status", "--url", "file:///etc/passwd"]) == 2
