"""Hostile input on the gateway: every bad frame gets its error code and the connection
goes on where the protocol allows, limits hold, the process never falls over, and a
task accepted before the onslaught still completes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tests.support.gateways import Client, GatewayProcess, token

FRAME_LIMIT = 4096


@pytest.fixture
def gateway(redis, tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(
        tmp_path / "gateway.log",
        gateway_max_frame_bytes=FRAME_LIMIT,
        gateway_max_payload_bytes=1024,
        gateway_max_depth=8,
        gateway_max_tasks=2,
        gateway_submit_rate=0.01,  # one more submit per 100 s: a burst is all there is
        gateway_submit_burst=4,
        gateway_outbox_frames=10,
    )
    yield process
    process.stop()


def submit(task: str, data: object, request_id: str = "h") -> dict:
    return {"op": "submit", "request_id": request_id, "type": task, "data": data}


HOSTILE: list[tuple[str | bytes | dict, str]] = [
    ("{oops", "bad_json"),
    ('{"op": "ping"', "bad_json"),
    # An escaped lone surrogate: JSON, but not Unicode (the queue's Lua decoder chokes on it).
    (r'{"op": "submit", "type": "echo", "data": {"value": "\udc80"}}', "bad_json"),
    (b"\x00\x01binary", "binary_frame"),
    ("[1, 2, 3]", "not_object"),
    ("42", "not_object"),
    ('"submit"', "not_object"),
    ("[" * 1500 + "]" * 1500, "too_deep"),
    (submit("echo", {"v": json.loads("[" * 9 + "]" * 9)}), "too_deep"),
    ('{"op": "ping", "n": 123456789012345678901234567890}', "bad_number"),
    ('{"op": "ping", "n": 1e400}', "bad_number"),
    ('{"op": "ping", "n": -Infinity}', "bad_number"),
    ({"op": "explode"}, "unknown_op"),
    ({"request_id": "x"}, "missing_field"),
    ({"op": "submit"}, "missing_field"),
    ({"op": "cancel"}, "missing_field"),
    ({"op": ["submit"]}, "bad_field"),
    ({"op": "submit", "type": {"name": "echo"}}, "bad_field"),
    (submit("echo", "not an object"), "bad_field"),
    ({"op": "submit", "type": "echo", "timeout": "soon"}, "bad_field"),
    ({"op": "submit", "type": "echo", "priority": "critical"}, "bad_field"),
    ({"op": "submit", "type": "echo", "extra": 1}, "bad_field"),
    (submit("no_such_task", {}), "unknown_task"),
    (submit("summarize", {}), "invalid_payload"),  # its text argument is missing
    ("x" * (FRAME_LIMIT + 10), "frame_too_large"),
    (submit("echo", {"value": "y" * 2000}), "payload_too_large"),
    ({"op": "status", "task_id": "no-such-task"}, "task_not_found"),
    ({"op": "cancel", "task_id": "no-such-task"}, "task_not_found"),
    ({"op": "subscribe", "channel": "meeting.elsewhere"}, "channel_not_allowed"),
    ({"op": "auth", "token": "again"}, "token_malformed"),  # a refresh with a bad token
]


def test_hostile_input_is_answered_and_nothing_falls_over(app, start_worker, gateway) -> None:
    start_worker(["default", "user"], concurrency=3)
    before = Client(gateway.ws_url(token("alice")))
    first = before.request(submit("sleep", {"seconds": 1.0}, "before"))
    assert first["op"] == "accepted"

    hostile = Client(gateway.ws_url(token("mallory")))
    for frame, code in HOSTILE:
        hostile.send(frame)
        answer = hostile.until(lambda f: f["op"] == "error", timeout=10)
        assert answer["code"] == code, (frame if len(str(frame)) < 200 else code, answer)
        assert hostile.request({"op": "ping", "request_id": "alive"})["op"] == "pong"

    burst = Client(gateway.ws_url(token("mallory")))  # a new session: a full bucket
    for n in range(10):  # refused after taking a token: rate limits count attempts
        burst.send(submit("no_such_task", {}, f"b{n}"))
    answers = [burst.until(lambda f, n=n: f.get("request_id") == f"b{n}") for n in range(10)]
    assert [a["code"] for a in answers] == ["unknown_task"] * 4 + ["rate_limited"] * 6

    crowd = Client(gateway.ws_url(token("mallory")))
    answers = [crowd.request(submit("sleep", {"seconds": 5}, f"c{n}")) for n in range(3)]
    assert [a["op"] for a in answers[:2]] == ["accepted", "accepted"]
    assert answers[2]["code"] == "too_many_tasks"

    huge = Client(gateway.ws_url(token("mallory")))
    huge.send("z" * (4 * FRAME_LIMIT + 1))  # over the transport's limit: the socket closes
    with pytest.raises(ConnectionClosed) as closed:
        huge.until(lambda f: False, timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

    assert before.result("before")["status"] == "completed"
    assert gateway.alive()
    assert gateway.http("GET", "/healthz")[0] == 200
    after = Client(gateway.ws_url(token("alice")))
    after.request(submit("echo", {"value": "still here"}, "after"))
    assert after.result("after")["result"] == "still here"
    errors = gateway.http("GET", "/stats")[1]["gateway"]["errors"]
    assert errors["rate_limited"] == 6 and errors["bad_json"] == 3
    for client in (before, hostile, burst, crowd, after):
        client.close()


def test_a_client_that_stops_reading_is_closed_not_buffered_forever(app, gateway) -> None:
    from meetingtasks.events import Event, EventBus

    reader = Client(gateway.ws_url(token("alice", ("m1",))))
    reader.request({"op": "subscribe", "channel": "meeting.m1", "request_id": "s"})
    bus = EventBus()
    padding = "p" * 60_000
    for n in range(600):  # ~36 MB: more than every socket buffer between us holds
        bus.publish("meeting.m1", Event("meeting.note", {"n": n, "pad": padding}, "test"))
    bus.stop()
    code, reason = reader.closed(timeout=60)
    assert code == 4429 and reason is not None and reason.startswith("too_slow")
    assert gateway.http("GET", "/stats")[1]["gateway"]["refusals"]["too_slow"] == 1
