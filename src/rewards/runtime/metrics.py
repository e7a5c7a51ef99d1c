"""Business metrics for ``/metrics`` (Prometheus), beside the request metrics
(``api.http_metrics``).

Created once per process on first use (not at import), in the default registry that the
``/metrics`` endpoint serves. With several workers each process has its own counters
(scrape each worker, or use prometheus_client's multiprocess mode)."""

from __future__ import annotations

from functools import cache

from prometheus_client import Counter, Histogram


class Metrics:
    def __init__(self) -> None:
        self.events = Counter("rewards_events_recorded_total", "Events recorded, by type", ["type"])
        self.awards = Counter("rewards_awards_total", "Awards made, by offer", ["offer_id"])
        self.awarded_cents = Counter("rewards_awarded_cents_total", "Amount awarded, in cents")
        self.spends = Counter("rewards_spends_total", "Spends made", ["instant"])
        self.engine_seconds = Histogram(
            "rewards_engine_evaluation_seconds",
            "Time the rules engine took per event (a batch's time shared by its events)",
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1),
        )


@cache
def metrics() -> Metrics:
    return Metrics()
