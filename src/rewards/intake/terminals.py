"""A purchase named by its terminal: made at the first unit of the one merchant listing
that terminal (PLATFORM.md). Every purchase path resolves it before anything else."""

from __future__ import annotations

import msgspec

from rewards.engine import Rulesets
from rewards.errors import AmbiguousTerminal, FieldError, UnknownTerminal
from rewards.wire import PurchaseIn


def at_unit(rulesets: Rulesets, body: PurchaseIn) -> PurchaseIn:
    """``body`` with ``performed_by_unit`` set from ``performed_by_terminal`` (422 when no
    merchant, or several, list the terminal); unchanged when it names its unit."""
    if body.performed_by_terminal is None:
        return body
    unit = unit_of_terminal(rulesets, body.performed_by_terminal)
    return msgspec.structs.replace(body, performed_by_unit=unit)


def unit_of_terminal(rulesets: Rulesets, terminal: str) -> str:
    """The first unit of the one merchant listing ``terminal``; else a 422 at
    ``/performed_by_terminal`` (``unknown_terminal``, ``ambiguous_terminal``)."""
    merchants = rulesets.terminal_merchants(terminal)
    if len(merchants) != 1:
        error = UnknownTerminal if not merchants else AmbiguousTerminal
        owners = ", ".join(m.id for m in merchants)
        raise error(
            f"Terminal {terminal!r} is listed by {owners or 'no merchant'}.",
            errors=[
                FieldError(
                    path="/performed_by_terminal",
                    message="no merchant lists this terminal"
                    if not merchants
                    else f"shared by merchants {owners}: name performed_by_unit instead",
                )
            ],
        )
    return merchants[0].units[0]
