"""The gateway end to end: real gateway process, real worker, real WebSocket clients.

Each task end state over WebSocket and over HTTP, and the stats and metrics endpoints.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateways import Client, GatewayProcess, token


@pytest.fixture
def gateway(redis, tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path / "gateway.log")
    yield process
    process.stop()


def wait_status(client: Client, task_id: str, wanted: str, timeout: float = 30.0) -> dict:
    """Ask for the task's status until it is ``wanted``."""
    deadline = time.monotonic() + timeout
    while True:
        answer = client.request({"op": "status", "task_id": task_id, "request_id": "poll"})
        if answer.get("status") == wanted or time.monotonic() > deadline:
            return answer
        time.sleep(0.05)


def test_websocket_submits_end_completed_failed_timeout_and_cancelled(
    app, start_worker, gateway: GatewayProcess
) -> None:
    start_worker(["default", "user"], concurrency=2)
    client = Client(gateway.ws_url(token("alice")))
    assert client.session is not None and client.session["user_id"] == "alice"

    accepted = client.request(
        {"op": "submit", "request_id": "ok", "type": "echo", "data": {"value": "hi"}}
    )
    assert accepted["op"] == "accepted" and accepted["status"] == "queued"
    done = client.result("ok")
    assert (done["task_id"], done["status"], done["result"]) == (
        accepted["task_id"],
        "completed",
        "hi",
    )

    client.request(
        {
            "op": "submit",
            "request_id": "bad",
            "type": "flaky",
            "data": {"journal_name": "gw", "fail_times": 0, "permanent": True},
        }
    )
    failed = client.result("bad")
    assert failed["status"] == "failed" and "can never work" in failed["error"]

    client.request(
        {
            "op": "submit",
            "request_id": "slow",
            "type": "sleep",
            "data": {"seconds": 20},
            "timeout": 1,
        }
    )
    assert client.result("slow")["status"] == "timeout"

    running = client.request(
        {"op": "submit", "request_id": "long", "type": "sleep", "data": {"seconds": 60}}
    )
    assert wait_status(client, running["task_id"], "processing")["status"] == "processing"
    client.send({"op": "cancel", "task_id": running["task_id"], "request_id": "long"})
    assert client.result("long")["status"] == "cancelled"

    status = client.request({"op": "status", "task_id": accepted["task_id"], "request_id": "q"})
    assert (status["op"], status["status"], status["result"]) == ("status", "completed", "hi")
    again = client.request({"op": "cancel", "task_id": accepted["task_id"], "request_id": "c"})
    assert again["code"] == "task_finished"
    client.close()


def test_a_client_is_told_when_its_task_starts_running(
    app, start_worker, gateway: GatewayProcess
) -> None:
    """Between ``accepted`` (queued) and the result, a ``progress`` frame says a worker
    took the task, with the request id, so a page can show it running."""
    client = Client(gateway.ws_url(token("alice")))
    submit = {"op": "submit", "request_id": "nap", "type": "sleep", "data": {"seconds": 1}}
    accepted = client.request(submit)
    assert accepted["status"] == "queued"
    start_worker(["default", "user"])
    started = client.until(lambda f: f["op"] in ("progress", "result"))
    assert started == {
        "op": "progress",
        "task_id": accepted["task_id"],
        "status": "processing",
        "request_id": "nap",
    }
    assert client.result("nap")["status"] == "completed"
    client.close()


def test_http_submit_and_status_with_a_bearer_token(app, start_worker, gateway) -> None:
    start_worker(["default", "user"])
    alice = token("alice", ("m1",))

    status, body = gateway.http(
        "POST", "/tasks", {"type": "echo", "data": {"value": [1, 2]}, "request_id": "h1"}, alice
    )
    assert status == 202 and body["status"] == "queued" and body["request_id"] == "h1"
    task_id = body["task_id"]
    deadline = time.monotonic() + 30
    while (view := gateway.http("GET", f"/tasks/{task_id}", token=alice)[1])["status"] != (
        "completed"
    ) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert view["result"] == [1, 2] and view["request_id"] == "h1"

    failing = {"type": "flaky", "data": {"journal_name": "h", "fail_times": 0, "permanent": True}}
    failed_id = gateway.http("POST", "/tasks", failing, alice)[1]["task_id"]
    deadline = time.monotonic() + 30
    while (view := gateway.http("GET", f"/tasks/{failed_id}", token=alice)[1])["status"] != (
        "failed"
    ) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "can never work" in view["error"]

    refusals = [
        (gateway.http("POST", "/tasks", {"type": "echo"}), 401, "token_missing"),
        (gateway.http("GET", f"/tasks/{task_id}", token=token("bob")), 404, "task_not_found"),
        (gateway.http("POST", "/tasks", {"type": "nope"}, alice), 400, "unknown_task"),
        (
            gateway.http("POST", "/tasks", {"type": "echo", "meeting_id": "m2"}, alice),
            403,
            "meeting_not_allowed",
        ),
        (gateway.http("POST", "/tasks", b"{oops", alice), 400, "bad_json"),
        (gateway.http("POST", "/tasks", b"[]", alice), 400, "not_object"),
        (
            gateway.http("POST", "/tasks", {"type": "echo", "data": {"bogus": 1}}, alice),
            400,
            "invalid_payload",
        ),
        (
            gateway.http("POST", "/tasks", {"type": "echo", "data": {"x": "y" * 300_000}}, alice),
            413,
            "frame_too_large",
        ),
    ]
    for (status, body), expected_status, code in refusals:
        assert (status, body["code"]) == (expected_status, code), body


def test_stats_and_metrics_show_the_cluster_and_this_gateway(app, gateway) -> None:
    client = Client(gateway.ws_url(token("alice")))
    client.send("not json")
    client.until(lambda f: f["op"] == "error")

    status, stats = gateway.http("GET", "/stats")
    assert status == 200 and "queues" in stats and "workers" in stats
    mine = stats["gateway"]
    assert (mine["connections"], mine["sessions"], mine["errors"]) == (1, 1, {"bad_json": 1})
    assert mine["frames_in"] >= 1 and mine["frames_out"] >= 2

    status, metrics = gateway.http("GET", "/metrics")
    assert status == 200
    assert "meetingtasks_gateway_connections 1.0" in metrics
    assert 'meetingtasks_gateway_errors_total{code="bad_json"} 1.0' in metrics
    assert "meetingtasks_queue_depth{" in metrics
    client.close()
