"""The server frames of the client wire protocol (docs/gateway.md): every one is built
here, whoever sends it. The gateway answers a client's frames and forwards its meetings'
events; the workers push a task's progress, deltas and result on its session's channel
(``policies/tracking.py``, ``task_output.py``), and the gateway forwards those as they
are. One frame is built in Lua: ``progress`` with ``status`` ``processing`` when a worker
takes the task (``store/lua/fetch.lua``, the same frame as ``task_processing`` here,
``tests/test_dlq.py`` checks they match).

The client's frames are parsed in ``gateway/protocol.py``, with the error codes.
"""

from __future__ import annotations

import json
from typing import Any

from kombu.utils.json import dumps


def encode(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"))


def _with_request(frame: dict[str, Any], request_id: str | None) -> str:
    if request_id is not None:
        frame["request_id"] = request_id
    return encode(frame)


def error(code: str, message: str, request_id: str | None = None) -> str:
    return _with_request({"op": "error", "code": code, "message": message}, request_id)


def accepted(task_id: str, status: str, request_id: str | None) -> str:
    return _with_request({"op": "accepted", "task_id": task_id, "status": status}, request_id)


def pong(request_id: str | None) -> str:
    return _with_request({"op": "pong"}, request_id)


def subscribed(
    op: str, channel: str, request_id: str | None, meeting: dict[str, Any] | None = None
) -> str:
    """``subscribed`` or ``unsubscribed``: from now on events of ``channel`` (no longer) flow;
    ``subscribed`` carries the meeting's state as it stood then (``participants``,
    ``streams``)."""
    frame: dict[str, Any] = {"op": op, "channel": channel}
    if meeting is not None:
        frame["meeting"] = meeting
    return _with_request(frame, request_id)


def status(record: dict[str, Any], request_id: str | None) -> str:
    """The answer to ``status``: a task's status, with its result or error once over."""
    return _with_request({"op": "status", **record}, request_id)


def session(
    session_id: str,
    user_id: str,
    resumed: bool,
    tasks: list[dict[str, Any]],
    limits: dict[str, Any],
    expires_at: float,
) -> str:
    """The first frame after auth: the session to resume later with ``?session=``, and
    when the token it was opened with expires (the connection closes then)."""
    frame = {"op": "session", "session_id": session_id, "user_id": user_id, "resumed": resumed}
    return encode({**frame, "tasks": tasks, "limits": limits, "expires_at": expires_at})


def token_expiring(expires_at: float) -> str:
    """Asks the client for a fresh token (``auth``) before the connection's expires."""
    return encode({"op": "token_expiring", "expires_at": expires_at})


def authenticated(expires_at: float, request_id: str | None) -> str:
    """A token refresh took: the connection now lasts until ``expires_at``."""
    return _with_request({"op": "authenticated", "expires_at": expires_at}, request_id)


def event(channel: str, raw_event: str) -> str:
    """An EventBus event as it came from Redis (already JSON), built once per event."""
    return f'{{"op":"event","channel":{json.dumps(channel)},"event":{raw_event}}}'


# -- a task's frames, sent by the worker running it ----------------------------------


def task_processing(task_id: str, request_id: str | None) -> str:
    """A worker took the task (as ``store/lua/fetch.lua`` builds it)."""
    return _with_request({"op": "progress", "task_id": task_id, "status": "processing"}, request_id)


def task_delta(task_id: str, index: int, text: str, request_id: str | None) -> str:
    """One piece of streamed output; pieces are numbered from 0 in order."""
    frame = {"op": "delta", "index": index, "delta": text, "task_id": task_id}
    return _with_request(frame, request_id)


def task_restarted(task_id: str, reason: str, request_id: str | None) -> str:
    """Output so far is void (the work moved to another node); deltas start over at 0."""
    frame = {"op": "progress", "state": "restarted", "reason": reason, "task_id": task_id}
    return _with_request(frame, request_id)


def task_retrying(task_id: str, error: str, request_id: str | None) -> str:
    """The run failed and the task will run again."""
    frame = {"op": "progress", "task_id": task_id, "state": "retrying", "error": error}
    return _with_request(frame, request_id)


def task_result(task_id: str, status: str, result: Any, error: str, request_id: str | None) -> str:
    """How the task ended: its result if it completed, else its error. Encoded as Celery
    encodes results (kombu's JSON, which knows dates, UUIDs, decimals…)."""
    frame: dict[str, Any] = {"op": "result", "task_id": task_id, "status": status}
    if status == "completed":
        frame["result"] = result
    else:
        frame["error"] = error
    if request_id is not None:
        frame["request_id"] = request_id
    return str(dumps(frame))  # type: ignore[no-untyped-call]
