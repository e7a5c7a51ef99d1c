"""Typed settings, read from the environment once. No other module reads ``os.environ``."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

ROLES = ("admin", "integrator", "processor", "analyst")
_REPO_RULESETS = Path(__file__).resolve().parents[2] / "rulesets"


class SettingsError(ValueError):
    """A configuration value is malformed."""


def parse_api_keys(raw: str) -> dict[str, str]:
    """``"admin:k1,integrator:k2"`` -> ``{"k1": "admin", "k2": "integrator"}``; roles:
    ``admin``, ``integrator`` (POS and apps), ``processor`` (card transaction processors),
    ``analyst`` (reads everything, runs simulations; no other writes)."""
    keys: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        role, sep, key = item.partition(":")
        if not sep or role not in ROLES or not key:
            raise SettingsError(
                f"REWARDS_API_KEYS: {item.split(':')[0]!r} is not '<role>:<key>' with role "
                f"{', '.join(ROLES)}"
            )
        keys[key] = role
    return keys


def generate_api_keys() -> dict[str, str]:
    """One fresh admin, integrator and analyst key (used when none are configured): enough
    to try the API and to log in to the console."""
    return {secrets.token_urlsafe(24): role for role in ("admin", "integrator", "analyst")}


def format_api_keys(keys: Mapping[str, str]) -> str:
    return ",".join(f"{role}:{key}" for key, role in keys.items())


@dataclass(frozen=True)
class Budget:
    """At most ``count`` in each fixed window of ``seconds``."""

    count: int
    seconds: int


def parse_budget(name: str, raw: str) -> Budget:
    """``"100/3600"`` -> ``Budget(100, 3600)``: a count per window of seconds."""
    count, sep, seconds = (part.strip() for part in raw.partition("/"))
    if not (sep and count.isdigit() and seconds.isdigit() and int(count) > 0 and int(seconds) > 0):
        raise SettingsError(f"{name}: {raw!r} is not '<count>/<seconds>' with both above 0")
    return Budget(int(count), int(seconds))


_BROKER_SCHEMES: dict[str, Literal["nats", "amqp"]] = {
    "nats": "nats",
    "tls": "nats",
    "amqp": "amqp",
    "amqps": "amqp",
}
_BROKER_PREFIX = re.compile(r"^[a-z0-9][a-z0-9_-]{0,40}$")


@dataclass(frozen=True, kw_only=True)
class BrokerAddress:
    """A broker URL (``REWARDS_BROKER_URL``, ``rewards consume --broker``) and the names
    every stream, subject, exchange and queue of rewards takes from its ``prefix`` query
    parameter (default ``rewards``; tests use a prefix of their own). The query
    parameters of rewards are taken off ``url``, the address the client connects to.

    NATS JetStream: notifications on ``<prefix>.<type>`` in stream ``<PREFIX>`` (one
    subject per notification type, not ``<prefix>.>``: streams may not overlap, and
    intake and its dead letters live beside it), customer events in on
    ``<prefix>.in.<type>`` (stream ``<PREFIX>_IN``, durable pull consumer
    ``<prefix>-consume``), refused ones on ``<prefix>.dlq.in`` (stream ``<PREFIX>_DLQ``).
    RabbitMQ: notifications to the topic exchange ``<prefix>`` (routing key ``<type>``),
    kept in queue ``<prefix>.notifications`` (``?queue=NAME`` another, ``?queue=`` none);
    customer events in from queue ``<prefix>.in`` (bound to exchange ``<prefix>.in`` with
    ``in.*``), refused ones in ``<prefix>.in.dlq``."""

    kind: Literal["nats", "amqp"]
    url: str
    prefix: str = "rewards"
    queue: str | None = None  # amqp: the queue every notification is kept in (None: none)
    # nats: seconds a message taken by `rewards consume` may go unacknowledged before
    # JetStream gives it to another consumer (``?ack_wait=``): a killed consumer's share
    # comes back after this. RabbitMQ gives it back when the connection drops.
    ack_wait: float = 60.0

    @property
    def stream(self) -> str:
        return self.prefix.upper().replace("-", "_")

    def subject(self, notification_type: str) -> str:
        return f"{self.prefix}.{notification_type}"

    @property
    def intake_stream(self) -> str:
        return f"{self.stream}_IN"

    @property
    def intake_subjects(self) -> str:
        return f"{self.prefix}.in.>"

    @property
    def dlq_stream(self) -> str:
        return f"{self.stream}_DLQ"

    @property
    def dlq_subject(self) -> str:
        return f"{self.prefix}.dlq.in"

    @property
    def durable(self) -> str:
        return f"{self.prefix}-consume"

    @property
    def exchange(self) -> str:
        return self.prefix

    @property
    def intake_exchange(self) -> str:
        return f"{self.prefix}.in"

    @property
    def intake_queue(self) -> str:
        return f"{self.prefix}.in"

    @property
    def dlq_queue(self) -> str:
        return f"{self.prefix}.in.dlq"

    @property
    def shown(self) -> str:
        """The URL without its password, for logs."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def parse_broker_url(url: str) -> BrokerAddress:
    """``nats://host:4222`` (or ``tls://``) or ``amqp://user:pass@host:5672/vhost`` (or
    ``amqps://``), with the optional query parameters ``prefix`` and (amqp) ``queue``; a
    SettingsError naming what is wrong otherwise."""
    try:
        parts = urlsplit(url)
    except ValueError as error:
        raise SettingsError(f"REWARDS_BROKER_URL: {error}") from None
    kind = _BROKER_SCHEMES.get(parts.scheme.lower())
    if kind is None or not parts.hostname:
        raise SettingsError(
            f"REWARDS_BROKER_URL: {parts.scheme or url!r} is not a broker URL: use "
            "nats://host:4222 (NATS JetStream) or amqp://user:password@host:5672/ (RabbitMQ)"
        )
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    prefix = query.pop("prefix", "rewards")
    if not _BROKER_PREFIX.match(prefix):
        raise SettingsError(
            f"REWARDS_BROKER_URL: prefix {prefix!r} is not lower-case letters, digits, - or _"
        )
    queue: str | None = None
    ack_wait = 60.0
    if kind == "amqp":
        queue = query.pop("queue", f"{prefix}.notifications") or None
    elif "ack_wait" in query:
        raw = query.pop("ack_wait")
        try:
            ack_wait = float(raw)
        except ValueError:
            ack_wait = 0.0
        if not 1 <= ack_wait <= 3600:
            raise SettingsError(f"REWARDS_BROKER_URL: ack_wait {raw!r} is not 1 to 3600 seconds")
    if kind == "nats" and query:
        raise SettingsError(f"REWARDS_BROKER_URL: unknown parameter(s) {', '.join(query)}")
    bare = urlunsplit(parts._replace(query=urlencode(query)))
    return BrokerAddress(kind=kind, url=bare, prefix=prefix, queue=queue, ack_wait=ack_wait)


