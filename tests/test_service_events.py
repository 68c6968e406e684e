"""The meeting and media tasks announce what they did on the meeting's event channel,
from real worker processes that never start a bus."""

from __future__ import annotations

import pytest

from meetingtasks.base.keys import get_keys
from meetingtasks.errors import InvalidEvent
from meetingtasks.events import meeting_channel
from meetingtasks.tasks.media import stream_started, stream_stopped
from meetingtasks.tasks.meeting import add_participant, close, remove_participant
from tests.support.events_helpers import Buses, Recorder


@pytest.fixture
def buses(redis):
    made = Buses()
    yield made
    made.stop_all()


def test_worker_tasks_publish_the_meeting_events(app, buses, start_worker) -> None:
    meeting = buses.new()
    everything = buses.new()
    one_meeting, all_meetings = Recorder("m-42"), Recorder("all")
    meeting.subscribe(meeting_channel("m-42"), one_meeting)
    everything.subscribe("meeting.*", all_meetings)
    meeting.start()
    everything.start()
    start_worker(["meeting", "media"], concurrency=2)  # prefork: tasks publish from children

    joined = add_participant.delay("m-42", "u-7")
    assert joined.get(timeout=60) == 1
    [event] = one_meeting.wait_for(1)
    assert (event.type, event.source) == ("meeting.user_joined", "meeting-service")
    assert (event.meeting_id, event.user_id, event.trace_id) == ("m-42", "u-7", joined.id)
    assert event.payload == {"participants": 1}

    assert add_participant.delay("m-42", "u-8").get(timeout=60) == 2
    assert stream_started.delay("m-42", "s-1", "u-7", "screen").get(timeout=60) == 1
    assert stream_stopped.delay("m-42", "s-1").get(timeout=60) == 0
    assert remove_participant.delay("m-42", "u-8").get(timeout=60) == 1
    assert close.delay("m-42").get(timeout=60) == ["u-7"]
    assert add_participant.delay("m-43", "u-9").get(timeout=60) == 1

    # Handlers run concurrently; each event was made after the previous task finished.
    in_order = sorted(one_meeting.wait_for(6), key=lambda e: e.time)
    seen = [(e.type, e.user_id, e.payload) for e in in_order]
    assert seen == [
        ("meeting.user_joined", "u-7", {"participants": 1}),
        ("meeting.user_joined", "u-8", {"participants": 2}),
        ("media.stream_started", "u-7", {"stream_id": "s-1", "kind": "screen", "streams": 1}),
        ("media.stream_stopped", "u-7", {"stream_id": "s-1", "kind": "screen", "streams": 0}),
        ("meeting.user_left", "u-8", {"participants": 1}),
        ("meeting.ended", None, {"participants": ["u-7"]}),
    ]
    assert {e.meeting_id for e in one_meeting.events} == {"m-42"}
    assert sorted(e.meeting_id for e in all_meetings.wait_for(7)) == ["m-42"] * 6 + ["m-43"]


def test_a_meeting_id_that_cannot_name_a_channel_changes_nothing(redis) -> None:
    with pytest.raises(InvalidEvent, match="cannot name an event channel"):
        add_participant("m*", "u-1")
    assert not redis.exists(get_keys().participants("m*"))
