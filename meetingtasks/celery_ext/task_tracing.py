"""The spans of a task that OpenTelemetry's Celery instrumentation does not make: what
our send adds to its ``apply_async/<task>`` span, and the time the task waited on its
queue (``base/tracing.py`` has the whole picture).
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import trace

from meetingtasks.base import headers as h
from meetingtasks.base import tracing


def annotate_send(queue: str, priority: int, headers: dict[str, Any]) -> None:
    """Queue, priority and delay on the current send's span (the instrumentation's)."""
    due = headers.get(h.DUE_AT)
    trace.get_current_span().set_attributes(
        {
            "messaging.system": "redis",
            "messaging.destination.name": queue,
            tracing.PRIORITY: priority,
            tracing.DELAY: max(0.0, float(due) - time.time()) if due else 0.0,
        }
    )


def record_queued(request: Any) -> None:
    """One span from when the task could first run (sent, or due) to now, as its run
    starts: the time it waited on its queue, in the trace of its send."""
    parent = tracing.context_of(h.get(request, h.TRACEPARENT))
    sent = h.get(request, h.ENQUEUED_AT)
    if parent is None or sent is None:
        return
    due = h.get(request, h.DUE_AT)
    runnable = max(float(sent), float(due or 0))
    delivery = getattr(request, "delivery_info", None) or {}
    span = tracing.start(
        "queue.wait", tracing.INTERNAL, parent,
        {
            "messaging.destination.name": delivery.get("routing_key"),
            tracing.PRIORITY: delivery.get("priority"),
            tracing.ATTEMPT: (getattr(request, "retries", 0) or 0) + 1,
            tracing.TASK_ID: getattr(request, "id", None),
        },
        start_time=min(runnable, time.time()),
    )  # fmt: skip
    if span is not None:
        span.end()
