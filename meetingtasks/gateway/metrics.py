"""Prometheus metrics of a gateway process: the cluster's (``meetingtasks.metrics``) and
this process's clients, read at each scrape."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from meetingtasks.metrics import StatsCollector

#: (stats field, metric name, help) of this process's gauges.
_GAUGES = (
    ("connections", "meetingtasks_gateway_connections", "Open client WebSocket connections."),
    ("sessions", "meetingtasks_gateway_sessions", "Client sessions with a connection here."),
    (
        "meeting_channels",
        "meetingtasks_gateway_meeting_channels",
        "Meeting event channels followed by clients here.",
    ),
)
#: (stats field, metric name without _total, help) of its counters.
_COUNTERS = (
    ("frames_in", "meetingtasks_gateway_frames_received", "Frames received from clients."),
    ("frames_out", "meetingtasks_gateway_frames_sent", "Frames sent to clients."),
    ("submitted", "meetingtasks_gateway_tasks_submitted", "Tasks queued for clients."),
)


class GatewayCollector(Collector):
    def __init__(self, source: Callable[[], dict[str, Any]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        stats = self._source()
        for field, name, documentation in _GAUGES:
            yield GaugeMetricFamily(name, documentation, stats[field])
        for field, name, documentation in _COUNTERS:
            yield CounterMetricFamily(name, documentation, stats[field])
        for field, name, documentation, label in (
            ("errors", "meetingtasks_gateway_errors", "Error frames sent, by code.", "code"),
            (
                "refusals",
                "meetingtasks_gateway_refusals",
                "Connections closed by the gateway, by reason.",
                "reason",
            ),
        ):
            family = CounterMetricFamily(name, documentation, labels=[label])
            for value, count in sorted(stats[field].items()):
                family.add_metric([value], count)
            yield family
        yield CounterMetricFamily(
            "meetingtasks_gateway_redis_reconnects",
            "Times the gateway's Pub/Sub connection was rebuilt after losing Redis.",
            stats["fanout"]["reconnects"],
        )


def render(cluster: Callable[[], dict[str, Any]], gateway: Callable[[], dict[str, Any]]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(cluster))
    registry.register(GatewayCollector(gateway))
    return generate_latest(registry)
