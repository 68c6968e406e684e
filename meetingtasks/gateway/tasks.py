"""Tasks on behalf of clients: client names, the token's rights, and the dispatcher.

A client submits by the name routes/ gives a task for clients (``client = "llm_chat"``
for ``ai.llm_chat``); a type without one cannot be reached from outside. The token must
grant the meeting a task names. Everything else is ``TaskDispatcher``'s: its
validation errors become error codes, and the task is queued with the session, user,
meeting and request ids, so the worker's frames and result find their way back.

TaskDispatcher and Celery's producer block on Redis, so they run in a small thread
pool: the event loop goes on serving every other socket meanwhile.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from meetingtasks.base.status import TaskStatus
from meetingtasks.dispatch import TaskDispatcher, TaskRequest, TaskResponse, TaskResult
from meetingtasks.errors import (
    InvalidOption,
    InvalidPayload,
    InvalidPriority,
    ProtocolError,
    UnknownTaskType,
    ValidationError,
)
from meetingtasks.gateway import protocol as p
from meetingtasks.gateway.auth import Principal
from meetingtasks.policies.routing import get_route_table

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Our validation errors, as the error codes clients get.
_CODES: tuple[tuple[type[ValidationError], str], ...] = (
    (UnknownTaskType, p.UNKNOWN_TASK),
    (InvalidPayload, p.INVALID_PAYLOAD),
    (InvalidPriority, p.BAD_FIELD),
    (InvalidOption, p.BAD_FIELD),
)
#: What a lost Redis looks like from the dispatcher and Celery's producer.
UNREACHABLE = (RedisError, OperationalError, OSError)


class ClientTasks:
    def __init__(self, threads: int = 8) -> None:
        self.dispatcher = TaskDispatcher()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="gateway-dispatch")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    async def submit(
        self, principal: Principal, command: p.Submit, session_id: str | None = None
    ) -> TaskResponse:
        """Queue ``command`` for ``principal``; ProtocolError (nothing queued) if refused."""
        rid = command.request_id
        try:
            route = get_route_table().for_client(command.type)
        except UnknownTaskType as exc:
            raise ProtocolError(p.UNKNOWN_TASK, str(exc), rid) from None
        if command.meeting_id is not None and not principal.allows(command.meeting_id):
            raise ProtocolError(
                p.MEETING_NOT_ALLOWED,
                f"your token does not grant meeting {command.meeting_id!r}",
                rid,
            )
        try:
            request = TaskRequest(
                type=route.type,
                payload=command.data,
                priority=command.priority,
                timeout=command.timeout,
                delay=command.delay,
                user_id=principal.user_id,
                meeting_id=command.meeting_id,
                session_id=session_id,
                request_id=rid,
            )
            return await self._run(self.dispatcher.dispatch, request)
        except ValidationError as exc:
            code = next((c for kind, c in _CODES if isinstance(exc, kind)), p.BAD_FIELD)
            raise ProtocolError(code, str(exc), rid) from None

    async def statuses(self, task_ids: list[str]) -> list[TaskResult | None]:
        return await self._run(self.dispatcher.statuses, task_ids)

    async def cancel(self, task_id: str) -> bool:
        return await self._run(self.dispatcher.cancel, task_id)

    async def _run(self, function: Any, *args: Any) -> Any:
        """``function(*args)`` in the pool; Redis out of reach becomes ``unavailable``."""
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()  # the submit's span, into the pool's thread
        try:
            return await loop.run_in_executor(self._pool, context.run, function, *args)
        except UNREACHABLE as exc:
            log.warning("gateway cannot reach Redis: %s", exc)
            raise ProtocolError(
                p.UNAVAILABLE, "the task system is unreachable right now: try again shortly"
            ) from None


def describe(result: TaskResult) -> dict[str, Any]:
    """A task's status as clients see it (``status`` frames, GET /tasks/{id})."""
    view: dict[str, Any] = {
        "task_id": result.task_id,
        "status": result.status.value,
        "attempts": result.attempts,
    }
    if result.request_id is not None:
        view["request_id"] = result.request_id
    if result.status is TaskStatus.COMPLETED:
        view["result"] = result.result
    elif result.error:
        view["error"] = result.error
    return view
