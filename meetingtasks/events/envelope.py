"""The event envelope both buses carry, and the event types every service agrees on.

One envelope for the Redis bus and the in-process bus, so a bridged event is the same
object on both sides. Events cross service (and version) boundaries as JSON, so decoding
ignores fields it does not know (a newer publisher may add some) while construction in
Python refuses unknown keywords, so a typo fails where it is written.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import Enum, StrEnum
from typing import Annotated, Any

import pydantic
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, StringConstraints

from meetingtasks.errors import InvalidEvent

#: Largest encoded event (bytes) by default: events are notifications that name the data;
#: bulky data travels in a task payload or object storage.
DEFAULT_MAX_EVENT_BYTES = 256 * 1024

#: Dotted names such as ``meeting.user_joined``; no wildcards (those are for subscribers).
TYPE_REGEX = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"

EventTypeName = Annotated[str, StringConstraints(max_length=128, pattern=TYPE_REGEX)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class EventType(StrEnum):
    """The platform's predefined event types (any dotted name is accepted as well)."""

    MEETING_CREATED = "meeting.created"
    MEETING_STARTED = "meeting.started"
    MEETING_ENDED = "meeting.ended"
    MEETING_USER_JOINED = "meeting.user_joined"
    MEETING_USER_LEFT = "meeting.user_left"
    MEDIA_STREAM_STARTED = "media.stream_started"
    MEDIA_STREAM_STOPPED = "media.stream_stopped"
    AI_TASK_CREATED = "ai.task_created"
    AI_TASK_COMPLETED = "ai.task_completed"
    AI_TASK_FAILED = "ai.task_failed"


class _WireEvent(BaseModel):
    """The envelope's fields as decoded from JSON: unknown fields (a newer publisher's) ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    type: EventTypeName
    source: Name
    payload: dict[str, JsonValue] = Field(default_factory=dict)
    id: Name = Field(default_factory=lambda: uuid.uuid4().hex)
    time: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    meeting_id: Name | None = None
    user_id: Name | None = None
    trace_id: Name | None = None


class Event(_WireEvent):
    """One event: what happened (type), where (source), when, and its JSON payload.

    ``Event("meeting.user_joined", {"user_id": "u1"}, "meeting-service", meeting_id="m1")``;
    the other fields (id, time, meeting_id, user_id, trace_id) are keywords, and an unknown
    keyword is refused. Bad input raises ``InvalidEvent``, never pydantic's own error.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(
        self,
        type: str | None = None,
        payload: Mapping[str, Any] | None = None,
        source: str | None = None,
        /,
        **fields: Any,
    ) -> None:
        positional = {
            "type": type.value if isinstance(type, Enum) else type,
            "payload": payload,
            "source": source,
        }
        for name, value in positional.items():
            if value is not None:
                fields[name] = value
        try:
            super().__init__(**fields)
        except pydantic.ValidationError as exc:
            raise InvalidEvent(_describe(exc)) from None

    def to_json(self, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> str:
        """The wire form; refuses events over ``max_bytes`` rather than flood every subscriber."""
        data = self.model_dump_json()
        size = len(data.encode())
        if size > max_bytes:
            raise InvalidEvent(
                f"event {self.type!r} is {size} bytes, over the {max_bytes}-byte limit: send a "
                "reference to bulky data (a task id, a URL) instead of the data itself"
            )
        return data

    @classmethod
    def from_json(cls, data: str | bytes, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> Event:
        """Decode the wire form, with an ``InvalidEvent`` that says what was wrong.

        Validation runs on the tolerant wire model; the result is already valid, so it is
        carried over without validating twice.
        """
        size = len(data.encode() if isinstance(data, str) else data)
        if size > max_bytes:
            raise InvalidEvent(f"event of {size} bytes is over the {max_bytes}-byte limit")
        try:
            wire = _WireEvent.model_validate_json(data)
        except pydantic.ValidationError as exc:
            raise InvalidEvent(_describe(exc)) from None
        return cls.model_construct(_fields_set=wire.model_fields_set, **dict(wire))


def _describe(exc: pydantic.ValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error["loc"]) or "event"
        problems.append(f"{where}: {error['msg']}")
    return (
        "invalid event ("
        + "; ".join(problems)
        + "): an event needs a dotted type, a source, and a JSON-object payload"
    )
