"""Money moves: the ledger (the only writer of balances and ledger rows), awards written, spending, returns, the wallet as answers show it."""
