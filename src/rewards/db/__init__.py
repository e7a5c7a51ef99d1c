"""Persistence: SQLModel tables, column types, engines and sessions (the SQLite writer
gate), migrations, ids, bulk inserts for runs, keyset cursors."""
