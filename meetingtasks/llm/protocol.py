"""The Edge-LLM-Infra (StackFlow) JSON protocol, without I/O: requests, replies, streams.

Bytes and dicts in, bytes, dicts and exceptions out, so it is tested without sockets and
the transports around it only move bytes. The shapes follow what the unit manager of
M5Stack's StackFlow and its fork Edge-LLM-Infra really send (read from their sources):

- A request is ``{request_id, work_id, action, object, data}``. ``setup`` goes to a unit
  name (``"llm"``) and the reply's ``work_id`` is the new work unit (``"llm.1000"``);
  ``inference``, ``taskinfo`` and ``exit`` go to that work_id.
- Every reply is ``{request_id, work_id, created, object, data, error: {code, message}}``,
  code 0 meaning success. Replies without data of their own carry the string ``"None"``
  as object and data.
- With a streamed response format (``llm.utf-8.stream``) an inference is answered by
  several replies whose data is ``{index, delta, finish}``: index counts from 0 and the
  last one has ``finish: true`` (and, on StackFlow, an empty delta). A plain format
  (``llm.utf-8``) is answered once, data being the whole text.
- A request the unit manager cannot parse is answered with request_id ``"0"`` and work_id
  ``"sys"``, and a unit reports some errors under its unit name (``"llm"``) instead of the
  work_id; both still count as the answer to our request.

Error codes, and what the client does with them (``node_error``):

    -9  unit call failed (unit not running)   UnitUnavailable: that unit of the node is
                                              skipped, not its other units; transient
    -10 not available at the moment           NodeUnavailable: transient, another node
    -21 task full (no free work unit)         or a later retry can succeed
    -4  inference push failed (unknown work_id) InferenceError, but the client first sets
    -6  unit does not exist (unknown work_id)   up again once: the node may have restarted
    -1 general, -2 JSON format, -3 unknown action, -5 model loading failed,
    -11 model run failed, -18 action not implemented, -24 empty input,
    -25 stream index error, and any other code  InferenceError: retrying cannot fix them
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

from meetingtasks.errors import InferenceError, InvalidPayload, NodeUnavailable, UnitUnavailable

STREAM_FORMAT = "llm.utf-8.stream"
TEXT_FORMAT = "llm.utf-8"
#: StackFlow's placeholder for "no object" and "no data" in a reply.
NONE = "None"
#: The longest message either side accepts; anything longer is garbage.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class Action(StrEnum):
    SETUP = "setup"
    INFERENCE = "inference"
    TASKINFO = "taskinfo"
    EXIT = "exit"


class ErrorCode(IntEnum):
    OK = 0
    GENERAL = -1
    JSON_FORMAT = -2
    UNKNOWN_ACTION = -3
    UNKNOWN_WORK_ID = -4
    MODEL_LOAD_FAILED = -5
    UNIT_NOT_FOUND = -6
    UNIT_CALL_FAILED = -9
    NOT_AVAILABLE = -10
    MODEL_RUN_FAILED = -11
    NO_UNIT_ACTION = -18
    TASK_FULL = -21
    EMPTY_INPUT = -24
    STREAM_INDEX_ERROR = -25


TRANSIENT_CODES = frozenset(
    {ErrorCode.UNIT_CALL_FAILED, ErrorCode.NOT_AVAILABLE, ErrorCode.TASK_FULL}
)
STALE_WORK_ID_CODES = frozenset({ErrorCode.UNKNOWN_WORK_ID, ErrorCode.UNIT_NOT_FOUND})

_ADVICE: dict[int, str] = {
    ErrorCode.JSON_FORMAT: "the request was malformed; this is a bug in the caller, report it",
    ErrorCode.UNKNOWN_ACTION: "the node does not know this action; check the node's version",
    ErrorCode.UNKNOWN_WORK_ID: "the node does not know this work_id (it may have restarted)",
    ErrorCode.MODEL_LOAD_FAILED: "check the model name and setup options against the node",
    ErrorCode.UNIT_NOT_FOUND: "the node does not know this work_id (it may have restarted)",
    ErrorCode.UNIT_CALL_FAILED: "the unit is not running on that node; the task is retried",
    ErrorCode.NOT_AVAILABLE: "the node is busy or stopping; the task is retried",
    ErrorCode.MODEL_RUN_FAILED: "the model failed while generating; see the node's log",
    ErrorCode.NO_UNIT_ACTION: "the unit does not implement this action",
    ErrorCode.TASK_FULL: "the node has no free work unit; the task is retried, or add nodes",
    ErrorCode.EMPTY_INPUT: "the prompt was empty; send some text",
    ErrorCode.STREAM_INDEX_ERROR: "the streamed input was out of order; report this bug",
}


@dataclass(frozen=True)
class Request:
    request_id: str
    work_id: str
    action: str
    object: str | None = None
    data: Any = None
    #: The caller's W3C trace context (ours, not Edge-LLM-Infra's: a peer ignores it).
    traceparent: str | None = None

    def to_dict(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "request_id": self.request_id,
            "work_id": self.work_id,
            "action": self.action,
        }
        if self.object is not None:
            message["object"] = self.object
        if self.data is not None:
            message["data"] = self.data
        if self.traceparent is not None:
            message["traceparent"] = self.traceparent
        return message

    def encode(self) -> bytes:
        return encode(self.to_dict())


@dataclass(frozen=True)
class Response:
    request_id: str
    work_id: str
    object: str = NONE
    data: Any = NONE
    code: int = 0
    message: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def ok(self) -> bool:
        return self.code == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "work_id": self.work_id,
            "created": self.created,
            "object": self.object,
            "data": self.data,
            "error": {"code": self.code, "message": self.message},
        }

    def encode(self) -> bytes:
        return encode(self.to_dict())


def error_response(request_id: str, work_id: str, code: int, message: str) -> Response:
    return Response(request_id, work_id, code=int(code), message=message)


@dataclass(frozen=True)
class UnitSetup:
    """What a work unit is set up with; equal setups can share one work_id."""

    unit: str
    model: str
    prompt: str = ""
    response_format: str = STREAM_FORMAT
    #: Longest reply in tokens (StackFlow's ``max_token_len``); None: the node's default.
    max_tokens: int | None = None
    #: Sampling temperature, 0 for the most likely token each time; None: the node's.
    temperature: float | None = None

    def request(self, request_id: str) -> Request:
        return Request(request_id, self.unit, Action.SETUP, f"{self.unit}.setup", self.data())

    def data(self) -> dict[str, Any]:
        """The setup request's ``data``: what the work unit is set up with."""
        data: dict[str, Any] = {
            "model": self.model,
            "response_format": self.response_format,
            "input": STREAM_FORMAT,
            "enoutput": True,
            "prompt": self.prompt,
        }
        if self.max_tokens is not None:
            data["max_token_len"] = self.max_tokens
        if self.temperature is not None:
            data["temperature"] = self.temperature
        return data