@dataclass(frozen=True, kw_only=True)
class Settings:
    database_url: str = "sqlite:///rewards.db"
    rulesets_dir: Path = _REPO_RULESETS
    api_keys: Mapping[str, str] = field(default_factory=dict)  # key -> role
    max_body_bytes: int = 64 * 1024
    # POST /v1/events/bulk: 1,000 realistic purchases (5 lines, a payment medium, an
    # external reference) take about 700 KB; the limit leaves room for longer ones.
    bulk_max_body_bytes: int = 2 * 1024 * 1024
    otp_ttl_seconds: int = 300
    # Wrong OTP guesses accepted (answered 422) per API key and per client of a key,
    # counted across every worker process (runtime.ratelimit, docs/otp.md).
    otp_guesses_per_key: Budget = Budget(100, 3600)
    otp_guesses_per_client: Budget = Budget(10, 600)
    redis_url: str | None = None  # rate counters in Redis instead of the database
    auto_migrate: bool = True  # upgrade the database schema at start-up
    evaluation_interval_seconds: int = 0  # >0: scheduled evaluation runs inside serve
    sql_echo: bool = False
    # Engine rulesets a worker may build by reloads before it restarts (0: never); see
    # runtime.reload. Each one keeps 80-560 KB that durable-rules never gives back.
    recycle_after_rulesets: int = 150
    supervised: bool = False  # a worker of `rewards serve` (which sets REWARDS_SUPERVISED)
    # /metrics is open (like /health: counts only) unless a key is set; then it needs
    # that key (the scraper's) or an admin key.
    metrics_key: str | None = None
    # `rewards serve`: a request must arrive whole (line, headers, body) within this many
    # seconds of its first byte, or it gets a 408 and the connection is closed.
    request_timeout_seconds: float = 30.0
    # The console (/console): its session cookie is encrypted with this secret (default:
    # derived from the API keys, which every worker shares), lasts this long, and is sent
    # only over HTTPS when secure (set it behind TLS).
    console_secret: str | None = None
    console_session_seconds: int = 8 * 3600
    console_secure_cookie: bool = False
    # Notifications out (rewards.notify): the broker the dispatcher also publishes to
    # (nats://... for JetStream, amqp://... for RabbitMQ), subscriptions from a file,
    # whether `rewards serve` runs the dispatcher (else `rewards dispatch` does), and
    # the webhook retry schedule: full-jitter exponential backoff from the base, capped,
    # until the attempts or the time run out (then the delivery is dead-lettered).
    broker_url: str | None = None
    webhooks_file: Path | None = None
    dispatch_in_serve: bool = True
    dispatch_lease_seconds: float = 30.0  # a dispatcher that dies is replaced after this
    # The part of the time the dispatcher inside rewards serve may be busy (it rests in
    # proportion after each round): intake keeps the database; rewards dispatch: all.
    dispatch_share: float = 0.25
    webhook_timeout_seconds: float = 15.0
    webhook_retry_base_seconds: float = 10.0
    webhook_retry_cap_seconds: float = 6 * 3600.0
    webhook_max_attempts: int = 20
    webhook_give_up_seconds: float = 24 * 3600.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            database_url=env.get("REWARDS_DATABASE_URL") or defaults.database_url,
            rulesets_dir=Path(env.get("REWARDS_RULESETS_DIR") or defaults.rulesets_dir),
            api_keys=parse_api_keys(env.get("REWARDS_API_KEYS", "")),
            otp_ttl_seconds=_integer(env, "REWARDS_OTP_TTL_SECONDS", defaults.otp_ttl_seconds),
            otp_guesses_per_key=_budget(
                env, "REWARDS_OTP_GUESSES_PER_KEY", defaults.otp_guesses_per_key
            ),
            otp_guesses_per_client=_budget(
                env, "REWARDS_OTP_GUESSES_PER_CLIENT", defaults.otp_guesses_per_client
            ),
            redis_url=env.get("REWARDS_REDIS_URL") or None,
            bulk_max_body_bytes=_integer(
                env, "REWARDS_BULK_MAX_BODY_BYTES", defaults.bulk_max_body_bytes
            ),
            auto_migrate=(env.get("REWARDS_AUTO_MIGRATE", "1") != "0"),
            evaluation_interval_seconds=_integer(env, "REWARDS_EVALUATION_INTERVAL", 0),
            sql_echo=(env.get("REWARDS_SQL_ECHO", "0") == "1"),
            recycle_after_rulesets=_integer(
                env, "REWARDS_RECYCLE_AFTER_RULESETS", defaults.recycle_after_rulesets
            ),
            supervised=(env.get("REWARDS_SUPERVISED", "0") == "1"),
            metrics_key=env.get("REWARDS_METRICS_KEY") or None,
            request_timeout_seconds=_number(
                env, "REWARDS_REQUEST_TIMEOUT", defaults.request_timeout_seconds
            ),
            console_secret=env.get("REWARDS_CONSOLE_SECRET") or None,
            console_session_seconds=_integer(
                env, "REWARDS_CONSOLE_SESSION_SECONDS", defaults.console_session_seconds
            ),
            console_secure_cookie=(env.get("REWARDS_CONSOLE_SECURE_COOKIE", "0") == "1"),
            broker_url=_broker_url(env),
            webhooks_file=Path(env["REWARDS_WEBHOOKS_FILE"])
            if env.get("REWARDS_WEBHOOKS_FILE")
            else None,
            dispatch_in_serve=(env.get("REWARDS_DISPATCH", "1") != "0"),
            dispatch_lease_seconds=_number(
                env, "REWARDS_DISPATCH_LEASE", defaults.dispatch_lease_seconds
            ),
            dispatch_share=_share(env, "REWARDS_DISPATCH_SHARE", defaults.dispatch_share),
            webhook_timeout_seconds=_number(
                env, "REWARDS_WEBHOOK_TIMEOUT", defaults.webhook_timeout_seconds
            ),
            webhook_retry_base_seconds=_number(
                env, "REWARDS_WEBHOOK_RETRY_BASE", defaults.webhook_retry_base_seconds
            ),
            webhook_retry_cap_seconds=_number(
                env, "REWARDS_WEBHOOK_RETRY_CAP", defaults.webhook_retry_cap_seconds
            ),
            webhook_max_attempts=_integer(
                env, "REWARDS_WEBHOOK_MAX_ATTEMPTS", defaults.webhook_max_attempts
            ),
            webhook_give_up_seconds=_number(
                env, "REWARDS_WEBHOOK_GIVE_UP", defaults.webhook_give_up_seconds
            ),
        )

    def with_changes(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    """A numeric variable at least 0; a malformed one is a SettingsError naming it (a
    one-line refusal at start-up, not a traceback)."""
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}: {raw!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise SettingsError(f"{name}: {raw!r} is not a number of 0 or more")
    return value


def _broker_url(env: Mapping[str, str]) -> str | None:
    """``REWARDS_BROKER_URL`` as given, once it parses (a wrong scheme or parameter is a
    one-line refusal at start-up, not a dispatcher failing every round)."""
    url = env.get("REWARDS_BROKER_URL") or None
    if url is not None:
        parse_broker_url(url)
    return url


def _share(env: Mapping[str, str], name: str, default: float) -> float:
    value = _number(env, name, default)
    if not 0 < value <= 1:
        raise SettingsError(f"{name}: {env.get(name)!r} is not a share above 0 and at most 1")
    return value


def _integer(env: Mapping[str, str], name: str, default: int) -> int:
    value = _number(env, name, default)
    if value != int(value):
        raise SettingsError(f"{name}: {env.get(name)!r} is not a whole number")
    return int(value)


def _budget(env: Mapping[str, str], name: str, default: Budget) -> Budget:
    raw = env.get(name)
    return parse_budget(name, raw) if raw else default


def environment() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) of every variable ``Settings.from_env`` reads, for
    ``rewards serve --help`` (README's configuration table says the same)."""
    default = Settings()
    return [
        (
            "REWARDS_DATABASE_URL",
            default.database_url,
            "a SQLite file, or postgresql+psycopg://user@host/db",
        ),
        ("REWARDS_RULESETS_DIR", "the repository's rulesets/", "definition + offer files"),
        (
            "REWARDS_API_KEYS",
            "generated and printed by serve",
            "comma separated <role>:<key>, roles admin, integrator, processor, analyst",
        ),
        ("REWARDS_OTP_TTL_SECONDS", str(default.otp_ttl_seconds), "default OTP lifetime"),
        (
            "REWARDS_BULK_MAX_BODY_BYTES",
            str(default.bulk_max_body_bytes),
            f"body limit of POST /v1/events/bulk (other bodies: {default.max_body_bytes:,})",
        ),
        ("REWARDS_AUTO_MIGRATE", "1", "upgrade the database schema at start-up (0: do not)"),
        ("REWARDS_EVALUATION_INTERVAL", "0, off", "seconds between scheduled evaluation runs"),
        (
            "REWARDS_RECYCLE_AFTER_RULESETS",
            str(default.recycle_after_rulesets),
            "engine rulesets a worker may build by reloads, then it restarts (0: never)",
        ),
        (
            "REWARDS_METRICS_KEY",
            "unset, /metrics is open",
            "when set, GET /metrics needs this key or an admin key",
        ),
        (
            "REWARDS_CONSOLE_SECRET",
            "derived from the API keys",
            "secret of the console's session cookie (the same on every worker and machine)",
        ),
        (
            "REWARDS_CONSOLE_SESSION_SECONDS",
            str(default.console_session_seconds),
            "a console login lasts this long",
        ),
        (
            "REWARDS_CONSOLE_SECURE_COOKIE",
            "0",
            "1: the console's cookie is sent over HTTPS only (set it behind TLS)",
        ),
        (
            "REWARDS_BROKER_URL",
            "unset",
            "also publish notifications to nats://host:4222 (JetStream) or amqp://... (RabbitMQ)",
        ),
        ("REWARDS_WEBHOOKS_FILE", "unset", "a YAML file of webhook subscriptions"),
        (
            "REWARDS_DISPATCH",
            "1",
            "0: serve does not dispatch notifications (run rewards dispatch)",
        ),
        (
            "REWARDS_DISPATCH_LEASE",
            f"{default.dispatch_lease_seconds:g}",
            "seconds: another process takes over dispatching when the holder stops renewing",
        ),
        (
            "REWARDS_DISPATCH_SHARE",
            f"{default.dispatch_share:g}",
            "the part of the time serve's dispatcher may be busy (it rests in proportion)",
        ),
        (
            "REWARDS_WEBHOOK_RETRY_BASE",
            f"{default.webhook_retry_base_seconds:g}",
            "seconds: full-jitter backoff base (doubling, capped by REWARDS_WEBHOOK_RETRY_CAP)",
        ),
        (
            "REWARDS_WEBHOOK_RETRY_CAP",
            f"{default.webhook_retry_cap_seconds:g}",
            "seconds: the longest wait between two attempts of a webhook",
        ),
        (
            "REWARDS_WEBHOOK_TIMEOUT",
            f"{default.webhook_timeout_seconds:g}",
            "seconds a webhook receiver has to answer an attempt",
        ),
        (
            "REWARDS_WEBHOOK_GIVE_UP",
            f"{default.webhook_give_up_seconds:g}",
            "seconds after the first attempt when a delivery is dead-lettered",
        ),
        (
            "REWARDS_WEBHOOK_MAX_ATTEMPTS",
            str(default.webhook_max_attempts),
            "attempts before a delivery is dead-lettered (or REWARDS_WEBHOOK_GIVE_UP seconds)",
        ),
        (
            "REWARDS_REQUEST_TIMEOUT",
            f"{default.request_timeout_seconds:g}",
            "seconds a request may take to arrive whole (line, headers, body): then 408, closed",
        ),
        (
            "REWARDS_OTP_GUESSES_PER_KEY",
            "100/3600",
            "wrong OTP guesses an API key may make per window (count/seconds), all workers",
        ),
        (
            "REWARDS_OTP_GUESSES_PER_CLIENT",
            "10/600",
            "wrong OTP guesses one client address of a key may make per window",
        ),
        (
            "REWARDS_REDIS_URL",
            "unset: the database",
            "Redis for the rate counters every worker shares (redis://host:6379/0)",
        ),
        (
            "REWARDS_LOG_EXCEPTION_MESSAGES",
            "unset",
            "1: exception messages in logs (development only: they can quote customer data)",
        ),
        ("REWARDS_SQL_ECHO", "0", "1: log every SQL statement (debugging)"),
        (
            "REWARDS_SUPERVISED",
            "set by serve",
            "marks serve's worker processes; not for users to set",
        ),
    ]
