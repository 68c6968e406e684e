"""TaskDispatcher: tasks by type, with status every process sees, waits and callbacks.

    dispatcher = TaskDispatcher()
    response = dispatcher.dispatch(TaskRequest(type="ai.summarize", payload={"text": t}))
    dispatcher.status(response.task_id)          # TaskResult, from any process
    dispatcher.wait(response.task_id, timeout=30)
    dispatcher.dispatch_async(request, callback)  # callback(TaskResult) once, here

Celery gives a caller an AsyncResult and nothing else; here a task's status lives in
Redis from the moment it is queued (``status.py``), and each end state is announced
once, so callbacks fire in the dispatching process for every end: completed, failed,
timeout (including a worker that died, found by another worker's monitor) and
cancelled. Announcements travel by Pub/Sub (the store's ``Subscriber``); after it
reconnects, and in a slow poll meanwhile, the pending tasks' status is read for any
announcement this process missed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticError

from meetingtasks.app import app
from meetingtasks.base import headers as h
from meetingtasks.base import ids
from meetingtasks.base.keys import Keys, get_keys
from meetingtasks.base.priority import Priority
from meetingtasks.base.record import RecordField, TaskRecord
from meetingtasks.base.settings import get_settings
from meetingtasks.base.status import TaskStatus
from meetingtasks.celery_ext import sending
from meetingtasks.errors import (
    InvalidOption,
    InvalidPayload,
    MeetingTasksError,
    ValidationError,
    WaitTimeout,
)
from meetingtasks.policies import cancellation, retention
from meetingtasks.policies.routing import Route, get_route_table
from meetingtasks.store import held, queueing
from meetingtasks.store import status as store
from meetingtasks.store.subscriber import Subscriber

log = logging.getLogger(__name__)

REJECTED = "rejected"
QUEUED, SCHEDULED = TaskStatus.QUEUED.value, TaskStatus.SCHEDULED.value
#: Seconds start() waits for the announcements' subscription (the poll covers the rest).
LISTEN_TIMEOUT = 5.0


class TaskRequest(BaseModel):
    """One task to dispatch. Bad fields raise a ValidationError subclass at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(min_length=1, max_length=200)
    payload: dict[str, Any] = Field(default_factory=dict)
    priority: Priority | None = None
    timeout: float | None = Field(None, gt=0, le=24 * 3600)
    max_retries: int | None = Field(None, ge=0, le=100)
    delay: float | None = Field(None, ge=0, description="seconds before it may run")
    retention: float | None = Field(
        None, gt=0, description="seconds its record is kept once it is over"
    )
    user_id: str | None = Field(None, min_length=1, max_length=128)
    meeting_id: str | None = Field(None, min_length=1, max_length=128)
    session_id: str | None = Field(None, min_length=1, max_length=128)
    request_id: str | None = Field(None, min_length=1, max_length=128)
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except PydanticError as exc:
            raise _our_error(exc) from exc

    @field_validator("priority", mode="before")
    @classmethod
    def _parse_priority(cls, value: object) -> Priority | None:
        return None if value is None else Priority.parse(value)


class TaskResponse(BaseModel):
    """What dispatch said: the task's id and status, or why it was rejected."""

    task_id: str | None
    status: str
    error: str | None = None
    request_id: str | None = None


class TaskResult(BaseModel):
    """A task's status record, with its result once completed."""

    task_id: str
    status: TaskStatus
    type: str | None = None
    result: Any = None
    error: str | None = None
    attempts: int = 0
    priority: int | None = None
    queue: str | None = None
    session_id: str | None = None
    user_id: str | None = None
    meeting_id: str | None = None
    request_id: str | None = None
    created_at: float | None = None
    started_at: float | None = None
    updated_at: float | None = None

    @property
    def done(self) -> bool:
        return self.status.terminal


Callback = Callable[[TaskResult], Any]


