"""Every custom message header meetingtasks puts on a task message, in one place.

Celery carries extra headers of ``apply_async(headers=...)`` to the worker, where they
show on the request context; retries keep them.
"""

from __future__ import annotations

from typing import Any

#: This message's retry budget (``max_retries=`` of one send).
MAX_RETRIES = "mt_max_retries"
#: Seconds the task's record is kept once it is over (the call's own retention).
RETENTION = "mt_retention"
#: Unix time the message was sent, and the time it becomes runnable (delayed tasks):
#: priority aging counts waiting from the later of the two; the transport delays a
#: message whose due time is ahead.
ENQUEUED_AT = "mt_enqueued_at"
DUE_AT = "mt_due_at"
#: The client session (and its request id) a task was submitted for: streamed output
#: and the result are pushed to it.
SESSION = "mt_session"
REQUEST = "mt_request"
#: The user and meeting a task acts for (status, stats, authorization checks).
USER = "mt_user"
MEETING = "mt_meeting"
#: Id of the dispatcher to tell when the task ends (its callbacks run there).
NOTIFY = "mt_notify"
#: Present (1) when nobody watches the task: its result is not kept and no dispatcher,
#: client session, retention or time limit asks for its record, so it has none
#: (policies/tracking.py).
UNTRACKED = "mt_untracked"
#: Present (1) on a message adopted from a queue's inbox (a producer without our package):
#: its kept result is also stored as Celery's Redis backend stores one, for its client.
FOREIGN = "mt_foreign"
#: The hash that holds the message while a worker runs it (``Keys.held``): its end
#: releases it there. Set by the transport as it hands the message to Celery.
HELD = "mt_held"
#: The message's delivery tag, by which the run's end removes it from the
#: unacknowledged set (kombu keeps the tag out of the task's request context).
DELIVERY_TAG = "mt_tag"

#: The W3C trace context of the send (OpenTelemetry's Celery instrumentation writes it;
#: so does any traced producer): the run continues that trace (``base/tracing.py``).
TRACEPARENT = "traceparent"

#: What links a task to whoever waits for it (its client session and request, user,
#: meeting, dispatcher): kept with a dead letter, so a requeued task still reaches them.
CLIENT_LINKS = (SESSION, REQUEST, USER, MEETING, NOTIFY)


def get(request: Any, name: str) -> Any:
    """A custom header of a Celery request context (Celery exposes them two ways)."""
    headers = getattr(request, "headers", None) or {}
    return headers.get(name, getattr(request, name, None))
