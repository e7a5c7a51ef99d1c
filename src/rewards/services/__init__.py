"""Use cases. Each takes a session (and the runtime) as arguments, adds and flushes, and
never commits: the caller owns the transaction (one per request)."""
