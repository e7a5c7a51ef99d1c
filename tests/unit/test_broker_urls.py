"""Broker URLs (REWARDS_BROKER_URL, rewards consume --broker): the scheme says which
broker, ``?prefix=`` names everything rewards makes there; anything else is refused at
start-up with one line."""

from __future__ import annotations

import pytest

from rewards.settings import Settings, SettingsError, parse_broker_url


def test_nats_names() -> None:
    address = parse_broker_url("nats://127.0.0.1:4222")
    assert (address.kind, address.url) == ("nats", "nats://127.0.0.1:4222")
    assert address.stream == "REWARDS"
    assert address.subject("award.created") == "rewards.award.created"
    assert (address.intake_stream, address.intake_subjects) == ("REWARDS_IN", "rewards.in.>")
    assert (address.dlq_stream, address.dlq_subject) == ("REWARDS_DLQ", "rewards.dlq.in")
    assert address.durable == "rewards-consume"


def test_amqp_names_and_the_parameters_of_rewards_taken_off() -> None:
    address = parse_broker_url("amqp://u:secret@mq:5672/shop?prefix=loyalty&heartbeat=30")
    assert (address.kind, address.url) == ("amqp", "amqp://u:secret@mq:5672/shop?heartbeat=30")
    assert (address.exchange, address.queue) == ("loyalty", "loyalty.notifications")
    assert (address.intake_queue, address.dlq_queue) == ("loyalty.in", "loyalty.in.dlq")
    assert address.shown == "amqp://mq:5672/shop"  # no password in logs
    assert parse_broker_url("amqps://mq/?queue=").queue is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("kafka://broker:9092", "is not a broker URL"),
        ("redis://127.0.0.1:6379/0", "is not a broker URL"),
        ("nats://", "is not a broker URL"),
        ("nats://h:4222?prefix=Bad.Prefix", "prefix"),
        ("nats://h:4222?queue=x", "unknown parameter"),
    ],
)
def test_refused(url: str, says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        parse_broker_url(url)


def test_how_long_nats_waits_for_an_ack_is_a_parameter() -> None:
    assert parse_broker_url("nats://h:4222").ack_wait == 60
    assert parse_broker_url("nats://h:4222?ack_wait=5").ack_wait == 5
    with pytest.raises(SettingsError, match="ack_wait"):
        parse_broker_url("nats://h:4222?ack_wait=0")


def test_a_wrong_broker_url_is_refused_at_start_up() -> None:
    with pytest.raises(SettingsError, match="REWARDS_BROKER_URL"):
        Settings.from_env({"REWARDS_BROKER_URL": "kafka://broker:9092"})
    assert Settings.from_env({"REWARDS_BROKER_URL": "nats://h:4222"}).broker_url == "nats://h:4222"
