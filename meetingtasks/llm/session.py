"""One connection to one inference node and the exchanges on it: setup, inference, exit.

A session is used by one thread at a time (ZMQ sockets are not thread-safe; the client
lends sessions out from a pool). It keeps the work_ids it set up, one per distinct
``UnitSetup``, so a model is loaded once per connection, not once per prompt: loading is
slow on real StackFlow hardware. A node that forgot a work_id (it restarted, or recycled
an idle one) answers -4/-6; the session then sets up again once and repeats the prompt.

``reusable`` tells the pool whether the connection is still in step with the node: true
after a complete reply or a well-formed error reply, false after anything else (a timeout,
garbage, a lost connection, a callback that raised), because late replies may follow.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from meetingtasks.base import tracing
from meetingtasks.errors import CallTimedOut, MeetingTasksError, NodeUnavailable
from meetingtasks.llm.protocol import (
    STALE_WORK_ID_CODES,
    ReplyAssembler,
    Request,
    Response,
    UnitSetup,
    check_reply,
    exit_request,
    inference_request,
    node_error,
    parse_response,
)
from meetingtasks.llm.transport import Connection


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


class NodeSession:
    def __init__(self, connection: Connection, read_timeout: float) -> None:
        self.connection = connection
        self.read_timeout = read_timeout
        self.reusable = True
        self._work_ids: dict[UnitSetup, str] = {}

    @property
    def address(self) -> str:
        return self.connection.address

    def generate(
        self, setup: UnitSetup, text: str, deadline: float, on_delta: Callable[[str], None]
    ) -> str:
        """The whole reply to ``text``; each non-empty delta goes to ``on_delta`` first."""
        self.reusable = False
        cached = setup in self._work_ids
        work_id = self._work_ids.get(setup) or self._setup(setup, deadline)
        reply = self._infer(work_id, text, deadline, on_delta, stale_ok=cached)
        if reply is None:
            del self._work_ids[setup]
            reply = self._infer(self._setup(setup, deadline), text, deadline, on_delta, False)
        self.reusable = True
        return reply or ""

    def close(self, graceful: bool, timeout: float = 1.0) -> None:
        """Close the connection, releasing the work_ids first (best effort).

        ``graceful``: each exit is answered before the next. Otherwise (the connection is
        out of step: a reply was cut short) the exits go out unanswered, so a node that
        is still streaming to us stops and frees the unit: over ZMQ it would never learn
        that we left."""
        deadline = time.monotonic() + timeout
        exits = [exit_request(new_request_id(), work_id) for work_id in self._work_ids.values()]
        try:
            for request in exits:
                if graceful:
                    self._exchange(request, deadline)
                else:
                    self.connection.send(request.encode(), self._wait(deadline))
        except MeetingTasksError:
            pass  # the node is gone or refuses: it frees the work_ids itself
        finally:
            self.connection.close(flush=timeout if exits and not graceful else 0.0)

    def _setup(self, setup: UnitSetup, deadline: float) -> str:
        response = self._exchange(setup.request(new_request_id()), deadline)
        self._work_ids[setup] = response.work_id
        return response.work_id

    def _infer(
        self,
        work_id: str,
        text: str,
        deadline: float,
        on_delta: Callable[[str], None],
        stale_ok: bool,
    ) -> str | None:
        """The reply, or None when the node no longer knows a cached ``work_id``."""
        request = inference_request(new_request_id(), work_id, text, tracing.traceparent())
        self.connection.send(request.encode(), self._wait(deadline))
        reply = ReplyAssembler(request, self.address)
        while not reply.done:
            response = self._receive(request, deadline)
            if not response.ok:
                if stale_ok and not reply.chunks and response.code in STALE_WORK_ID_CODES:
                    return None
                self.reusable = True  # a well-formed error ends the exchange: still in step
                raise node_error(response, self.address)
            if delta := reply.feed(response):
                on_delta(delta)
        return reply.text

    def _exchange(self, request: Request, deadline: float) -> Response:
        self.connection.send(request.encode(), self._wait(deadline))
        response = self._receive(request, deadline)
        if not response.ok:
            self.reusable = True
            raise node_error(response, self.address)
        return response

    def _receive(self, request: Request, deadline: float) -> Response:
        try:
            raw = self.connection.recv(self._wait(deadline))
        except NodeUnavailable as exc:
            if time.monotonic() >= deadline:  # the call's budget, not the node, cut the wait
                raise self._out_of_time() from exc
            raise
        response = parse_response(raw, self.address)
        check_reply(request, response, self.address)
        return response

    def _wait(self, deadline: float) -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._out_of_time()
        return min(self.read_timeout, remaining)

    def _out_of_time(self) -> CallTimedOut:
        return CallTimedOut(
            f"the call's timeout ran out before inference node {self.address} finished "
            "its reply: raise the timeout or add nodes"
        )
