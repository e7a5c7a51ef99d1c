"""Schema migrations (Alembic), run programmatically: ``upgrade(url)`` brings any database
created by an earlier version of rewards up to the current schema."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

MIGRATIONS = Path(__file__).with_name("migrations")


def _config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def readable_problem(url: str) -> str | None:
    """Why ``url`` is not a rewards database at the current schema, or None. Creates
    nothing: a SQLite file that does not exist is reported, not made."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return f"{url!r} is not a database URL (sqlite:///FILE or postgresql+psycopg://...)"
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        return f"{shown}: rewards works on SQLite and PostgreSQL"
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if not path or path == ":memory:":
            return f"{shown} is an in-memory database: it holds no events"
        if not Path(path).is_file():
            return f"no database file {path} (give --database or REWARDS_DATABASE_URL)"
    engine = create_engine(url)
    try:
        found, wanted = current_revision(engine), head_revision(engine)
    except DBAPIError as error:  # unreachable, refused, not a database...
        reason = str(error.orig).strip().splitlines() or [type(error.orig).__name__]
        return f"cannot read {shown}: {reason[0]}"
    finally:
        engine.dispose()
    if found is None:
        return f"{shown} holds no rewards schema (run `rewards migrate` or `rewards serve` on it)"
    if found != wanted:
        return f"{shown} is at schema revision {found}, this rewards reads {wanted}: run `rewards migrate`"
    return None


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema; a no-op when already at head."""
    if revision == "head" and current_revision(engine) == head_revision(engine):
        return
    config = _config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def autogenerate(engine: Engine, message: str) -> None:
    """Developer helper: write a new revision from the difference to the tables."""
    config = _config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.revision(config, message=message, autogenerate=True)
