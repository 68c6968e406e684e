"""Meeting service tasks: the roster of each meeting (queue ``meeting``).

Each change is announced on the meeting's event channel (``meeting.<meeting_id>``, see
``events/channels.py``): ``meeting.user_joined``, ``meeting.user_left``, ``meeting.ended``.
"""

from __future__ import annotations

from meetingtasks.app import app
from meetingtasks.base.keys import get_keys
from meetingtasks.base.priority import Priority
from meetingtasks.events import EventType, meeting_channel
from meetingtasks.store import get_redis
from meetingtasks.tasks import announce, require_id

#: How long after a meeting closes its remaining state is removed.
CLEANUP_DELAY_SECONDS = 3600

#: The ``source`` of the events these tasks publish.
SOURCE = "meeting-service"


@app.task(name="meeting.add_participant")
def add_participant(meeting_id: str, user_id: str) -> int:
    """Add a user to a meeting's roster; returns the number of participants."""
    return _change_roster(meeting_id, user_id, joined=True)


@app.task(name="meeting.remove_participant")
def remove_participant(meeting_id: str, user_id: str) -> int:
    """Remove a user from a meeting's roster; returns the number left."""
    return _change_roster(meeting_id, user_id, joined=False)


def _change_roster(meeting_id: str, user_id: str, joined: bool) -> int:
    channel = meeting_channel(require_id("meeting_id", meeting_id))
    key = get_keys().participants(meeting_id)
    pipe = get_redis().pipeline()
    (pipe.sadd if joined else pipe.srem)(key, require_id("user_id", user_id))
    pipe.scard(key)
    count = int(pipe.execute()[1])
    event = EventType.MEETING_USER_JOINED if joined else EventType.MEETING_USER_LEFT
    announce(
        channel, event, SOURCE, {"participants": count}, meeting_id=meeting_id, user_id=user_id
    )
    return count


@app.task(name="meeting.close")
def close(meeting_id: str) -> list[str]:
    """Close a meeting: return who was still in it and schedule its state's cleanup.

    ``meeting.ended`` goes out before the roster is deleted, so a run retried after a
    failed publish still finds (and returns) the same participants.
    """
    channel = meeting_channel(require_id("meeting_id", meeting_id))
    key = get_keys().participants(meeting_id)
    remaining = sorted(str(user_id) for user_id in get_redis().smembers(key))
    announce(
        channel, EventType.MEETING_ENDED, SOURCE, {"participants": remaining},
        meeting_id=meeting_id,
    )  # fmt: skip
    get_redis().delete(key)
    app.send_task(
        "maintenance.cleanup_meeting",
        kwargs={"meeting_id": meeting_id},
        countdown=CLEANUP_DELAY_SECONDS,
        priority=Priority.LOW,
    )
    return remaining
