"""Media service tasks: the live streams of each meeting (queue ``media``)."""

from __future__ import annotations

import json

from meetingtasks.app import app
from meetingtasks.errors import Permanent
from meetingtasks.keys import get_keys
from meetingtasks.store import get_redis
from meetingtasks.tasks import require_id

STREAM_KINDS = ("audio", "video", "screen")


@app.task(name="media.stream_started")
def stream_started(meeting_id: str, stream_id: str, user_id: str, kind: str = "video") -> int:
    """Record a stream that started; returns the number of live streams of the meeting."""
    if kind not in STREAM_KINDS:
        raise Permanent(f"stream kind must be one of {', '.join(STREAM_KINDS)}, not {kind!r}")
    key = get_keys().streams(require_id("meeting_id", meeting_id))
    description = json.dumps({"user_id": require_id("user_id", user_id), "kind": kind})
    pipe = get_redis().pipeline()
    pipe.hset(key, require_id("stream_id", stream_id), description)
    pipe.hlen(key)
    return int(pipe.execute()[1])


@app.task(name="media.stream_stopped")
def stream_stopped(meeting_id: str, stream_id: str) -> int:
    """Forget a stream that stopped; returns the number of live streams left."""
    key = get_keys().streams(require_id("meeting_id", meeting_id))
    pipe = get_redis().pipeline()
    pipe.hdel(key, require_id("stream_id", stream_id))
    pipe.hlen(key)
    return int(pipe.execute()[1])
