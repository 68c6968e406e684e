"""Two gateway processes on one Redis: results reach a client on either, and a session
left on one is resumed on the other, by its own user only."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateways import Client, GatewayProcess, token


@pytest.fixture
def gateways(redis, tmp_path: Path) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    first = GatewayProcess(tmp_path / "gateway-1.log")
    second = GatewayProcess(tmp_path / "gateway-2.log")
    yield first, second
    first.stop()
    second.stop()


def test_a_client_on_either_gateway_gets_its_result(app, start_worker, gateways) -> None:
    start_worker(["default"])
    clients = [Client(gateway.ws_url(token("alice"))) for gateway in gateways]
    for n, client in enumerate(clients):
        client.request(
            {"op": "submit", "request_id": f"r{n}", "type": "echo", "data": {"value": n}}
        )
    for n, client in enumerate(clients):
        assert client.result(f"r{n}")["result"] == n
        client.close()


def test_a_session_left_mid_task_is_resumed_on_the_other_gateway(
    app, start_worker, gateways
) -> None:
    start_worker(["user"])
    first, second = gateways
    alice = token("alice")
    client = Client(first.ws_url(alice))
    session_id = client.session_id
    accepted = client.request(
        {"op": "submit", "request_id": "nap", "type": "sleep", "data": {"seconds": 1.5}}
    )
    task_id = accepted["task_id"]
    client.close()

    resumed = Client(second.ws_url(alice, session=session_id))
    assert resumed.session is not None and resumed.session["resumed"] is True
    assert resumed.session_id == session_id
    assert [(t["task_id"], t["request_id"]) for t in resumed.session["tasks"]] == [(task_id, "nap")]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answer = resumed.request({"op": "status", "task_id": task_id, "request_id": "q"})
        if answer["status"] == "completed":
            break
        time.sleep(0.1)
    assert (answer["status"], answer["result"]) == ("completed", "slept")

    bob = Client(second.ws_url(token("bob"), session=session_id), expect_session=False)
    refused = bob.until(lambda f: f["op"] == "error")
    assert refused["code"] == "session_not_found"
    fresh = bob.until(lambda f: f["op"] == "session")
    assert fresh["session_id"] != session_id and fresh["resumed"] is False
    for op in ("status", "cancel"):
        answer = bob.request({"op": op, "task_id": task_id, "request_id": op})
        assert answer["code"] == "task_not_found", answer
    resumed.close()
    bob.close()


def test_clients_keep_their_results_and_events_across_a_redis_restart(
    app, redis_server, start_worker, gateways
) -> None:
    from meetingtasks.events import Event, EventBus

    start_worker(["user"])
    client = Client(gateways[0].ws_url(token("alice", ("m1",))))
    client.request({"op": "subscribe", "channel": "meeting.m1", "request_id": "s"})
    client.request({"op": "submit", "request_id": "nap", "type": "sleep", "data": {"seconds": 1}})
    redis_server.restart()  # kill -9; the task's end may be published before the gateway is back

    assert client.result("nap")["status"] == "completed"
    deadline = time.monotonic() + 30
    bus = EventBus()
    while not any(f["op"] == "event" for f in client.frames) and time.monotonic() < deadline:
        bus.publish("meeting.m1", Event("meeting.note", {}, "test"))  # resubscribed by now?
        assert client.request({"op": "ping", "request_id": "p"})["op"] == "pong"
        time.sleep(0.2)
    bus.stop()
    assert any(f["op"] == "event" for f in client.frames)
    assert gateways[0].http("GET", "/stats")[1]["gateway"]["fanout"]["reconnects"] >= 1
    client.close()
