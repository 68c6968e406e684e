"""Partial output of a running task, pushed to the client session that submitted it.

A task sent on behalf of a client session (the gateway and the dispatcher set the
session and request id headers) can stream deltas (LLM tokens) and progress while it
runs; they go out on the session's Redis channel, where the gateway process holding
that client's WebSocket forwards them as frames. A task sent by a service has no
session: streaming is then a no-op, and only the final result counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from meetingtasks.base import headers as h
from meetingtasks.base.keys import get_keys
from meetingtasks.store import get_redis


@dataclass
class TaskStream:
    task_id: str
    session_id: str | None
    request_id: str | None = None
    index: int = 0

    @classmethod
    def for_request(cls, request: Any) -> TaskStream:
        return cls(request.id, h.get(request, h.SESSION), h.get(request, h.REQUEST))

    def delta(self, text: str) -> None:
        """One piece of streamed output; pieces are numbered from 0 in order."""
        self._push({"op": "delta", "index": self.index, "delta": text})
        self.index += 1

    def restart(self, reason: str) -> None:
        """Output so far is void (the work moved to another node); deltas start over at 0."""
        self._push({"op": "progress", "state": "restarted", "reason": reason})
        self.index = 0

    def _push(self, frame: dict[str, Any]) -> None:
        if self.session_id is None:
            return
        frame = {**frame, "task_id": self.task_id}
        if self.request_id is not None:
            frame["request_id"] = self.request_id
        get_redis().publish(get_keys().session_channel(self.session_id), json.dumps(frame))
