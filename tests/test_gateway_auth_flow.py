"""Who may connect, and what each client may see: tokens checked on every connection,
another session's results and another meeting's events never delivered."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meetingtasks.events import Event, EventBus, EventType
from tests.support.gateways import Client, GatewayProcess, token


@pytest.fixture
def gateway(redis, tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path / "gateway.log", gateway_auth_timeout=1)
    yield process
    process.stop()


def refused(client: Client) -> tuple[str, int | None, str | None]:
    """The error code a refused client was sent, and the close code and reason."""
    error = client.until(lambda f: f["op"] == "error")
    code, reason = client.closed()
    return error["code"], code, reason


@pytest.mark.parametrize(
    ("make_token", "code"),
    [
        (lambda: None, "token_missing"),
        (
            lambda: token("alice", secret="not-the-gateways-secret-but-long-enough"),
            "token_bad_signature",
        ),
        (lambda: token("alice", now=time.time() - 3600), "token_expired"),
        (lambda: "eyJhbGciOiJIUzI1NiJ9.garbage.sig", "token_malformed"),
    ],
)
def test_a_connection_without_a_valid_token_is_refused_with_its_reason(
    gateway: GatewayProcess, make_token, code: str
) -> None:
    url = gateway.ws_url(make_token())
    auth = None if code != "token_missing" else {"op": "ping"}  # a first frame that is not auth
    client = Client(url, auth_frame=auth, expect_session=False)
    error_code, close_code, reason = refused(client)
    assert (error_code, close_code) == (code, 4401)
    assert reason is not None and reason.startswith(code)


def test_the_token_may_come_in_a_first_auth_frame_and_must_come_in_time(gateway) -> None:
    client = Client(gateway.ws_url(), auth_frame={"op": "auth", "token": token("alice")})
    assert client.request({"op": "ping", "request_id": "p"})["op"] == "pong"
    client.close()

    silent = Client(gateway.ws_url(), expect_session=False)
    assert refused(silent)[:2] == ("auth_timeout", 4408)
    assert gateway.http("GET", "/stats")[1]["gateway"]["refusals"]["auth_timeout"] == 1


def test_a_meeting_the_token_does_not_grant_is_refused_and_the_connection_goes_on(
    gateway,
) -> None:
    client = Client(gateway.ws_url(token("alice", ("m1",))))
    for frame, code in [
        ({"op": "submit", "type": "echo", "meeting_id": "m2"}, "meeting_not_allowed"),
        ({"op": "submit", "type": "echo", "data": {"meeting_id": "m2"}}, "meeting_not_allowed"),
        ({"op": "subscribe", "channel": "meeting.m2"}, "channel_not_allowed"),
        ({"op": "subscribe", "channel": "meeting.*"}, "channel_not_allowed"),
        ({"op": "subscribe", "channel": "ai.results"}, "channel_not_allowed"),
    ]:
        assert client.request({**frame, "request_id": "r"})["code"] == code
        assert client.request({"op": "ping", "request_id": "p"})["op"] == "pong"
    client.close()


def test_a_client_never_receives_another_sessions_results(app, start_worker, gateway) -> None:
    start_worker(["default"], concurrency=2)
    alice, bob = Client(gateway.ws_url(token("alice"))), Client(gateway.ws_url(token("bob")))
    for n in range(6):
        for name, client in (("alice", alice), ("bob", bob)):
            client.send(
                {
                    "op": "submit",
                    "request_id": f"{name}-{n}",
                    "type": "echo",
                    "data": {"value": f"{name}-{n}"},
                }
            )
    for name, client in (("alice", alice), ("bob", bob)):
        for n in range(6):
            assert client.result(f"{name}-{n}")["result"] == f"{name}-{n}"
        mine = {f["task_id"] for f in client.frames if f["op"] == "accepted"}
        assert len(mine) == 6
        assert {f["task_id"] for f in client.frames if "task_id" in f} == mine
        client.close()


def test_a_client_never_receives_another_meetings_events(app, gateway) -> None:
    alice = Client(gateway.ws_url(token("alice", ("m1",))))
    bob = Client(gateway.ws_url(token("bob", ("m2", "m3"))))
    assert (
        alice.request({"op": "subscribe", "channel": "meeting.m1", "request_id": "s"})["op"]
        == "subscribed"
    )
    for channel in ("meeting.m2", "meeting.m3"):
        assert (
            bob.request({"op": "subscribe", "channel": channel, "request_id": "s"})["op"]
            == "subscribed"
        )
    assert (
        bob.request({"op": "unsubscribe", "channel": "meeting.m3", "request_id": "u"})["op"]
        == "unsubscribed"
    )

    bus = EventBus()
    for n in range(3):  # each round ends with the two followed channels: a leak comes first
        for meeting in ("m3", "m2", "m1"):
            bus.publish(
                f"meeting.{meeting}",
                Event(
                    EventType.MEETING_USER_JOINED,
                    {"n": n, "last": n == 2},
                    "test",
                    meeting_id=meeting,
                ),
            )
    bus.stop()

    for client, meeting in ((alice, "m1"), (bob, "m2")):
        client.until(lambda f: f["op"] == "event" and f["event"]["payload"]["last"])
        events = [f for f in client.frames if f["op"] == "event"]
        assert [e["event"]["payload"]["n"] for e in events] == [0, 1, 2]
        assert {(e["channel"], e["event"]["meeting_id"]) for e in events} == {
            (f"meeting.{meeting}", meeting)
        }
        client.close()
