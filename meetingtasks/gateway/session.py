"""A client session's state in one gateway process, without I/O: its limits and tasks.

A session outlives its connections (its record lives in Redis, ``sessions_store``);
this is what the process serving it keeps while it has a connection: the submit rate
budget, the tasks not yet over (the concurrency limit), and the ordering rule that a
client sees ``accepted`` before any frame of that task.

That rule needs care because a fast task's frames come back on the session's Redis
channel while the submit that queued it is still returning its task id: a frame whose
task this session does not know yet, arriving while a submit is in flight, is held and
released once the submit is answered.

Several connections (tabs, a reconnect not yet noticed by the old socket) may share a
session in one process; they share this object. Limits count per process: a session
connected to two gateway processes at once gets each one's budget.
"""

from __future__ import annotations

from typing import Any, Protocol

from meetingtasks.base import tracing
from meetingtasks.gateway import protocol as p


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; one per submit."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def full(self, now: float) -> bool:
        """Whether it filled up again since its last use."""
        return self.tokens + (now - self.stamp) * self.rate >= self.burst

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Member(Protocol):
    """What the hub needs of one client connection (``connection.Connection``): the
    session it serves, the meeting channels it follows, and a way to send it frames."""

    session: Session | None
    channels: set[str] | None

    def push(self, frame: str, wire: bytes | None = None) -> None: ...

    def error(self, code: str, message: str, request_id: str | None = None) -> None: ...


class Session:
    """One client session as this process serves it. ``members`` are its connections
    here."""

    __slots__ = (
        "active", "bucket", "held", "id", "inflight", "max_tasks", "members", "traces", "user_id",
    )  # fmt: skip

    def __init__(
        self, session_id: str, user_id: str, max_tasks: int, rate: float, burst: int, now: float
    ) -> None:
        self.id = session_id
        self.user_id = user_id
        self.max_tasks = max_tasks
        self.bucket = TokenBucket(rate, burst, now)
        #: Ids of this session's tasks not known to be over.
        self.active: set[str] = set()
        #: Submits sent to the dispatcher and not answered yet.
        self.inflight = 0
        #: (frame, task id, op) of unknown tasks that came while a submit was in flight.
        self.held: list[tuple[str, str | None, str | None]] = []
        self.members: list[Member] = []
        #: With tracing on: the span context of each active task's submit, which its
        #: result frame's span continues (``base/tracing.py``).
        self.traces: dict[str, Any] = {}

    @property
    def full(self) -> bool:
        return len(self.active) + self.inflight >= self.max_tasks

    def admit(self, now: float) -> tuple[str, str] | None:
        """None if a submit may go ahead (and takes a rate token), else (code, message).

        The concurrency check comes first: a submit refused for it costs no token.
        """
        if self.full:
            return (
                p.TOO_MANY_TASKS,
                f"{self.max_tasks} tasks of this session are unfinished: wait for a result "
                "(or cancel one) before submitting more",
            )
        if not self.bucket.take(now):
            return (
                p.RATE_LIMITED,
                f"over {self.bucket.rate:g} submits a second (bursts of {self.bucket.burst}): "
                "slow down and send it again",
            )
        self.inflight += 1
        return None

    def submitted(self, task_id: str | None) -> list[str]:
        """The submit admitted last was answered (``task_id`` None: it was refused).
        Returns the held frames that can go out now, in order, after ``accepted``."""
        self.inflight -= 1
        if task_id is not None:
            self.active.add(task_id)
        held, self.held = self.held, []
        return [frame for frame, task, op in held if self.route(frame, task, op)]

    def route(self, frame: str, task_id: str | None, op: str | None) -> bool:
        """Whether a frame of the session's channel goes out now (else it is held)."""
        if self.inflight and task_id is not None and task_id not in self.active:
            self.held.append((frame, task_id, op))
            return False
        if op == "result":
            self.active.discard(task_id)
            if self.traces and task_id is not None:
                self.result_span(task_id)
        return True

    def result_span(self, task_id: str) -> None:
        """The span of the result frame going out, in the trace of the task's submit."""
        submit = self.traces.pop(task_id, None)
        if submit is not None:
            span = tracing.start(
                "gateway.result", parent=tracing.child_of(submit),
                attributes={tracing.TASK_ID: task_id, tracing.SESSION: self.id},
            )  # fmt: skip
            if span is not None:
                span.end()

    def forget(self, task_ids: list[str]) -> None:
        """These tasks are over (their result frames were missed, e.g. while Redis was
        away): they no longer count against the limit."""
        self.active.difference_update(task_ids)
        for task_id in task_ids:
            self.traces.pop(task_id, None)