def inference_request(
    request_id: str, work_id: str, text: str, traceparent: str | None = None
) -> Request:
    """The whole input as one streamed chunk (index 0, finish), as StackFlow's own client does."""
    data = {"delta": text, "index": 0, "finish": True}
    return Request(request_id, work_id, Action.INFERENCE, STREAM_FORMAT, data, traceparent)


def taskinfo_request(request_id: str, work_id: str) -> Request:
    return Request(request_id, work_id, Action.TASKINFO)


def exit_request(request_id: str, work_id: str) -> Request:
    return Request(request_id, work_id, Action.EXIT)


def encode(message: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON, with braces inside strings written as ``\\u007b``/``\\u007d``.

    StackFlow's unit manager cuts its TCP input into messages by counting braces, so a
    brace in a prompt would cut a request in two; escaped, every JSON parser reads the
    same text and the count stays right.
    """
    text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
    out: list[str] = []
    in_string = escaped = False
    for char in text:
        if in_string and not escaped and char in "{}":
            out.append("\\u007b" if char == "{" else "\\u007d")
            continue
        out.append(char)
        if escaped:
            escaped = False
        elif in_string and char == "\\":
            escaped = True
        elif char == '"':
            in_string = not in_string
    return "".join(out).encode()


def _decode_object(raw: bytes | str, what: str) -> dict[str, Any]:
    """A JSON object from bytes, or InferenceError saying what came instead."""
    shown = raw[:80]
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InferenceError(f"{what} is longer than {MAX_MESSAGE_BYTES} bytes: refused")
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InferenceError(f"{what} is not JSON ({exc}): {shown!r}") from None
    if not isinstance(value, dict):
        raise InferenceError(f"{what} is not a JSON object: {shown!r}")
    return value


def _text_field(message: Mapping[str, Any], name: str, what: str) -> str:
    value = message.get(name)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InferenceError(f"{what} has no {name} string: {message!r:.200}")
    return str(value)


def parse_request(raw: bytes | str) -> Request:
    """A request from its bytes (the node side); InferenceError says what is wrong."""
    message = _decode_object(raw, "request")
    request_id, work_id, action = (
        _text_field(message, name, "request") for name in ("request_id", "work_id", "action")
    )
    obj = message.get("object")
    if obj is not None and not isinstance(obj, str):
        raise InferenceError(f"request object must be a string, not {obj!r:.80}")
    traceparent = message.get("traceparent")
    if not isinstance(traceparent, str):
        traceparent = None
    return Request(request_id, work_id, action, obj, message.get("data"), traceparent)


def parse_response(raw: bytes | str, node: str = "the inference node") -> Response:
    """A reply from its bytes (the client side); garbage is InferenceError."""
    what = f"reply from {node}"
    message = _decode_object(raw, what)
    error = message.get("error", {"code": 0, "message": ""})
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, bool) or not isinstance(code, int):
        raise InferenceError(f"{what} has no error.code integer: {message!r:.200}")
    obj, created = message.get("object", NONE), message.get("created", 0)
    if not isinstance(obj, str) or isinstance(created, bool) or not isinstance(created, int):
        raise InferenceError(f"{what} has a malformed object or created field: {message!r:.200}")
    return Response(
        request_id=_text_field(message, "request_id", what),
        work_id=_text_field(message, "work_id", what),
        object=obj,
        data=message.get("data", NONE),
        code=code,
        message=str(error.get("message", "")),
        created=created,
    )


def node_error(response: Response, node: str) -> InferenceError | NodeUnavailable:
    """The exception an error reply stands for: NodeUnavailable if retrying can help."""
    advice = _ADVICE.get(response.code, "see the node's log")
    text = (
        f"inference node {node} answered error {response.code} "
        f"({response.message or 'no message'}): {advice}"
    )
    if response.code == ErrorCode.UNIT_CALL_FAILED:
        return UnitUnavailable(text)
    return NodeUnavailable(text) if response.code in TRANSIENT_CODES else InferenceError(text)


def unit_of(work_id: str) -> str:
    return work_id.partition(".")[0]


def check_reply(request: Request, response: Response, node: str) -> None:
    """Refuse a reply that does not answer ``request`` (InferenceError).

    Success must echo our request_id and work_id (for setup: a work_id of our unit).
    An error may also come as request_id "0" (unparseable request), and under any
    work_id of our unit, the unit name or "sys": StackFlow reports errors that way.
    """
    if response.ok:
        ids_match = response.request_id == request.request_id
        if request.action == Action.SETUP:
            new_unit = response.work_id != request.work_id
            work_id_match = new_unit and unit_of(response.work_id) == request.work_id
        else:
            work_id_match = response.work_id == request.work_id
    else:
        ids_match = response.request_id in (request.request_id, "0")
        work_id_match = unit_of(response.work_id) in (unit_of(request.work_id), "sys")
    if not (ids_match and work_id_match):
        raise InferenceError(
            f"inference node {node} answered request {response.request_id!r} of "
            f"{response.work_id!r} while we waited for {request.request_id!r} of "
            f"{request.work_id!r}: the node mixes up replies; check its version"
        )


class ReplyAssembler:
    """One inference reply put together from its responses, checking each on the way.

    ``feed`` returns the text a response adds; ``done`` turns true with the chunk marked
    finish (or with a plain, unstreamed reply). A chunk out of order, repeated, for
    another request, malformed, or after the end is InferenceError; an error reply raises
    what ``node_error`` says.
    """

    def __init__(self, request: Request, node: str) -> None:
        self.request = request
        self.node = node
        self.done = False
        self._parts: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def chunks(self) -> int:
        return len(self._parts)

    def feed(self, response: Response) -> str:
        if self.done:
            raise InferenceError(f"inference node {self.node} kept streaming after finish")
        check_reply(self.request, response, self.node)
        if not response.ok:
            raise node_error(response, self.node)
        data = response.data
        if isinstance(data, str) and not response.object.endswith(".stream"):
            return self._add(data, finish=True)
        if not (
            isinstance(data, dict)
            and type(data.get("index")) is int
            and isinstance(data.get("delta"), str)
            and isinstance(data.get("finish"), bool)
        ):
            raise InferenceError(
                f"inference node {self.node} sent a chunk that is not "
                f"{{index, delta, finish}}: {data!r:.200}"
            )
        if data["index"] != len(self._parts):
            problem = "a repeated" if data["index"] < len(self._parts) else "an out-of-order"
            raise InferenceError(
                f"inference node {self.node} sent {problem} chunk {data['index']} where "
                f"chunk {len(self._parts)} was due: the stream is corrupt"
            )
        return self._add(data["delta"], finish=data["finish"])

    def _add(self, delta: str, finish: bool) -> str:
        self._parts.append(delta)
        self.done = finish
        return delta


_ROLES = ("system", "user", "assistant")


def split_prompt(prompt: str | Sequence[Mapping[str, str]]) -> tuple[str, str]:
    """(system prompt, input text) for a prompt or a chat history of {role, content}.

    The protocol has no chat history: a unit takes a system prompt at setup and one text
    per inference. So system messages become the setup prompt, and the other turns are
    written out as a ``role: content`` transcript when there is more than one.
    """
    if isinstance(prompt, str):
        if not prompt.strip():
            raise InvalidPayload("the prompt is empty: give the model some text")
        return "", prompt
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for message in prompt:
        role = message.get("role") if isinstance(message, Mapping) else None
        content = message.get("content") if isinstance(message, Mapping) else None
        if role not in _ROLES or not isinstance(content, str):
            raise InvalidPayload(
                f"chat message {message!r:.80} refused: each one needs a role "
                f"({', '.join(_ROLES)}) and a content string"
            )
        if role == "system":
            system.append(content)
        else:
            turns.append((role, content))
    if not turns or turns[-1][0] != "user" or not turns[-1][1].strip():
        raise InvalidPayload("a chat history must end with a non-empty user message")
    if len(turns) == 1:
        return "\n".join(system), turns[0][1]
    return "\n".join(system), "\n".join(f"{role}: {content}" for role, content in turns)