class TaskDispatcher:
    """Cheap to create; ``start()`` (or the first ``dispatch_async``) starts the
    listener and the poll that run callbacks, ``stop()`` ends them."""

    def __init__(self, keys: Keys | None = None, poll_interval: float = 2.0) -> None:
        self.keys = keys or get_keys()
        self.cancel_ttl = get_settings().cancel_ttl
        self.id = uuid.uuid4().hex
        self.poll_interval = poll_interval
        self._pending: dict[str, Callback] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: Subscriber | None = None
        self._poller: threading.Thread | None = None
        self._callbacks = ThreadPoolExecutor(4, thread_name_prefix="dispatch-callback")

    # -- sending -------------------------------------------------------------------------

    def dispatch(self, request: TaskRequest) -> TaskResponse:
        """Queue one task; raises a ValidationError subclass (nothing queued) on bad input."""
        return self._send(request, notify=False)

    def dispatch_batch(self, requests: list[TaskRequest | dict[str, Any]]) -> list[TaskResponse]:
        """Queue many tasks in one round trip to Redis. Each request is checked on its
        own: a bad one is answered ``rejected`` with its error, the others are queued.
        Their task-sent events go out grouped (``celery_ext.envelopes.sent_event_messages``)."""
        responses: list[TaskResponse] = []
        with queueing.batch():
            for item in requests:
                try:
                    request = item if isinstance(item, TaskRequest) else TaskRequest(**item)
                    responses.append(self._send(request, notify=False))
                except ValidationError as exc:
                    request_id = item.get("request_id") if isinstance(item, dict) else None
                    responses.append(
                        TaskResponse(
                            task_id=None, status=REJECTED, error=str(exc), request_id=request_id
                        )
                    )
        return responses

    def dispatch_async(self, request: TaskRequest, callback: Callback) -> TaskResponse:
        """Queue a task and call ``callback(TaskResult)`` here, once, when it ends."""
        self.start()
        return self._send(request, notify=True, callback=callback)

    def _send(
        self, request: TaskRequest, notify: bool, callback: Callback | None = None
    ) -> TaskResponse:
        """Send through the app's one send path (``sending.py``); only routed types."""
        get_route_table().get(request.type)  # UnknownTaskType for anything else
        task_id = ids.uuid4()
        if callback is not None:
            with self._lock:
                self._pending[task_id] = callback
        chosen = {
            "task_id": task_id, "priority": request.priority, "timeout": request.timeout,
            "max_retries": request.max_retries, "countdown": request.delay,
            "retention": request.retention, "headers": self._headers(request, notify),
        }  # fmt: skip
        # What the request leaves unset is the route's (as with apply_async).
        options: dict[str, Any] = {k: v for k, v in chosen.items() if v is not None}
        try:
            if request.idempotency_key is None:
                sent_id = sending.send(app, request.type, (), request.payload, options)[0]
            else:
                key = request.idempotency_key
                sent_id = app.send_task(
                    request.type, (), request.payload, idempotency_key=key, **options
                ).id
        except BaseException:
            with self._lock:
                self._pending.pop(task_id, None)
            raise
        if sent_id == task_id:
            status = SCHEDULED if request.delay else QUEUED
            return TaskResponse(task_id=task_id, status=status, request_id=request.request_id)
        if callback is not None:  # the idempotency key named an earlier task
            with self._lock:
                self._pending[sent_id] = self._pending.pop(task_id)
        current = self.status(sent_id)
        status_name = current.status.value if current else TaskStatus.QUEUED.value
        return TaskResponse(task_id=sent_id, status=status_name, request_id=request.request_id)

    def _headers(self, request: TaskRequest, notify: bool) -> dict[str, str]:
        pairs = (
            (h.SESSION, request.session_id), (h.REQUEST, request.request_id),
            (h.USER, request.user_id), (h.MEETING, request.meeting_id),
            (h.NOTIFY, self.id if notify else None),
        )  # fmt: skip
        return {name: value for name, value in pairs if value is not None}

    # -- reading -------------------------------------------------------------------------

    def status(self, task_id: str) -> TaskResult | None:
        """The task's status (and result once completed), or None if unknown/expired."""
        return self.statuses([task_id])[0]

    def statuses(self, task_ids: list[str]) -> list[TaskResult | None]:
        """Several at once, in one round trip (a result is a field of its record)."""
        records = store.read(self.keys, task_ids)
        return [_result(record) if record.exists else None for record in records]

    def wait(self, task_id: str, timeout: float) -> TaskResult:
        """Block until the task ends; TimeoutError if it has not within ``timeout``."""
        deadline = time.monotonic() + timeout
        pause = 0.005
        while True:
            current = self.status(task_id)
            if current is not None and current.done:
                retention.policy().read(self.keys, [task_id])
                return current
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(
                    f"task {task_id} has not ended within {timeout}s: wait longer, or follow "
                    "it with status() or dispatch_async()"
                )
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.2)

    def cancel(self, task_id: str) -> bool:
        """Cancel a delayed, queued or running task; False if it had already ended."""
        return cancellation.cancel(app, task_id, self.keys, self.cancel_ttl)

    def register_route(
        self,
        type: str,
        queue: str,
        priority: Priority | str = Priority.NORMAL,
        timeout: float = 60.0,
        max_retries: int = 3,
        expires: float | None = None,
        client: str | None = None,
    ) -> Route:
        """Route a new task type at run time, as routes/ would, for every process of the
        deployment (each sees it within a second)."""
        try:
            route = Route(type=type, queue=queue, priority=priority, timeout=timeout,
                          max_retries=max_retries, expires=expires, client=client)  # fmt: skip
        except PydanticError as exc:
            raise _our_error(exc) from exc
        get_route_table().publish(route)
        return route

    def stats(self) -> dict[str, Any]:
        """Cluster-wide: every dispatcher's and worker's counts, not this process's."""
        counters = store.counters(self.keys)
        events = ("dispatched", "completed", "failed", "timeout", "cancelled", "retried")
        by_priority = {
            Priority.parse(step).name.lower(): counts
            for step, counts in counters.by_priority.items()
        }
        return {
            **{event: counters.total.get(event, 0) for event in events},
            "active": held.count(self.keys, held.roster(self.keys), get_route_table().queues),
            "by_type": counters.by_type,
            "by_priority": by_priority,
            "waiting_callbacks": len(self._pending),
        }

    # -- callbacks -----------------------------------------------------------------------

    def start(self) -> None:
        """Returns once announcements are subscribed (or after ``LISTEN_TIMEOUT``)."""
        channel = self.keys.notify_channel(self.id)
        with self._lock:
            if self._listener is not None:
                return
            self._stopping.clear()
            listener = self._listener = Subscriber(
                get_settings().redis_url,
                self._announced,
                on_reconnect=self._settle_pending,
                name="dispatch-listen",
            )
            poller = self._poller = threading.Thread(
                target=self._poll, name="dispatch-poll", daemon=True
            )
        listener.want(channel)
        listener.start()
        poller.start()
        if not listener.wait_confirmed(channel, timeout=LISTEN_TIMEOUT):
            log.warning("dispatcher listener not subscribed yet; the poll covers meanwhile")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening; callbacks already due run to the end."""
        self._stopping.set()
        with self._lock:
            listener, self._listener = self._listener, None
            poller, self._poller = self._poller, None
        if listener is not None:
            listener.stop(timeout)
        if poller is not None:
            poller.join(timeout)
        self._callbacks.shutdown(wait=True)
        self._callbacks = ThreadPoolExecutor(4, thread_name_prefix="dispatch-callback")

    def _announced(self, _channel: str, _pattern: bool, data: str) -> None:
        """One of our tasks ended (the finish script announces it)."""
        self._settle([json.loads(data)["task_id"]])

    def _poll(self) -> None:
        """The safety net: pending tasks whose announcement was missed."""
        while not self._stopping.wait(self.poll_interval):
            try:
                self._settle_pending()
            except Exception:
                log.warning("dispatcher poll failed; retrying", exc_info=True)

    def _settle_pending(self) -> None:
        with self._lock:
            pending = list(self._pending)
        if pending:
            self._settle(pending)

    def _settle(self, task_ids: list[str]) -> None:
        """Fire the callbacks of those of ``task_ids`` that ended, each exactly once."""
        fired: list[str] = []
        for result in self.statuses(task_ids):
            if result is None or not result.done:
                continue
            with self._lock:
                callback = self._pending.pop(result.task_id, None)
            if callback is not None:
                self._callbacks.submit(_run_callback, callback, result)
                fired.append(result.task_id)
        retention.policy().read(self.keys, fired)


def _run_callback(callback: Callback, result: TaskResult) -> None:
    try:
        callback(result)
    except Exception:
        log.exception("callback for task %s failed", result.task_id)


def _result(record: TaskRecord) -> TaskResult:
    status = record.status or TaskStatus.QUEUED
    kept = status is TaskStatus.COMPLETED and record.has_result
    return TaskResult(
        task_id=record.task_id,
        status=status,
        type=record.type,
        result=app.backend.decode(record.get(RecordField.RESULT)) if kept else None,
        error=record.get(RecordField.ERROR),
        attempts=record.attempts,
        priority=record.priority,
        queue=record.get(RecordField.QUEUE),
        session_id=record.get(RecordField.SESSION),
        user_id=record.get(RecordField.USER),
        meeting_id=record.get(RecordField.MEETING),
        request_id=record.get(RecordField.REQUEST),
        created_at=record.time(RecordField.CREATED_AT),
        started_at=record.time(RecordField.STARTED_AT),
        updated_at=record.time(RecordField.UPDATED_AT),
    )


def _our_error(exc: PydanticError) -> MeetingTasksError:
    """Our error type for a pydantic one: ours if a validator raised it, else InvalidOption."""
    for error in exc.errors():
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, MeetingTasksError):
            return cause
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "request"
    kind = InvalidPayload if first["loc"][:1] == ("payload",) else InvalidOption
    return kind(f"{where}: {first['msg']}")
