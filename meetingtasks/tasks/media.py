"""Media service tasks: the live streams of each meeting (queue ``media``).

Each change is announced on the meeting's event channel (``meeting.<meeting_id>``, see
``events/channels.py``): ``media.stream_started`` and ``media.stream_stopped``.
"""

from __future__ import annotations

import json

from meetingtasks.app import app
from meetingtasks.base.keys import get_keys
from meetingtasks.errors import Permanent
from meetingtasks.events import EventType, meeting_channel
from meetingtasks.store import get_redis
from meetingtasks.tasks import announce, require_id

STREAM_KINDS = ("audio", "video", "screen")

#: The ``source`` of the events these tasks publish.
SOURCE = "media-service"


@app.task(name="media.stream_started")
def stream_started(meeting_id: str, stream_id: str, user_id: str, kind: str = "video") -> int:
    """Record a stream that started; returns the number of live streams of the meeting."""
    if kind not in STREAM_KINDS:
        raise Permanent(f"stream kind must be one of {', '.join(STREAM_KINDS)}, not {kind!r}")
    channel = meeting_channel(require_id("meeting_id", meeting_id))
    key = get_keys().streams(meeting_id)
    description = json.dumps({"user_id": require_id("user_id", user_id), "kind": kind})
    pipe = get_redis().pipeline()
    pipe.hset(key, require_id("stream_id", stream_id), description)
    pipe.hlen(key)
    count = int(pipe.execute()[1])
    announce(
        channel, EventType.MEDIA_STREAM_STARTED, SOURCE,
        {"stream_id": stream_id, "kind": kind, "streams": count},
        meeting_id=meeting_id, user_id=user_id,
    )  # fmt: skip
    return count


@app.task(name="media.stream_stopped")
def stream_stopped(meeting_id: str, stream_id: str) -> int:
    """Forget a stream that stopped; returns the number of live streams left.

    The event names the stream's user and kind when the stream was still recorded (a
    repeated stop finds nothing, and says so with neither).
    """
    channel = meeting_channel(require_id("meeting_id", meeting_id))
    key = get_keys().streams(meeting_id)
    pipe = get_redis().pipeline()
    pipe.hget(key, require_id("stream_id", stream_id))
    pipe.hdel(key, stream_id)
    pipe.hlen(key)
    description, _, count = pipe.execute()
    stream = json.loads(description) if description else {}
    announce(
        channel, EventType.MEDIA_STREAM_STOPPED, SOURCE,
        {"stream_id": stream_id, "kind": stream.get("kind"), "streams": int(count)},
        meeting_id=meeting_id, user_id=stream.get("user_id"),
    )  # fmt: skip
    return int(count)
