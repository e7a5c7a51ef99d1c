"""Persistence: SQLModel tables, engines and sessions, migrations, small typed queries."""
