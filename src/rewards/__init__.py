"""rewards: a self-hostable loyalty rules engine."""
