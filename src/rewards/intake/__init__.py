"""Events in: recording and bulk, contact identification, contacts and wallets, estimates, the answers."""
