"""The client wire protocol (docs/gateway.md) without I/O: client text in, commands or a
``ProtocolError`` out. The server frames are built in ``base/frames.py``, whoever sends
them.

Every frame is one JSON object with an ``op``. Client ops: ``auth``, ``submit``,
``cancel``, ``status``, ``subscribe``, ``unsubscribe``, ``ping``; every one may carry a
``request_id`` that the answer repeats (``auth`` on an open connection refreshes its
token). Server ops: ``session`` (after auth), ``accepted``, ``progress``/``delta``/
``result`` (from the workers, forwarded as they are), ``status``,
``subscribed``/``unsubscribed``, ``event``, ``error``, ``pong``, ``token_expiring``
(send a new token before ``expires_at``) and ``authenticated`` (a refresh took).

Parsing is strict, so a client's mistake is named instead of silently ignored: an
unknown field is an error, numbers must be finite and fit 64 bits, and task data is
bounded in size and depth before anything else looks at it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meetingtasks.base.priority import Priority
from meetingtasks.base.settings import default
from meetingtasks.errors import InvalidPriority, ProtocolError

# -- error codes of ``error`` frames (and of close reasons) ----------------------------
BAD_JSON = "bad_json"
BINARY_FRAME = "binary_frame"
NOT_OBJECT = "not_object"
FRAME_TOO_LARGE = "frame_too_large"
TOO_DEEP = "too_deep"
BAD_NUMBER = "bad_number"
UNKNOWN_OP = "unknown_op"
MISSING_FIELD = "missing_field"
BAD_FIELD = "bad_field"
PAYLOAD_TOO_LARGE = "payload_too_large"
UNKNOWN_TASK = "unknown_task"
INVALID_PAYLOAD = "invalid_payload"
RATE_LIMITED = "rate_limited"
TOO_MANY_TASKS = "too_many_tasks"
MEETING_NOT_ALLOWED = "meeting_not_allowed"
CHANNEL_NOT_ALLOWED = "channel_not_allowed"
TASK_NOT_FOUND = "task_not_found"
TASK_FINISHED = "task_finished"
SESSION_NOT_FOUND = "session_not_found"
ALREADY_AUTHENTICATED = "already_authenticated"
UNAVAILABLE = "unavailable"
INTERNAL = "internal"
TOKEN_MISSING = "token_missing"
TOKEN_BAD_SIGNATURE = "token_bad_signature"
TOKEN_EXPIRED = "token_expired"
TOKEN_MALFORMED = "token_malformed"
TOKEN_NOT_YET_VALID = "token_not_yet_valid"
TOKEN_TOO_LONG_LIVED = "token_too_long_lived"
ORIGIN_REFUSED = "origin_refused"
TOO_MANY_CONNECTIONS = "too_many_connections"
GATEWAY_FULL = "gateway_full"
TOO_MANY_SESSIONS = "too_many_sessions"
OPERATOR_TOKEN_REQUIRED = "operator_token_required"
USER_MISMATCH = "user_mismatch"
AUTH_TIMEOUT = "auth_timeout"
TOO_SLOW = "too_slow"

# -- WebSocket close codes ---------------------------------------------------------------
#: No valid token (missing, bad signature, expired, malformed); the reason says which.
CLOSE_UNAUTHENTICATED = 4401
#: A token refresh (``auth`` on an open connection) named another user, or the page's
#: origin is not an allowed one.
CLOSE_FORBIDDEN = 4403
#: No ``auth`` frame within MEETINGTASKS_GATEWAY_AUTH_TIMEOUT.
CLOSE_AUTH_TIMEOUT = 4408
#: The client left more than MEETINGTASKS_GATEWAY_OUTBOX_FRAMES frames unread, or holds
#: as many connections or sessions as it may.
CLOSE_TOO_SLOW = 4429
CLOSE_TOO_MANY = 4429
#: Redis did not answer while the session was being opened, or the gateway process
#: holds as many connections as it may: try again later (RFC 6455).
CLOSE_TRY_AGAIN = 1013

#: Longest ids and names a client may send.
MAX_ID = 128
MAX_TOKEN = 8192
#: The longest delay a client may ask for, in seconds (30 days).
MAX_DELAY = 30 * 86400
#: Integers beyond 64 bits are refused: most clients cannot represent them exactly.
INT_LIMIT = 2**63
#: Priorities clients may ask for; critical is kept for the services' own work.
CLIENT_PRIORITIES = "high, normal or low"
#: A JSON escape of a UTF-16 surrogate: fine in pairs, not valid Unicode alone.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


@dataclass(frozen=True, slots=True)
class Limits:
    """What a client frame may weigh (settings ``MEETINGTASKS_GATEWAY_*``)."""

    max_frame_bytes: int = default("gateway_max_frame_bytes")
    max_payload_bytes: int = default("gateway_max_payload_bytes")
    max_depth: int = default("gateway_max_depth")


# -- client commands ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Auth:
    token: str
    session_id: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Submit:
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    priority: Priority | None = None
    timeout: float | None = None
    meeting_id: str | None = None
    request_id: str | None = None
    #: Seconds before the task may run (it is ``scheduled`` until then).
    delay: float | None = None


@dataclass(frozen=True, slots=True)
class Cancel:
    task_id: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Status:
    task_id: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Subscribe:
    channel: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    channel: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    request_id: str | None = None


Command = Auth | Submit | Cancel | Status | Subscribe | Unsubscribe | Ping


def parse_frame(text: str, limits: Limits) -> Command:
    """The command of one client text frame, or ProtocolError."""
    size = len(text) if len(text) * 4 <= limits.max_frame_bytes else len(text.encode())
    if size > limits.max_frame_bytes:
        raise ProtocolError(
            FRAME_TOO_LARGE,
            f"frame of {size} bytes is over the {limits.max_frame_bytes}-byte limit; "
            "send large data by reference (a URL, a stored object's id)",
        )
    return parse_command(decode(text), limits)


def decode(text: str) -> Any:
    """JSON with finite numbers of at most 64 bits, a bounded nesting (the C decoder
    gives up with RecursionError long before the stack is in danger), and valid Unicode:
    an escaped lone surrogate (backslash-u-DC80) is refused here, because JSON decoders
    further on (Lua's among them) refuse it where no client could be told."""
    try:
        value = json.loads(
            text, parse_int=_int, parse_float=_float, parse_constant=_refuse_constant
        )
        if _SURROGATE_ESCAPE.search(text):
            json.dumps(value, ensure_ascii=False).encode()
        return value
    except RecursionError:
        raise ProtocolError(TOO_DEEP, "frame nests too deep to read") from None
    except UnicodeEncodeError:
        raise ProtocolError(BAD_JSON, "frame escapes a lone surrogate: not Unicode") from None
    except ValueError as exc:  # JSONDecodeError, and int() of thousands of digits
        raise ProtocolError(BAD_JSON, f"frame is not JSON: {exc}") from None


def parse_command(obj: Any, limits: Limits) -> Command:
    """A decoded frame (or an HTTP body with its ``op``) as a typed command."""
    if not isinstance(obj, dict):
        raise ProtocolError(
            NOT_OBJECT, f'a frame is one JSON object such as {{"op": "ping"}}, not {_kind(obj)}'
        )
    request_id = _text(obj, "request_id", None, required=False)
    op = _text(obj, "op", request_id)
    parser = _PARSERS.get(op)
    if parser is None:
        raise ProtocolError(
            UNKNOWN_OP, f"unknown op {op!r}: use one of {', '.join(sorted(_PARSERS))}", request_id
        )
    fields, parse = parser
    unknown = set(obj) - fields - {"op", "request_id"}
    if unknown:
        raise ProtocolError(
            BAD_FIELD,
            f"unknown field(s) {', '.join(sorted(unknown))} in {op}: "
            f"it takes {', '.join(sorted(fields | {'request_id'}))}",
            request_id,
        )
    return parse(obj, request_id, limits)


def _parse_submit(obj: dict[str, Any], request_id: str | None, limits: Limits) -> Submit:
    name = _text(obj, "type", request_id)
    data = obj.get("data", {})
    if not isinstance(data, dict):
        raise ProtocolError(
            BAD_FIELD,
            f"data must be a JSON object of the task's arguments, not {_kind(data)}",
            request_id,
        )
    if _too_deep(data, limits.max_depth):
        raise ProtocolError(
            TOO_DEEP, f"data nests deeper than {limits.max_depth} levels", request_id
        )
    size = len(json.dumps(data, separators=(",", ":")).encode())
    if size > limits.max_payload_bytes:
        raise ProtocolError(
            PAYLOAD_TOO_LARGE,
            f"data of {size} bytes is over the {limits.max_payload_bytes}-byte limit; "
            "pass a reference to large data instead",
            request_id,
        )
    return Submit(
        type=name,
        data=data,
        priority=_priority(obj.get("priority"), request_id),
        timeout=_seconds("timeout", obj.get("timeout"), request_id, positive=True),
        meeting_id=_meeting(obj, data, request_id),
        request_id=request_id,
        delay=_seconds("delay", obj.get("delay"), request_id, limit=MAX_DELAY),
    )


def _parse_auth(obj: dict[str, Any], request_id: str | None, limits: Limits) -> Auth:
    token = _text(obj, "token", request_id, limit=MAX_TOKEN)
    return Auth(token, _text(obj, "session", request_id, required=False), request_id)


def _parse_task(kind: type[Cancel] | type[Status]) -> Any:
    def parse(obj: dict[str, Any], request_id: str | None, limits: Limits) -> Cancel | Status:
        return kind(_text(obj, "task_id", request_id), request_id)

    return parse


def _parse_channel(kind: type[Subscribe] | type[Unsubscribe]) -> Any:
    def parse(
        obj: dict[str, Any], request_id: str | None, limits: Limits
    ) -> Subscribe | Unsubscribe:
        return kind(_text(obj, "channel", request_id, limit=200), request_id)

    return parse


#: Turns a frame (its object, request id and the limits) into its command.
Parser = Callable[[dict[str, Any], str | None, Limits], Command]

_PARSERS: dict[str, tuple[frozenset[str], Parser]] = {
    "auth": (frozenset({"token", "session"}), _parse_auth),
    "submit": (
        frozenset({"type", "data", "priority", "timeout", "delay", "meeting_id"}),
        _parse_submit,
    ),
    "cancel": (frozenset({"task_id"}), _parse_task(Cancel)),
    "status": (frozenset({"task_id"}), _parse_task(Status)),
    "subscribe": (frozenset({"channel"}), _parse_channel(Subscribe)),
    "unsubscribe": (frozenset({"channel"}), _parse_channel(Unsubscribe)),
    "ping": (frozenset(), lambda obj, request_id, limits: Ping(request_id)),
}


# -- field checks -----------------------------------------------------------------------


def _text(
    obj: dict[str, Any],
    name: str,
    request_id: str | None,
    required: bool = True,
    limit: int = MAX_ID,
) -> Any:
    value = obj.get(name)
    if value is None:
        if required:
            raise ProtocolError(MISSING_FIELD, f"{name} is required", request_id)
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ProtocolError(
            BAD_FIELD,
            f"{name} must be a non-empty string of at most {limit} characters, not {_kind(value)}",
            request_id,
        )
    return value


def _priority(value: Any, request_id: str | None) -> Priority | None:
    if value is None:
        return None
    try:
        priority = Priority.parse(value) if isinstance(value, str) else None
    except InvalidPriority:
        priority = None
    if priority is None or priority is Priority.CRITICAL:
        raise ProtocolError(
            BAD_FIELD, f"priority must be {CLIENT_PRIORITIES}, not {value!r}", request_id
        )
    return priority


def _seconds(
    name: str,
    value: Any,
    request_id: str | None,
    *,
    positive: bool = False,
    limit: int = 86400,
) -> float | None:
    """A number of seconds up to ``limit`` (above 0 when ``positive``, else 0 allowed)."""
    if value is None:
        return None
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and (value > 0 if positive else value >= 0) and value <= limit):
        raise ProtocolError(
            BAD_FIELD, f"{name} must be seconds between 0 and {limit}, not {value!r}", request_id
        )
    return float(value)


def _meeting(obj: dict[str, Any], data: dict[str, Any], request_id: str | None) -> str | None:
    """The meeting a submit acts for: named in the frame, in its data, or both alike."""
    named: str | None = _text(obj, "meeting_id", request_id, required=False)
    inside: str | None = _text(data, "meeting_id", request_id, required=False)
    if named and inside and named != inside:
        raise ProtocolError(
            BAD_FIELD, f"meeting_id {named!r} differs from data.meeting_id {inside!r}", request_id
        )
    return named or inside


def _too_deep(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        children = current.values() if isinstance(current, dict) else current
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def _int(text: str) -> int:
    if len(text) > 20 or abs(value := int(text)) >= INT_LIMIT:
        raise ProtocolError(BAD_NUMBER, f"integer {text[:40]} does not fit in 64 bits")
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ProtocolError(BAD_NUMBER, f"number {text[:40]} is out of range")
    return value


def _refuse_constant(text: str) -> float:
    raise ProtocolError(BAD_NUMBER, f"{text} is not a JSON number")


def _kind(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {str(value)[:40]!r}"
