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
    terminal = body.performed_by_terminal
    if terminal is None:
        return body
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
    return msgspec.structs.replace(body, performed_by_unit=merchants[0].units[0])
