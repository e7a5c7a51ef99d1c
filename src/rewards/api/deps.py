"""Dependency providers: the runtime, and one database session per request.

The session dependency owns the transaction: commit when the handler returns, roll back
when it raises. Reads (GET) use the read engine; everything else the write engine.
Blocking database calls run in a worker thread, never on the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated, Any

from anyio import to_thread
from litestar import Request
from litestar.di import NamedDependency, Provide
from litestar.params import QueryParameter, SkipValidation
from sqlmodel import Session

from rewards.db.database import Database
from rewards.runtime.context import Runtime


def provide_runtime(request: Request[Any, Any, Any]) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def provide_session(request: Request[Any, Any, Any]) -> AsyncGenerator[Session, None]:
    database: Database = request.app.state.database
    session = database.session(write=request.method not in ("GET", "HEAD"))
    try:
        yield session
    except BaseException:
        await to_thread.run_sync(_end, session, False)
        raise
    else:
        await to_thread.run_sync(_end, session, True)


def _end(session: Session, commit: bool) -> None:
    """Commit (or roll back) and close in one trip to a worker thread; the close runs
    whatever happens, so the connection (and SQLite's writer gate) is always given back."""
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()


# Parameters injected by name; their values are ours, not user input, so not validated.
# A page cursor is what this service issued (base64url); empty is the first page.
CursorParameter = Annotated[
    str | None,
    QueryParameter(
        description="`next_cursor` of the previous page; empty or absent: the first page.",
        pattern=r"^[A-Za-z0-9_-]*$",
        max_length=64,
    ),
]
SessionDep = NamedDependency[SkipValidation[Session]]
RuntimeDep = NamedDependency[SkipValidation[Runtime]]

DEPENDENCIES = {
    "runtime": Provide(provide_runtime, sync_to_thread=False),
    "session": Provide(provide_session),
}
