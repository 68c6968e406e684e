"""Prometheus metrics, read from the same stats as ``meetingtasks stats`` at each scrape.

A custom collector turns one stats dict into metric families when Prometheus asks,
instead of keeping counters in this process that would drift from Redis (and differ per
process): every scrape shows what Redis holds now. ``render_metrics()`` is what an HTTP
``/metrics`` endpoint returns (with ``CONTENT_TYPE``).

Cluster-wide: queue depth by queue and priority, delayed, processing and dead-letter
counts, workers online, the scheduler's counters. When the source is a
``Runtime.stats``, this process's local and event bus counters as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from meetingtasks.runtime import cluster_stats

#: The Content-Type header of ``render_metrics()``'s body.
CONTENT_TYPE = CONTENT_TYPE_LATEST

Stats = Mapping[str, Any]

#: Per-process counters of the components a Runtime runs: (component, stats field,
#: metric name without ``_total``, help).
_COMPONENT_COUNTERS = (
    ("local_bus", "total", "meetingtasks_local_events_emitted", "Local events emitted."),
    ("local_bus", "processed", "meetingtasks_local_events_processed", "Local events handled."),
    ("local_bus", "dropped", "meetingtasks_local_events_dropped", "Local events dropped."),
    ("local_bus", "failed", "meetingtasks_local_handler_failures", "Local handlers that raised."),
    ("event_bus", "published", "meetingtasks_events_published", "Events published."),
    ("event_bus", "delivered", "meetingtasks_events_delivered", "Events given to handlers here."),
    ("event_bus", "failed", "meetingtasks_event_handler_failures", "Event handlers that raised."),
)


class StatsCollector(Collector):
    """Reads ``source()`` (``cluster_stats`` or a ``Runtime.stats``) on each collect."""

    def __init__(self, source: Callable[[], Stats] = cluster_stats) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        stats = self._source()
        depth = GaugeMetricFamily(
            "meetingtasks_queue_depth",
            "Tasks waiting in a service queue, by priority.",
            labels=["queue", "priority"],
        )
        for queue, levels in stats["queues"].items():
            for priority, count in levels.items():
                if priority != "total":
                    depth.add_metric([queue, priority], count)
        yield depth
        yield GaugeMetricFamily(
            "meetingtasks_delayed_tasks", "Tasks waiting in the delay store.", stats["delayed"]
        )
        yield GaugeMetricFamily(
            "meetingtasks_processing_tasks",
            "Tasks taken by a worker and not acknowledged yet.",
            stats["processing"],
        )
        yield GaugeMetricFamily(
            "meetingtasks_dead_letters", "Tasks in the dead-letter queue.", stats["dlq"]
        )
        yield GaugeMetricFamily(
            "meetingtasks_malformed_messages",
            "Messages set aside because they can never become a task (meetingtasks malformed).",
            stats["malformed"],
        )
        unconsumed = GaugeMetricFamily(
            "meetingtasks_unconsumed_messages",
            "Messages on lists no worker reads: a producer without our package that misses "
            "a setting of docs/wire.md.",
            labels=["list"],
        )
        for name, count in stats["unconsumed"].items():
            unconsumed.add_metric([name.encode("unicode_escape").decode()], count)
        yield unconsumed
        yield GaugeMetricFamily(
            "meetingtasks_workers_online",
            "Worker consumers with a live heartbeat.",
            stats["workers"]["online"],
        )
        scheduler = CounterMetricFamily(
            "meetingtasks_scheduler_actions",
            "Work done by the scheduler loops, cluster-wide (moved, promoted, recovered).",
            labels=["action"],
        )
        for action, count in sorted(stats["scheduler"].items()):
            scheduler.add_metric([action], count)
        yield scheduler
        if "memory" in stats:
            yield from _memory_metrics(stats["memory"])
        yield from _component_metrics(stats.get("components", {}))


def _memory_metrics(memory: Stats) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "meetingtasks_redis_used_memory_bytes", "Redis's used memory.", memory["used_bytes"]
    )
    yield GaugeMetricFamily(
        "meetingtasks_redis_maxmemory_bytes",
        "Redis's maxmemory (0: no limit).",
        memory["max_bytes"],
    )
    keys = GaugeMetricFamily(
        "meetingtasks_redis_keys",
        "Our keys in Redis, per key family (scaled from a sample on big databases).",
        labels=["family"],
    )
    size = GaugeMetricFamily(
        "meetingtasks_redis_key_bytes",
        "Mean bytes of one key of a family (MEMORY USAGE of a few).",
        labels=["family"],
    )
    for family, numbers in sorted(memory["families"].items()):
        keys.add_metric([family], numbers["keys"])
        size.add_metric([family], numbers["bytes_per_key"])
    yield keys
    yield size
    yield GaugeMetricFamily(
        "meetingtasks_task_kept_bytes",
        "Bytes a task's records take in Redis (status, and result where kept).",
        memory["bytes_per_task"],
    )


def _component_metrics(components: Stats) -> Iterator[Metric]:
    for component, field, name, documentation in _COMPONENT_COUNTERS:
        if component in components:
            yield CounterMetricFamily(name, documentation, components[component][field])
    if "local_bus" in components:
        yield GaugeMetricFamily(
            "meetingtasks_local_event_queue_depth",
            "Local events accepted and not yet taken by a worker.",
            components["local_bus"]["queue_depth"],
        )


def render_metrics(source: Callable[[], Stats] = cluster_stats) -> bytes:
    """The Prometheus text exposition of ``source()``, read now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(source))
    return generate_latest(registry)
