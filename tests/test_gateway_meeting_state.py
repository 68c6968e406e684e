"""A client that subscribes to a meeting is told the meeting as it stands, in the answer
itself: who is in it and its live streams, as the meeting and media tasks keep them. A
page opened after people joined shows them without waiting for their next event."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from meetingtasks.base.keys import get_keys
from tests.support.gateways import Client, GatewayProcess, subscribe, token


@pytest.fixture
def gateway(redis, tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path / "gateway.log")
    yield process
    process.stop()


def test_the_subscribe_answer_carries_who_is_in_the_meeting(
    redis, gateway, app, start_worker
) -> None:
    start_worker(["meeting", "media"])
    for user in ("carol", "bob"):
        app.send_task("meeting.add_participant", kwargs={"meeting_id": "m1", "user_id": user}).get(
            timeout=30
        )
    app.send_task(
        "media.stream_started",
        kwargs={"meeting_id": "m1", "stream_id": "cam-1", "user_id": "bob", "kind": "video"},
    ).get(timeout=30)
    redis.hset(get_keys().streams("m1"), "broken", "not json")  # skipped, not fatal
    client = Client(gateway.ws_url(token("alice", ("m1", "m2"))))
    assert subscribe(client, "meeting.m1")["meeting"] == {
        "participants": ["bob", "carol"],
        "streams": {"cam-1": {"user_id": "bob", "kind": "video"}},
    }
    assert subscribe(client, "meeting.m2")["meeting"] == {"participants": [], "streams": {}}
    client.close()
