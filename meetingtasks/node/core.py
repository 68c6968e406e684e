"""What the reference inference node answers, without I/O: its work units and handlers.

``NodeCore.handle(raw, owner)`` takes the bytes of one request and yields the replies to
send back, in order; the ZMQ and TCP front ends (``servers.py``) only move bytes.
It answers as a StackFlow ``llm`` unit behind its unit manager does, error codes included
(see ``protocol.py``), and it never raises: malformed JSON, binary garbage, an unknown
action or work_id, a failing backend, each becomes an error reply.

Work_ids (``llm.1000``, ``llm.1001`` …) are allocated on setup and released on exit or
when the TCP connection that set them up closes. An exit mid-reply (a client out of time
leaves that way) also stops the reply's generation at its next token. A ZMQ client that
vanished never says goodbye, so when the table is full the least recently used idle work
unit is recycled; its owner, if still there, gets -4 and sets up again. Only when every
unit is busy is a setup refused (-21, task full).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

from meetingtasks.base import tracing
from meetingtasks.errors import InferenceError
from meetingtasks.llm.protocol import (
    NONE,
    STREAM_FORMAT,
    Action,
    ErrorCode,
    Request,
    Response,
    error_response,
    parse_request,
    unit_of,
)
from meetingtasks.node.backends import Backend, BackendError, Generation

log = logging.getLogger(__name__)


@dataclass
class _WorkUnit:
    work_id: str
    owner: str
    setup: dict[str, Any]
    last_used: float
    busy: bool = False
    chunks: list[str] = field(default_factory=list)

    @property
    def response_format(self) -> str:
        return str(self.setup.get("response_format", STREAM_FORMAT))


class NodeCore:
    def __init__(
        self,
        backend: Backend,
        *,
        unit: str = "llm",
        max_work_ids: int = 16,
        first_work_id: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.unit = unit
        self.max_work_ids = max_work_ids
        self.clock = clock
        #: Set when the node stops: replies being generated end with error -10.
        self.stopping = threading.Event()
        self.generations = 0
        #: Replies being generated right now.
        self.replying = 0
        self._units: dict[str, _WorkUnit] = {}
        self._numbers = itertools.count(first_work_id)
        self._lock = threading.Lock()

    def work_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._units)

    def handle(self, raw: bytes, owner: str) -> Generator[Response, None, None]:
        """The replies to one request, in order (none for an unfinished streamed input).

        Closing the generator early (the client left) ends the reply's generation."""
        try:
            request = parse_request(raw)
        except InferenceError as exc:
            yield error_response("0", "sys", ErrorCode.JSON_FORMAT, f"json format error: {exc}")
            return
        handlers: dict[str, Callable[[Request, str], Iterator[Response]]] = {
            Action.SETUP: self._setup,
            Action.INFERENCE: self._inference,
            Action.TASKINFO: self._taskinfo,
            Action.EXIT: self._exit,
        }
        handler = handlers.get(request.action)
        if handler is None:
            yield self._error(
                request,
                ErrorCode.UNKNOWN_ACTION,
                f"action match false: unknown action {request.action!r}; "
                "use setup, inference, taskinfo or exit",
            )
            return
        yield from handler(request, owner)

    def release_owner(self, owner: str) -> None:
        """Free the work units set up over a connection that closed."""
        with self._lock:
            for work_id in [w for w, unit in self._units.items() if unit.owner == owner]:
                del self._units[work_id]

    def _setup(self, request: Request, owner: str) -> Iterator[Response]:
        if unit_of(request.work_id) != self.unit:
            yield self._error(
                request,
                ErrorCode.UNIT_CALL_FAILED,
                f"unit call false: this node serves unit {self.unit!r}, not "
                f"{unit_of(request.work_id)!r}",
            )
            return
        options = request.data
        if not isinstance(options, dict) or not isinstance(options.get("model"), str):
            yield self._error(
                request,
                ErrorCode.MODEL_LOAD_FAILED,
                "model loading failed: setup data must be an object with a model name",
            )
            return
        try:
            self.backend.setup(options)
        except Exception as exc:  # ValueError by contract; anything else must not crash us
            yield self._error(request, ErrorCode.MODEL_LOAD_FAILED, f"model loading failed: {exc}")
            return
        with self._lock:
            if len(self._units) >= self.max_work_ids and not self._recycle_idle():
                work_id = None
            else:
                work_id = f"{self.unit}.{next(self._numbers)}"
                self._units[work_id] = _WorkUnit(work_id, owner, options, self.clock())
        if work_id is None:
            yield self._error(
                request,
                ErrorCode.TASK_FULL,
                f"task full: all {self.max_work_ids} work units are busy; retry later",
            )
            return
        yield Response(request.request_id, work_id)

    def _recycle_idle(self) -> bool:
        idle = [unit for unit in self._units.values() if not unit.busy]
        if not idle:
            return False
        oldest = min(idle, key=lambda unit: unit.last_used)
        log.info("recycling idle work unit %s to make room", oldest.work_id)
        del self._units[oldest.work_id]
        return True

    def _inference(self, request: Request, owner: str) -> Iterator[Response]:
        with self._lock:
            unit = self._units.get(request.work_id)
            outcome = self._take_input(unit, request) if unit else None
            if unit and isinstance(outcome, str):
                unit.busy = True
        if unit is None:
            yield self._unknown(request, ErrorCode.UNKNOWN_WORK_ID, "inference data push false")
        elif isinstance(outcome, tuple):
            yield self._error(request, *outcome)
        elif isinstance(outcome, str):
            with self._lock:
                self.replying += 1
            try:
                yield from self._generate(request, unit, outcome)
            finally:
                with self._lock:
                    unit.busy = False
                    unit.last_used = self.clock()
                    self.replying -= 1

    @staticmethod
    def _take_input(unit: _WorkUnit, request: Request) -> str | tuple[ErrorCode, str] | None:
        """The complete input text; None while a streamed input is unfinished; or why the
        input is refused (error code and message)."""
        if unit.busy:
            return ErrorCode.NOT_AVAILABLE, f"{unit.work_id} is still answering; wait for it"
        data = request.data
        if isinstance(data, str):
            unit.chunks[:] = [data]
        elif (
            isinstance(data, dict)
            and isinstance(data.get("delta"), str)
            and type(data.get("index")) is int
            and isinstance(data.get("finish"), bool)
        ):
            if data["index"] != len(unit.chunks):
                unit.chunks.clear()
                return ErrorCode.STREAM_INDEX_ERROR, "stream data index error: send index 0 again"
            unit.chunks.append(data["delta"])
            if not data["finish"]:
                return None
        else:
            return ErrorCode.JSON_FORMAT, "inference data must be {delta, index, finish} or text"
        text = "".join(unit.chunks)
        unit.chunks.clear()
        if not text.strip():
            return ErrorCode.EMPTY_INPUT, "the inference data is empty: send some text"
        return text

    def _generate(self, request: Request, unit: _WorkUnit, text: str) -> Iterator[Response]:
        setup, fmt, streamed = unit.setup, unit.response_format, "stream" in unit.response_format
        generation = Generation(
            text, setup["model"], str(setup.get("prompt", "")), unit.work_id, setup
        )
        with self._lock:
            self.generations += 1
        parts: list[str] = []
        span = tracing.start(
            "node.generate", tracing.SERVER, tracing.context_of(request.traceparent),
            {"llm.model": setup.get("model"), "llm.work_id": unit.work_id},
        )  # fmt: skip
        try:
            for delta in self.backend.generate(generation):
                if span is not None and not parts:
                    span.add_event("first_token")
                if self.stopping.is_set():
                    yield self._error(request, ErrorCode.NOT_AVAILABLE, "the node is stopping")
                    return
                if self._units.get(unit.work_id) is not unit:
                    log.info("%s was exited mid-reply: generation stops", unit.work_id)
                    return  # its client left (a timeout): nobody reads the rest
                if not isinstance(delta, str):
                    raise TypeError(f"the backend yielded a {type(delta).__name__}, not text")
                if streamed:
                    data = {"index": len(parts), "delta": delta, "finish": False}
                    yield Response(request.request_id, unit.work_id, fmt, data)
                parts.append(delta)
        except BackendError as exc:  # a refusal with its own code (an upstream's)
            log.warning("backend refused %s: %s", unit.work_id, exc)
            yield error_response(request.request_id, request.work_id, exc.code, str(exc))
            return
        except Exception as exc:  # a backend's failure is the reply's, never the node's
            log.warning("backend failed on %s: %s", unit.work_id, exc, exc_info=True)
            yield self._error(request, ErrorCode.MODEL_RUN_FAILED, f"model run failed: {exc}")
            return
        finally:
            if span is not None:
                span.set_attribute("llm.deltas", len(parts))
                span.end()
        if streamed:
            data = {"index": len(parts), "delta": "", "finish": True}
            yield Response(request.request_id, unit.work_id, fmt, data)
        else:
            yield Response(request.request_id, unit.work_id, fmt, "".join(parts))

    def _taskinfo(self, request: Request, owner: str) -> Iterator[Response]:
        if request.work_id == self.unit:
            work_ids = self.work_ids()
            yield Response(request.request_id, self.unit, f"{self.unit}.tasklist", work_ids)
            return
        with self._lock:
            unit = self._units.get(request.work_id)
        if unit is None:
            yield self._unknown(request, ErrorCode.UNIT_NOT_FOUND, "Unit Does Not Exist")
            return
        info = {
            "model": unit.setup["model"],
            "response_format": unit.response_format,
            "enoutput": bool(unit.setup.get("enoutput", True)),
            "inputs": [str(unit.setup.get("input", STREAM_FORMAT))],
        }
        yield Response(request.request_id, unit.work_id, f"{self.unit}.taskinfo", info)

    def _exit(self, request: Request, owner: str) -> Iterator[Response]:
        with self._lock:
            unit = self._units.pop(request.work_id, None)
        if unit is None:
            yield self._unknown(request, ErrorCode.UNIT_NOT_FOUND, "Unit Does Not Exist")
            return
        yield Response(request.request_id, request.work_id, NONE, NONE)

    def _unknown(self, request: Request, code: ErrorCode, stackflow_text: str) -> Response:
        return self._error(
            request,
            code,
            f"{stackflow_text}: unknown work_id {request.work_id!r}; run setup first "
            "(work units are lost when the node restarts)",
        )

    @staticmethod
    def _error(request: Request, code: ErrorCode, message: str) -> Response:
        return error_response(request.request_id, request.work_id, code, message)
