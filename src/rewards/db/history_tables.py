"""The ruleset versions every process loaded (runtime.history): ``ruleset_versions``
holds each version once, with its files; ``ruleset_loads`` one row per load (a process
starting, a reload through the API, the folder watcher, a command)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from rewards.db.types import BigIntPK, UTCDateTime


class RulesetVersion(SQLModel, table=True):
    """One ruleset version (the content hash awards record), stored the first time any
    process loaded it; never modified. ``number`` orders versions by that first load."""

    __tablename__ = "ruleset_versions"

    number: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    version: str = Field(unique=True, max_length=64)
    # file name -> its text, exactly as loaded (the version is the hash of these)
    files: dict[str, str] = Field(sa_column=Column(JSON, nullable=False))
    loaded_at: datetime = Field(sa_type=UTCDateTime)  # the first load
    source: str = Field(max_length=16)  # start | reload | watcher | cli
    # Who loaded it: the API key's role and short hash (never the key), or the trigger.
    loaded_by: str = Field(max_length=100)


class RulesetLoad(SQLModel, table=True):
    """A process loaded a version (the same version loaded again is a new row)."""

    __tablename__ = "ruleset_loads"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    version: str = Field(max_length=64, index=True)
    loaded_at: datetime = Field(sa_type=UTCDateTime, index=True)
    source: str = Field(max_length=16)
    loaded_by: str = Field(max_length=100)
