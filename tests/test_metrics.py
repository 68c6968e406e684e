"""Prometheus metrics: read from Redis at each scrape, with the values stats report."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from meetingtasks.base.keys import get_keys
from meetingtasks.events import Event
from meetingtasks.metrics import render_metrics
from meetingtasks.runtime import Runtime, RuntimeConfig
from tests.support.backlog import make_backlog
from tests.support.events_helpers import FAST


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def test_metrics_show_the_backlog_as_it_is_now(app, redis) -> None:
    make_backlog()
    redis.hset(get_keys().scheduler_stats(), mapping={"moved": 7, "recovered": 2})
    values = samples(render_metrics())

    def depth(queue: str, priority: str) -> float:
        return values["meetingtasks_queue_depth", (("priority", priority), ("queue", queue))]

    assert (depth("media", "high"), depth("media", "low"), depth("media", "normal")) == (2, 3, 0)
    assert (depth("meeting", "critical"), depth("user", "normal"), depth("ai", "low")) == (1, 4, 0)
    assert values["meetingtasks_delayed_tasks", ()] == 2
    assert values["meetingtasks_dead_letters", ()] == 3
    assert values["meetingtasks_processing_tasks", ()] == 0
    assert values["meetingtasks_workers_online", ()] == 0
    assert values["meetingtasks_scheduler_actions_total", (("action", "moved"),)] == 7
    assert values["meetingtasks_scheduler_actions_total", (("action", "recovered"),)] == 2

    redis.delete(get_keys().dlq())  # read on every scrape: nothing cached in-process
    assert samples(render_metrics())["meetingtasks_dead_letters", ()] == 0


def test_a_managers_metrics_add_its_event_buses(redis) -> None:
    with Runtime(RuntimeConfig(event_bus=FAST)) as manager:
        for n in range(3):
            manager.local_bus.emit("work.item", {"n": n}, "tests")
        manager.event_bus.publish("meeting.m1", Event("meeting.user_joined", {}, "tests"))
        values = samples(render_metrics(manager.stats))
    assert values["meetingtasks_local_events_emitted_total", ()] == 3
    assert values["meetingtasks_events_published_total", ()] == 1
    assert ("meetingtasks_queue_depth", (("priority", "low"), ("queue", "ai"))) in values
