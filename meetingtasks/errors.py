"""Every error meetingtasks raises, under one root.

    MeetingTasksError
    ├── ConfigurationError        settings or routes/ data that cannot work
    ├── ValidationError           bad input at an entry point; nothing was queued
    │   ├── InvalidPriority
    │   ├── UnknownTaskType
    │   ├── InvalidPayload
    │   ├── InvalidOption
    │   └── InvalidEvent          an event or channel name the event buses refuse
    ├── ProtocolError             a client frame the gateway refuses (``code`` says why)
    ├── AuthError                 a client token missing, forged, expired or malformed, or
    │                             a meeting it does not grant (``code`` says which)
    ├── NotReplicated             a write the replicas MEETINGTASKS_MIN_REPLICAS asks for did
    │                             not confirm in time
    ├── RedisFull                 Redis at its maxmemory refused a write; nothing of it was
    │                             written (retry once workers drain the queues)
    ├── WaitTimeout               a wait that ran out (a task not ended, a full local bus)
    ├── StateError                a component asked for what its state does not allow (used
    │                             after stop, added after start)
    └── TaskFailure               raised by a task handler
        ├── Retryable             transient: retried with backoff up to max_retries
        │   └── NodeUnavailable   no inference node answered in time
        │       ├── UnitUnavailable  the unit asked for is not running on that node
        │       └── CallTimedOut  the call's own budget (the task's time limit) ran out
        └── Permanent             business error: fails at once, never retried
            ├── InferenceError    an inference node refused the request or answered garbage
            ├── WorkerLost        the task's pool process died under it too many times
            └── OutOfMemory       the task ran out of memory (its MemoryError)

Validation errors are also ``ValueError``, ``WaitTimeout`` is a ``TimeoutError`` and
``StateError`` a ``RuntimeError``, so generic callers can catch them as such. Each
message says what was wrong and what to do about it.
"""

from __future__ import annotations


class MeetingTasksError(Exception):
    """Root of every meetingtasks error."""


class ConfigurationError(MeetingTasksError):
    """A setting, environment variable or routes/ entry cannot work as given."""


class ValidationError(MeetingTasksError, ValueError):
    """Input refused at an entry point before anything was queued."""


class NotReplicated(MeetingTasksError):
    """A write reached the primary but not the replicas MEETINGTASKS_MIN_REPLICAS asks
    for, in time: it may be lost in a failover, or applied (a retry may run it twice)."""


class RedisFull(MeetingTasksError):
    """Redis reached its ``maxmemory`` and refused a write (a send, an event), whole: nothing
    of it was written. Workers still drain the queues, which frees memory; retry then.

    From a batch (``dispatch_batch``, ``queueing.batch()``), which goes out in several
    script calls: ``accepted`` lists the ids of the tasks that went in (they will run),
    ``refused`` those that did not (send them again)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.accepted: list[str] = []
        self.refused: list[str] = []


class InvalidPriority(ValidationError):
    """A priority that is not one of critical, high, normal, low."""


class UnknownTaskType(ValidationError):
    """A task type that no route in routes/ (or register_route) names."""


class InvalidPayload(ValidationError):
    """A payload that is not a JSON object, is too large, or does not fit the task."""


class InvalidOption(ValidationError):
    """A submission option (timeout, retries, delay, expiry) out of its range."""


class InvalidEvent(ValidationError):
    """An event envelope, event type or channel name that is not valid."""


class ProtocolError(MeetingTasksError):
    """A client frame refused: ``code`` and a message that says what to send instead."""

    def __init__(self, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


class WaitTimeout(MeetingTasksError, TimeoutError):
    """A wait ran out before what it waited for happened."""


class StateError(MeetingTasksError, RuntimeError):
    """A component was asked for something its state does not allow (create a new one)."""


class TaskFailure(MeetingTasksError):
    """Raised by a task handler to say how its failure should be treated."""


class Retryable(TaskFailure):
    """A transient failure (a dependency is down, a node timed out): retry later."""


class Permanent(TaskFailure):
    """A failure that retrying cannot fix (bad data, a business rule): fail now."""


class NodeUnavailable(Retryable):
    """No inference node answered in time (dead, overloaded or unreachable)."""


class UnitUnavailable(NodeUnavailable):
    """The unit asked for is not running on that node (error -9); its other units may be."""


class CallTimedOut(NodeUnavailable):
    """An LLM call's own budget ran out; an AI task then ends ``timeout``, not retried."""


class InferenceError(Permanent):
    """An inference node refused the request (an error code) or answered garbage."""


class WorkerLost(Permanent):
    """The pool process running the task died under it (an exit, a signal, the OOM
    killer) MEETINGTASKS_MAX_WORKER_LOST times: it is not run again. Read its dead letter;
    a task that needs more memory than the ceiling raises MEETINGTASKS_MAX_MEMORY_PER_CHILD
    or runs on a queue of its own."""


class OutOfMemory(Permanent):
    """A MemoryError in the task: that task's failure (Celery would stop the whole worker)."""


class AuthError(MeetingTasksError):
    """A client the gateway cannot authenticate, or a right its token does not grant.

    ``code`` is the machine-readable reason the gateway sends (``token_expired`` …).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
