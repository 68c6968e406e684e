"""The service task modules: one per service queue, each task named by its type.

The handlers here are the platform's reference implementations; a service may define
its own tasks with ``@app.task`` and route them in routes/.
"""

from __future__ import annotations

from typing import Any

from celery import current_task

from meetingtasks.errors import Permanent
from meetingtasks.events import Event, EventType, publisher


def require_id(name: str, value: object) -> str:
    """A non-empty id of at most 128 characters, or a Permanent error (retrying won't help)."""
    if not isinstance(value, str) or not value or len(value) > 128:
        raise Permanent(f"{name} must be a non-empty string of at most 128 characters")
    return value


def announce(
    channel: str,
    event_type: EventType,
    source: str,
    payload: dict[str, Any],
    *,
    meeting_id: str,
    user_id: str | None = None,
) -> None:
    """Publish what a task just did, with the task's id as trace id.

    Called after the state change, on every run: a run retried after a failed publish
    announces again, so subscribers get each event at least once (and must not mind a
    repeat). A publish that fails raises, and the task is retried like any Redis error.
    """
    request = current_task.request if current_task else None
    event = Event(
        event_type,
        payload,
        source,
        meeting_id=meeting_id,
        user_id=user_id,
        trace_id=getattr(request, "id", None),
    )
    publisher().publish(channel, event)
