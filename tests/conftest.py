"""Tests build up from settings: settings -> create_app(settings) -> client.

Every test gets a fresh database: a SQLite file under ``tmp_path`` (copied from a
template migrated once per run), or, for tests parametrized over ``database_url`` with
``REWARDS_TEST_POSTGRES_URL`` set, a PostgreSQL schema of this run, emptied per test.
Tests of the Redis rate counters use the Redis of ``REWARDS_TEST_REDIS_URL``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import create_engine, text

from rewards.app import create_app
from rewards.db.database import Database
from rewards.db.migrate import upgrade
from rewards.db.tables import metadata
from rewards.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
ADMIN_KEY = "test-admin-key"
INTEGRATOR_KEY = "test-integrator-key"
PROCESSOR_KEY = "test-processor-key"
ANALYST_KEY = "test-analyst-key"
API_KEYS = {
    ADMIN_KEY: "admin",
    INTEGRATOR_KEY: "integrator",
    PROCESSOR_KEY: "processor",
    ANALYST_KEY: "analyst",
}
POSTGRES_URL = os.environ.get("REWARDS_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("REWARDS_TEST_REDIS_URL")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    database = Database(f"sqlite:///{path}")
    upgrade(database.write_engine)
    database.dispose()
    return path


@contextmanager
def postgres_schema(prefix: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL schema, dropped afterwards. Skips the test
    without ``REWARDS_TEST_POSTGRES_URL`` (fails it when ``REWARDS_REQUIRE_POSTGRES`` is
    set: CI)."""
    if not POSTGRES_URL:
        if os.environ.get("REWARDS_REQUIRE_POSTGRES"):
            pytest.fail("REWARDS_REQUIRE_POSTGRES is set but REWARDS_TEST_POSTGRES_URL is not")
        pytest.skip("REWARDS_TEST_POSTGRES_URL not set")
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def own_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of this test alone, on each database (nothing migrated: a
    served ``rewards serve`` migrates it): for tests that change its schema or must not
    share the session's PostgreSQL schema with a server of their own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'own.db'}"
        return
    with postgres_schema("rewards_own") as url:
        yield url


@pytest.fixture(scope="session")
def postgres_schema_url() -> Iterator[str]:
    with postgres_schema("rewards_test") as url:
        database = Database(url)
        upgrade(database.write_engine)
        database.dispose()
        yield url


def _empty_postgres(url: str) -> None:
    engine = create_engine(url)
    tables = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite by default; tests that must hold on both databases parametrize it with
    ``@pytest.mark.parametrize("database_url", BOTH, indirect=True)``."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_schema_url")
        _empty_postgres(url)
        return url
    path = tmp_path / "rewards.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


BOTH = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def redis_url() -> str:
    """``REWARDS_TEST_REDIS_URL``, once its Redis answers. Skips the test without it or
    when it does not answer; fails it instead when ``REWARDS_REQUIRE_POSTGRES`` is set
    (CI, where every service's tests must run). Tests keep their counters apart by API
    keys of their own, never by emptying the Redis."""
    required = os.environ.get("REWARDS_REQUIRE_POSTGRES")
    if not REDIS_URL:
        if required:
            pytest.fail("REWARDS_REQUIRE_POSTGRES is set but REWARDS_TEST_REDIS_URL is not")
        pytest.skip("REWARDS_TEST_REDIS_URL not set")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as error:
        if required:
            pytest.fail(f"the Redis of REWARDS_TEST_REDIS_URL does not answer: {error}")
        pytest.skip(f"the Redis of REWARDS_TEST_REDIS_URL does not answer: {error}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def rulesets_dir() -> Path:
    """The HTTP tests' offers (tests/api/offer_rulesets): each pinned to its own unit or
    classification, so only the tests about an offer ever trigger it."""
    return ROOT / "tests" / "api" / "offer_rulesets"


@pytest.fixture
def settings(database_url: str, rulesets_dir: Path) -> Settings:
    return Settings(database_url=database_url, rulesets_dir=rulesets_dir, api_keys=API_KEYS)


@pytest.fixture
def app(settings: Settings) -> Litestar:
    return create_app(settings)


@pytest.fixture
def api_key() -> str:
    """The key ``client`` sends (a module may give its tests keys of their own)."""
    return ADMIN_KEY


@pytest.fixture
def client(app: Litestar, api_key: str) -> Iterator[TestClient[Litestar]]:
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {api_key}"
        yield client


# ---- body factories -------------------------------------------------------------------


def moment(days_ago: float = 0, **delta: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days_ago, **delta)).isoformat()


@pytest.fixture
def new_contact(client: TestClient[Litestar]) -> Callable[..., dict[str, Any]]:
    def make(**fields: Any) -> dict[str, Any]:
        response = client.post("/v1/contacts", json=fields)
        assert response.status_code == 201, response.text
        contact: dict[str, Any] = response.json()
        return contact

    return make


def purchase_body(wallet_code: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "contact": {"wallet_code": wallet_code},
        "performed_on": moment(),
        "performed_by_unit": "store-001",
        "reference_number": f"R-{uuid.uuid4().hex[:8]}",
        "products": [
            {"sku": "COFFEE-LATTE", "quantity": 2, "net_amount": "3.00", "vat_amount": "1.14"},
            {"sku": "CAKE-CHOC", "quantity": 1, "net_amount": 4.5, "vat_amount": 0.86},
        ],
    }
    body.update(fields)
    return body


def fund(client: TestClient[Litestar], contact: dict[str, Any], amount: str) -> None:
    """Credit a wallet through the test offer ``wallet-load`` (100% of a top-up)."""
    response = client.post(
        "/v1/events/financial-achievements",
        json={
            "contact": {"contact_id": contact["id"]},
            "performed_on": moment(),
            "classification": "top-up",
            "amount": amount,
            "payment_medium": {"brand": "loader"},
            "process_immediately": True,
        },
    )
    assert response.status_code == 201, response.text
    assert response.json()["awards"][0]["amount"] == float(amount)
