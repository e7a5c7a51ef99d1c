"""Broker intake (``rewards consume``): customer events read from NATS JetStream or
RabbitMQ and recorded exactly as ``POST /v1/events/<type>`` records them (the same
schemas, the same intake writer, the same idempotency by external reference), each
message acknowledged only after the transaction that recorded it has committed."""
