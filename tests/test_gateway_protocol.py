"""The gateway's wire protocol without sockets: client frames in, commands or errors out."""

from __future__ import annotations

import json

import pytest

from meetingtasks.base import frames
from meetingtasks.base.priority import Priority
from meetingtasks.errors import ProtocolError
from meetingtasks.gateway import protocol as p

LIMITS = p.Limits(max_frame_bytes=4096, max_payload_bytes=1024, max_depth=8)


def parse(frame: object) -> p.Command:
    return p.parse_frame(frame if isinstance(frame, str) else json.dumps(frame), LIMITS)


def refused(frame: object) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        parse(frame)
    return caught.value


def test_a_submit_becomes_a_typed_command_with_its_meeting() -> None:
    command = parse(
        {
            "op": "submit",
            "request_id": "r1",
            "type": "summarize",
            "priority": "high",
            "data": {"text": "hi", "meeting_id": "m1"},
            "timeout": 30,
        }
    )
    assert command == p.Submit(
        type="summarize",
        data={"text": "hi", "meeting_id": "m1"},
        priority=Priority.HIGH,
        timeout=30.0,
        meeting_id="m1",
        request_id="r1",
    )


@pytest.mark.parametrize(
    ("frame", "command"),
    [
        ({"op": "cancel", "task_id": "t1"}, p.Cancel("t1")),
        ({"op": "status", "task_id": "t1", "request_id": "q"}, p.Status("t1", "q")),
        ({"op": "subscribe", "channel": "meeting.m1"}, p.Subscribe("meeting.m1")),
        ({"op": "unsubscribe", "channel": "meeting.m1"}, p.Unsubscribe("meeting.m1")),
        ({"op": "ping"}, p.Ping()),
        ({"op": "auth", "token": "t", "session": "s"}, p.Auth("t", "s")),
    ],
)
def test_every_client_op_parses(frame: dict, command: p.Command) -> None:
    assert parse(frame) == command


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", p.BAD_JSON),
        ("[1, 2]", p.NOT_OBJECT),
        ('"ping"', p.NOT_OBJECT),
        ("null", p.NOT_OBJECT),
        ("[" * 5000 + "]" * 5000, p.FRAME_TOO_LARGE),
        ("[" * 2000 + "]" * 2000, p.TOO_DEEP),
        ('{"op": "ping", "x": ' + "9" * 5000 + "}", p.FRAME_TOO_LARGE),
        ('{"op": "ping", "request_id": "r", "n": 1' + "0" * 30 + "}", p.BAD_NUMBER),
        ('{"op": "ping", "n": 1e999}', p.BAD_NUMBER),
        ('{"op": "ping", "n": NaN}', p.BAD_NUMBER),
        (r'{"op": "ping", "request_id": "\udc80"}', p.BAD_JSON),
        (r'{"op": "ping", "request_id": "\ud800 alone"}', p.BAD_JSON),
        ({"op": "dance"}, p.UNKNOWN_OP),
        ({"type": "echo"}, p.MISSING_FIELD),
        ({"op": 7}, p.BAD_FIELD),
        ({"op": "submit"}, p.MISSING_FIELD),
        ({"op": "submit", "type": 5}, p.BAD_FIELD),
        ({"op": "submit", "type": "echo", "dta": {}}, p.BAD_FIELD),
        ({"op": "submit", "type": "echo", "data": [1]}, p.BAD_FIELD),
        ({"op": "submit", "type": "echo", "data": {"x": "y" * 2000}}, p.PAYLOAD_TOO_LARGE),
        ({"op": "submit", "type": "echo", "data": {"a": [[[[[[[[[1]]]]]]]]]}}, p.TOO_DEEP),
        ({"op": "submit", "type": "echo", "priority": "urgent"}, p.BAD_FIELD),
        ({"op": "submit", "type": "echo", "priority": "critical"}, p.BAD_FIELD),
        ({"op": "submit", "type": "echo", "priority": 3}, p.BAD_FIELD),
        ({"op": "submit", "type": "echo", "timeout": -1}, p.BAD_FIELD),
        ({"op": "submit", "type": "echo", "timeout": True}, p.BAD_FIELD),
        ({"op": "submit", "type": "echo", "timeout": "30"}, p.BAD_FIELD),
        (
            {"op": "submit", "type": "echo", "meeting_id": "m1", "data": {"meeting_id": "m2"}},
            p.BAD_FIELD,
        ),
        ({"op": "submit", "type": "echo", "data": {"meeting_id": 5}}, p.BAD_FIELD),
        ({"op": "cancel"}, p.MISSING_FIELD),
        ({"op": "status", "task_id": ""}, p.BAD_FIELD),
        ({"op": "status", "task_id": "t" * 500}, p.BAD_FIELD),
        ({"op": "subscribe", "channel": ["meeting.m1"]}, p.BAD_FIELD),
        ({"op": "ping", "request_id": {"a": 1}}, p.BAD_FIELD),
    ],
)
def test_hostile_frames_are_refused_with_a_specific_code(frame: object, code: str) -> None:
    assert refused(frame).code == code


def test_escaped_surrogate_pairs_are_one_character() -> None:
    assert parse(r'{"op": "ping", "request_id": "\ud83d\ude00"}') == p.Ping("\U0001f600")


def test_a_refusal_names_the_request_when_it_is_known() -> None:
    assert refused({"op": "submit", "request_id": "r7"}).request_id == "r7"
    assert refused({"op": "submit", "request_id": 7}).request_id is None


def test_the_frame_limit_counts_bytes_not_characters() -> None:
    def frame(n: int) -> str:
        return json.dumps({"op": "ping", "request_id": "é" * n}, ensure_ascii=False)

    assert parse(frame(100)) == p.Ping("é" * 100)
    big = '{"op": "ping", "pad": "' + "é" * 2100 + '"}'  # 2100+ characters, 4200+ bytes
    assert len(big) < LIMITS.max_frame_bytes < len(big.encode())
    assert refused(big).code == p.FRAME_TOO_LARGE


def test_server_frames_are_compact_json_with_the_request_id_when_known() -> None:
    assert json.loads(frames.accepted("t1", "queued", "r1")) == {
        "op": "accepted",
        "task_id": "t1",
        "status": "queued",
        "request_id": "r1",
    }
    assert json.loads(frames.error(p.RATE_LIMITED, "slow down")) == {
        "op": "error",
        "code": "rate_limited",
        "message": "slow down",
    }
    assert json.loads(frames.pong(None)) == {"op": "pong"}
    event = frames.event("meeting.m1", '{"type": "meeting.user_joined", "payload": {"n": 1}}')
    assert json.loads(event) == {
        "op": "event",
        "channel": "meeting.m1",
        "event": {"type": "meeting.user_joined", "payload": {"n": 1}},
    }


def test_a_submit_may_ask_for_a_delay() -> None:
    command = parse({"op": "submit", "type": "echo", "delay": 90})
    assert isinstance(command, p.Submit) and command.delay == 90.0
    assert parse({"op": "submit", "type": "echo", "delay": 0}).delay == 0.0  # type: ignore[union-attr]
    for bad in (-1, True, "60", p.MAX_DELAY + 1):
        assert refused({"op": "submit", "type": "echo", "delay": bad}).code == p.BAD_FIELD
