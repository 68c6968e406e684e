"""The client side of the gateway's wire protocol (docs/gateway.md), without sockets.

Frames are built and read here, and a RequestTracker turns the frames a client receives
into timings per request (accepted, first delta, result), so the WebSocket layer in
``gateway.py`` only moves text and reads the clock.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


def submit(
    request_id: str,
    task_type: str,
    data: dict[str, Any],
    priority: str = "normal",
    timeout: float = 30,
) -> str:
    return json.dumps(
        {
            "op": "submit",
            "request_id": request_id,
            "type": task_type,
            "priority": priority,
            "data": data,
            "timeout": timeout,
        }
    )


def subscribe(channel: str) -> str:
    return json.dumps({"op": "subscribe", "channel": channel})


def ping() -> str:
    return json.dumps({"op": "ping"})


def decode(message: str | bytes) -> dict[str, Any] | None:
    """One server frame, or None for anything that is not a JSON object."""
    try:
        frame = json.loads(message)
    except (TypeError, ValueError):
        return None
    return frame if isinstance(frame, dict) else None


def find_value(obj: Any, key: str) -> Any:
    """The first value of ``key`` anywhere in nested dicts and lists (the protocol does not
    fix where an event frame puts the event's payload)."""
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        children: Any = obj.values()
    elif isinstance(obj, list):
        children = obj
    else:
        return None
    for child in children:
        found = find_value(child, key)
        if found is not None:
            return found
    return None


@dataclass
class RequestTracker:
    """When each submitted request was sent, accepted, first streamed, and finished."""

    sent: dict[str, float] = field(default_factory=dict)
    accepted: dict[str, float] = field(default_factory=dict)
    first_delta: dict[str, float] = field(default_factory=dict)
    finished: dict[str, float] = field(default_factory=dict)
    #: request id -> result status ("completed", "failed" …) or "error:<code>".
    outcome: dict[str, str] = field(default_factory=dict)
    deltas: Counter[str] = field(default_factory=Counter)
    task_request: dict[str, str] = field(default_factory=dict)
    #: Frames that name no request of ours (errors without request id, unknown ops).
    other: Counter[str] = field(default_factory=Counter)

    def on_send(self, request_id: str, now: float) -> None:
        self.sent[request_id] = now

    def on_frame(self, frame: dict[str, Any], now: float) -> str | None:
        """Record one received frame; returns the request id it finished, if any."""
        op = frame.get("op")
        request_id = frame.get("request_id")
        if request_id is None and frame.get("task_id") in self.task_request:
            request_id = self.task_request[frame["task_id"]]
        if request_id not in self.sent:
            self.other[f"{op}:{frame.get('code')}" if op == "error" else str(op)] += 1
            return None
        if op == "accepted":
            self.accepted.setdefault(request_id, now)
            if frame.get("task_id"):
                self.task_request[frame["task_id"]] = request_id
        elif op == "delta":
            self.first_delta.setdefault(request_id, now)
            self.deltas[request_id] += 1
        elif op in ("result", "error") and request_id not in self.finished:
            self.finished[request_id] = now
            status = frame.get("status") if op == "result" else f"error:{frame.get('code')}"
            self.outcome[request_id] = str(status)
            return request_id
        return None

    def latencies(self, times: dict[str, float], status: str | None = "completed") -> list[float]:
        """Seconds from send to ``times`` (e.g. ``finished``) of requests that ended ``status``."""
        return [
            at - self.sent[rid]
            for rid, at in times.items()
            if status is None or self.outcome.get(rid) == status
        ]

    def outcomes(self) -> dict[str, int]:
        counts = Counter(self.outcome.values())
        counts["no answer"] = len(self.sent) - len(self.finished)
        return {k: v for k, v in counts.items() if v}
