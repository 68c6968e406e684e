"""Dead letters: a task that failed for good, kept with everything needed to send it
again, and the policy that files it (the result backend calls it on every final
failure). Browsing and requeueing are admin operations: ``meetingtasks.dead_letter_queue``.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel

from meetingtasks.base import headers as h
from meetingtasks.base.keys import Keys, get_keys
from meetingtasks.base.priority import Priority
from meetingtasks.store import dead_letters


class DeadLetter(BaseModel):  # type: ignore[no-redef]  # pydantic mypy: its field "kwargs"
    """A task that failed for good, as it was sent, with why it failed."""

    task_id: str
    type: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str | None
    priority: int | None
    soft_time_limit: float | None = None
    time_limit: float | None = None
    max_retries: int | None = None
    attempts: int
    error_type: str
    error: str
    traceback: str | None
    failed_at: float
    worker: str | None = None
    #: The client links of the task (session, request, user, meeting, notify headers),
    #: so a requeued client task still reaches its session and its dispatcher.
    links: dict[str, str] = {}

    @classmethod
    def from_request(cls, request: Any, exc: BaseException, traceback: str | None) -> DeadLetter:
        """Build the entry from the Celery request context of the failed run."""
        delivery = getattr(request, "delivery_info", None) or {}
        hard, soft = getattr(request, "timelimit", None) or (None, None)
        max_retries = h.get(request, h.MAX_RETRIES)
        return cls(
            task_id=request.id,
            type=request.task,
            args=list(request.args or ()),
            kwargs=dict(request.kwargs or {}),
            queue=delivery.get("routing_key"),
            priority=delivery.get("priority"),
            soft_time_limit=soft,
            time_limit=hard,
            max_retries=max_retries,
            attempts=(request.retries or 0) + 1,
            error_type=type(exc).__name__,
            error=str(exc),
            traceback=traceback,
            failed_at=time.time(),
            worker=getattr(request, "hostname", None),
            links=client_links(request),
        )

    def send_options(self) -> dict[str, Any]:
        """Options that send it again as it was: same id, route, priority and limits."""
        options: dict[str, Any] = {"task_id": self.task_id, "queue": self.queue}
        if self.priority is not None:
            options["priority"] = Priority.parse(self.priority)
        if self.soft_time_limit is not None:
            options["soft_time_limit"] = self.soft_time_limit
        if self.time_limit is not None:
            options["time_limit"] = self.time_limit
        if self.max_retries is not None:
            options["max_retries"] = self.max_retries
        if self.links:
            options["headers"] = dict(self.links)
        return options


def client_links(request: Any) -> dict[str, str]:
    """The headers of a run that link its task to whoever waits for it."""
    links = {name: h.get(request, name) for name in h.CLIENT_LINKS}
    return {name: str(value) for name, value in links.items() if value is not None}


def file(letter: DeadLetter, keys: Keys | None = None) -> None:
    """Keep ``letter`` (a task that failed again replaces its earlier entry)."""
    dead_letters.add(keys or get_keys(), letter.task_id, letter.failed_at, letter.model_dump_json())
