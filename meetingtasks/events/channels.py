"""The event channels the platform's services publish on, named in one place.

Everything that happens in one meeting goes out on that meeting's channel,
``meeting.<meeting_id>``: roster changes (``meeting.user_joined``, ``meeting.user_left``,
``meeting.ended``) and media (``media.stream_started``, ``media.stream_stopped``), told
apart by the event type. So a client allowed into a meeting follows all of it with one
subscription (the gateway lets a client subscribe to the channels of the meetings its
token names), and a service that follows every meeting subscribes to ``meeting.*``.

Meeting channels are fire-and-forget Pub/Sub by default: they carry live notifications,
and the state they describe is kept in Redis by the tasks (a late joiner reads the roster
instead of replaying events). A ``meeting.*`` entry in ``MEETINGTASKS_EVENT_DURABLE_CHANNELS``
makes them streams, which can then only be followed one meeting at a time (streams have
no pattern subscriptions).

These are bus channel names; ``meetingtasks.base.keys`` adds the deployment namespace.
"""

from __future__ import annotations

from meetingtasks.base.channels import validate_channel
from meetingtasks.errors import InvalidEvent

#: Prefix of every meeting's channel; ``meeting.*`` follows them all.
MEETING_PREFIX = "meeting."


def meeting_channel(meeting_id: str) -> str:
    """The channel of one meeting's events; InvalidEvent if the id cannot name one (a
    wildcard in an id would let a subscriber to that meeting see others)."""
    channel = f"{MEETING_PREFIX}{meeting_id}"
    try:
        validate_channel(channel)
    except InvalidEvent:
        raise InvalidEvent(
            f"meeting id {meeting_id!r} cannot name an event channel: use at most 190 "
            "letters, digits, '.', '_', '-' or ':'"
        ) from None
    return channel
