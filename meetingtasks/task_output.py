"""Partial output of a running task, pushed to the client session that submitted it.

A task sent on behalf of a client session (the gateway and the dispatcher set the
session and request id headers) can stream deltas (LLM tokens) and progress while it
runs; they go out on the session's Redis channel, where the gateway process holding
that client's WebSocket forwards them as frames. A task sent by a service has no
session: streaming is then a no-op, and only the final result counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meetingtasks.base import frames
from meetingtasks.base import headers as h
from meetingtasks.base.keys import get_keys
from meetingtasks.store import get_redis


@dataclass
class TaskOutput:
    task_id: str
    session_id: str | None
    request_id: str | None = None
    index: int = 0

    @classmethod
    def for_request(cls, request: Any) -> TaskOutput:
        return cls(request.id, h.get(request, h.SESSION), h.get(request, h.REQUEST))

    def delta(self, text: str) -> None:
        """One piece of streamed output; pieces are numbered from 0 in order."""
        if self.session_id is not None:
            self._push(frames.task_delta(self.task_id, self.index, text, self.request_id))
        self.index += 1

    def restart(self, reason: str) -> None:
        """Output so far is void (the work moved to another node); deltas start over at 0."""
        if self.session_id is not None:
            self._push(frames.task_restarted(self.task_id, reason, self.request_id))
        self.index = 0

    def _push(self, frame: str) -> None:
        get_redis().publish(get_keys().session_channel(str(self.session_id)), frame)
