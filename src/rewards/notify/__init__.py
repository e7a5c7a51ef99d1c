"""Notifications out: the dispatcher that carries the transactional outbox's messages
(``db.notify_tables``) to webhooks and to a message broker, in commit order per contact,
at least once, each with the outbox row's id as its idempotency key."""
