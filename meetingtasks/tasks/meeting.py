"""Meeting service tasks: the roster of each meeting (queue ``meeting``)."""

from __future__ import annotations

from meetingtasks.app import app
from meetingtasks.keys import get_keys
from meetingtasks.priority import Priority
from meetingtasks.store import get_redis
from meetingtasks.tasks import require_id

#: How long after a meeting closes its remaining state is removed.
CLEANUP_DELAY_SECONDS = 3600


@app.task(name="meeting.add_participant")
def add_participant(meeting_id: str, user_id: str) -> int:
    """Add a user to a meeting's roster; returns the number of participants."""
    key = get_keys().participants(require_id("meeting_id", meeting_id))
    pipe = get_redis().pipeline()
    pipe.sadd(key, require_id("user_id", user_id))
    pipe.scard(key)
    return int(pipe.execute()[1])


@app.task(name="meeting.remove_participant")
def remove_participant(meeting_id: str, user_id: str) -> int:
    """Remove a user from a meeting's roster; returns the number left."""
    key = get_keys().participants(require_id("meeting_id", meeting_id))
    pipe = get_redis().pipeline()
    pipe.srem(key, require_id("user_id", user_id))
    pipe.scard(key)
    return int(pipe.execute()[1])


@app.task(name="meeting.close")
def close(meeting_id: str) -> list[str]:
    """Close a meeting: return who was still in it and schedule its state's cleanup."""
    key = get_keys().participants(require_id("meeting_id", meeting_id))
    remaining = sorted(get_redis().smembers(key))
    get_redis().delete(key)
    app.send_task(
        "maintenance.cleanup_meeting",
        kwargs={"meeting_id": meeting_id},
        countdown=CLEANUP_DELAY_SECONDS,
        priority=Priority.LOW,
    )
    return remaining
