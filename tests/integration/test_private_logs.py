"""A served process logs no personal data, errors included: a real ``rewards serve``
whose database refuses a contact and a purchase in a way that quotes the row (a
PostgreSQL trigger raising ``Failing row contains (...)``, a SQLite trigger failing the
statement that carries them), plus the usual traffic with card numbers and a wrong key. The whole output of
the server is scanned."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text

from tests.conftest import purchase_body
from tests.serving import api, rewards_serve

ADMIN_KEY = "private-logs-admin-key-5c1e"
NAME = "Ann Example-Smith"
CIM = "CIM-778899"
CARD = "4917555566667777"
TRAPPED_REFERENCE = f"REF-{CIM}"


def _set_traps(database_url: str) -> None:
    """Make the database fail (not refuse: a failure is a 500) on the contact named NAME
    and the purchase with TRAPPED_REFERENCE; on PostgreSQL with messages that quote the
    row, on SQLite with the statement's parameters as the only carrier of the values."""
    engine = create_engine(database_url)
    with engine.begin() as connection:
        if database_url.startswith("sqlite"):
            for name, table, condition in (
                ("trap_contact", "contacts", f"NEW.name = '{NAME}'"),
                ("trap_event", "events", f"NEW.external_reference = '{TRAPPED_REFERENCE}'"),
            ):
                connection.execute(
                    text(
                        f"CREATE TRIGGER {name} BEFORE INSERT ON {table} WHEN {condition} "
                        "BEGIN INSERT INTO trap_missing_table VALUES (1); END"
                    )
                )
        else:
            connection.execute(
                text(
                    "CREATE FUNCTION trap() RETURNS trigger AS $$ BEGIN "
                    "IF NEW.name = '" + NAME + "' THEN RAISE EXCEPTION 'refused %', NEW.name "
                    "USING DETAIL = 'Failing row contains (' || NEW.name || ', ' || NEW.cim || ')'; "
                    "END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            connection.execute(
                text(
                    "CREATE FUNCTION trap_event() RETURNS trigger AS $$ BEGIN "
                    "IF NEW.external_reference = '" + TRAPPED_REFERENCE + "' THEN "
                    "RAISE EXCEPTION 'refused %', NEW.external_reference; "
                    "END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            connection.execute(
                text(
                    "CREATE TRIGGER trap_contact BEFORE INSERT ON contacts "
                    "FOR EACH ROW EXECUTE FUNCTION trap()"
                )
            )
            connection.execute(
                text(
                    "CREATE TRIGGER trap_event BEFORE INSERT ON events "
                    "FOR EACH ROW EXECUTE FUNCTION trap_event()"
                )
            )
    engine.dispose()


def test_the_served_log_carries_no_personal_data_even_on_database_errors(
    tmp_path: Path, own_database_url: str
) -> None:
    database_url = own_database_url
    log = tmp_path / "server.log"
    environment = {"REWARDS_LOG_EXCEPTION_MESSAGES": ""}  # the default: messages withheld
    with (
        rewards_serve(database_url, log, api_key=ADMIN_KEY, environment=environment) as server,
        api(server, ADMIN_KEY) as client,
    ):
        contact = client.post("/v1/contacts", json={"name": "Bo", "cim": "CIM-1"}).json()
        wallet = contact["wallet"]["code"]
        card = {"payment_medium": {"identifier": CARD}}
        recorded = client.post("/v1/events/purchases", json=purchase_body(wallet, **card))
        assert recorded.status_code == 201, recorded.text
        _set_traps(database_url)
        refused = client.post("/v1/contacts", json={"name": NAME, "cim": CIM})
        assert refused.status_code == 500, refused.text
        assert refused.json()["code"] == "internal_error"
        assert NAME not in refused.text and CIM not in refused.text
        trapped = client.post(
            "/v1/events/purchases",
            json=purchase_body(wallet, external_reference=TRAPPED_REFERENCE, **card),
        )
        assert trapped.status_code == 500, trapped.text
        client.post("/v1/events/purchases", json={"broken": f"{NAME} {CARD}"})
        client.get("/v1/events", headers={"Authorization": "Bearer not-a-key-9f8e7d"})
    output = log.read_text()
    # The errors were logged (with what an operator needs), so the scan below means something.
    assert output.count("unhandled error on POST") >= 2, output[-4000:]
    if database_url.startswith("sqlite"):
        assert "sqlite error SQLITE_ERROR" in output, output[-4000:]
    else:
        assert "sqlstate P0001" in output, output[-4000:]
    for secret in (NAME, CIM, CARD, ADMIN_KEY, "not-a-key-9f8e7d", "Example-Smith"):
        assert secret not in output, f"{secret!r} in the server log:\n{output[-4000:]}"
