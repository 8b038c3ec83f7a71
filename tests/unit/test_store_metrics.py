"""The store's append metrics read as prometheus_client's own Counter and Histogram would."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from infra.store import _AppendMetrics

OBSERVED = (0.0001, 0.0005, 0.0007, 0.001, 0.003, 0.25, 0.9, 1.0, 7.0)


def exposition(registry: CollectorRegistry) -> str:
    """The text format, creation times left out (they differ by construction)."""
    return re.sub(r"(_created(\{[^}]*\})?) \S+", r"\1 T", generate_latest(registry).decode())


def test_append_metrics_expose_what_counter_and_histogram_would() -> None:
    reference = CollectorRegistry()
    appends = Counter(
        "hubbub_store_appends_total",
        "Appends (one transaction each) by outcome: ok, duplicate, conflict or failed",
        ["outcome"],
        registry=reference,
    )
    for outcome in ("ok", "duplicate", "conflict", "failed"):
        appends.labels(outcome)
    events = Counter("hubbub_store_appended_events_total", "Events appended", registry=reference)
    seconds = Histogram(
        "hubbub_store_append_seconds",
        "Time an append takes, whatever its outcome",
        buckets=_AppendMetrics.BUCKETS,
        registry=reference,
    )
    ours = _AppendMetrics()
    registry = CollectorRegistry()
    registry.register(ours)
    for n, s in enumerate(OBSERVED):  # on a bound counts in that bucket (le), both ways
        seconds.observe(s)
        ours.observe(s)
        outcome = ("ok", "duplicate", "conflict")[n % 3]
        appends.labels(outcome).inc()
        ours.outcomes[outcome] += 1
        events.inc(n)
        ours.events += n
    assert exposition(registry) == exposition(reference)
