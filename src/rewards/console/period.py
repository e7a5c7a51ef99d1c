"""The period form of the dashboard and the offers page: ``from`` and ``to`` dates
(UTC days, both included) in the query string; the last 30 days when absent, and a
message beside a field that does not hold a date."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

import msgspec
from litestar.params import QueryParameter

from rewards.analyst.trends import MAX_DAYS, Period

FromParam = Annotated[str | None, QueryParameter(name="from", required=False)]
ToParam = Annotated[str | None, QueryParameter(name="to", required=False)]


class PeriodForm(msgspec.Struct, kw_only=True):
    period: Period
    values: dict[str, str]  # as typed, for the form
    errors: dict[str, str]  # field -> message


def _date(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text.strip()) if text and text.strip() else None
    except ValueError:
        return None


def read_period(
    start_text: str | None, end_text: str | None, today: date | None = None
) -> PeriodForm:
    default = Period.last_days(today or datetime.now(UTC).date())
    start, end = _date(start_text), _date(end_text)
    errors = {}
    if start_text and start is None:
        errors["from"] = "Enter a date as YYYY-MM-DD."
    if end_text and end is None:
        errors["to"] = "Enter a date as YYYY-MM-DD."
    start, end = start or default.start, end or default.end
    if not errors and end < start:
        errors["to"] = "The end comes before the start."
    elif not errors and (end - start).days >= MAX_DAYS:
        errors["to"] = f"At most {MAX_DAYS} days at once."
    period = default if errors else Period(start=start, end=end)
    values = {
        "from": start_text if "from" in errors and start_text else period.start.isoformat(),
        "to": end_text if "to" in errors and end_text else period.end.isoformat(),
    }
    return PeriodForm(period=period, values=values, errors=errors)
