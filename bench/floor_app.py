"""The floor for bench/http_load.py: the least a purchase intake could cost on this stack.

    FLOOR_DATABASE_URL=sqlite:////tmp/floor.db \
        .venv/bin/python -m uvicorn floor_app:create_app --factory --app-dir bench

A minimal Litestar app with one endpoint, ``POST /floor``, that reads the same purchase
body the benchmark sends to ``POST /v1/events/purchases``, decodes it with msgspec into a
typed struct (no JSON Schema, no rules, no ledger), and writes one row in one
transaction through the service's own :class:`rewards.db.database.Database` (same
engines, pool, SQLite pragmas and ``BEGIN IMMEDIATE``), in a worker thread like the
service's handlers; it answers 201 with a small JSON body. Same framework, same server,
same driver, same durability: whatever the service spends above this is its own.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from decimal import Decimal

import msgspec
from anyio import to_thread
from litestar import Litestar, Request, get, post
from sqlalchemy import JSON, Column, DateTime, MetaData, String, Table, insert

from rewards.db.database import Database

metadata = MetaData()
floor_events = Table(
    "floor_events",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("external_reference", String(200)),
    Column("performed_on", DateTime(timezone=True)),
    Column("body", JSON, nullable=False),
)


class Identifier(msgspec.Struct, kw_only=True):
    wallet_code: str | None = None
    contact_id: str | None = None


class Line(msgspec.Struct, kw_only=True):
    sku: str
    net_amount: Decimal
    quantity: Decimal = Decimal(1)
    vat_amount: Decimal = Decimal(0)


class Medium(msgspec.Struct, kw_only=True):
    brand: str | None = None
    type: str | None = None
    identifier: str | None = None


class Purchase(msgspec.Struct, kw_only=True):
    contact: Identifier
    performed_on: datetime
    performed_by_unit: str
    reference_number: str
    products: list[Line]
    payment_medium: Medium | None = None
    process_immediately: bool = False
    external_system: str | None = None
    external_reference: str | None = None


class Accepted(msgspec.Struct):
    id: str
    lines: int


_decoder = msgspec.json.Decoder(Purchase)


def create_app() -> Litestar:
    database = Database(os.environ.get("FLOOR_DATABASE_URL", "sqlite:///floor.db"))

    def on_startup() -> None:
        metadata.create_all(database.write_engine)

    def record(purchase: Purchase, raw: bytes) -> Accepted:
        row_id = str(uuid.uuid4())
        with database.transaction() as session:
            session.execute(
                insert(floor_events).values(
                    id=row_id,
                    external_reference=purchase.external_reference,
                    performed_on=purchase.performed_on,
                    body=msgspec.json.decode(raw),
                )
            )
        return Accepted(id=row_id, lines=len(purchase.products))

    @post("/floor", status_code=201, sync_to_thread=False)
    async def floor(request: Request) -> Accepted:  # type: ignore[type-arg]
        raw = await request.body()
        purchase = _decoder.decode(raw)
        return await to_thread.run_sync(record, purchase, raw)

    @get("/health", sync_to_thread=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return Litestar(
        route_handlers=[floor, health],
        on_startup=[on_startup],
        on_shutdown=[database.dispose],
        debug=False,
    )
