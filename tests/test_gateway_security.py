"""The gateway on the internet: tokens that end while connected, a maximum lifetime,
allowed origins, limits per user and per address on every path, the stats behind an
operator token when bound publicly, and no public gateway without a secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from meetingtasks.base.keys import get_keys
from meetingtasks.events import meeting_channel
from meetingtasks.run.embedded_redis import free_port
from tests.support.gateways import REPO, Client, GatewayProcess, token

OPERATOR = "operator-" + "o" * 30


@pytest.fixture
def gateway(redis, tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Start gateways with settings (``gateway_*``) of the test's own."""
    started: list[GatewayProcess] = []

    def start(**settings: Any) -> GatewayProcess:
        process = GatewayProcess(tmp_path / f"gateway-{len(started)}.log", **settings)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


class Publisher:
    """Publishes a meeting event every 50 ms until stopped (what a passive client hears)."""

    def __init__(self, redis: Any, meeting: str) -> None:
        self.redis, self.channel = redis, get_keys().event_channel(meeting_channel(meeting))
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        n = 0
        while not self.stopping.wait(0.05):
            n += 1
            event = {"type": "meeting.tick", "source": "test", "payload": {"n": n},
                     "id": f"e{n}", "time": "2026-12-07T00:00:00+00:00"}  # fmt: skip
            self.redis.publish(self.channel, json.dumps(event))

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)


def test_a_passive_listener_is_cut_at_its_tokens_expiry_and_hears_nothing_after(
    redis, gateway
) -> None:
    server = gateway()
    expires_at = time.time() + 3
    client = Client(server.ws_url(token("alice", ("m1",), ttl=3)))
    assert client.session is not None and abs(client.session["expires_at"] - expires_at) < 2
    assert (
        client.request({"op": "subscribe", "channel": "meeting.m1", "request_id": "s"})["op"]
        == "subscribed"
    )
    publisher = Publisher(redis, "m1")
    try:
        asked = client.until(lambda f: f["op"] == "token_expiring", timeout=10)
        assert abs(asked["expires_at"] - expires_at) < 2
        heard_after: list[float] = []
        while True:
            try:
                frame = client.recv(timeout=10)
            except ConnectionClosed as exc:
                assert exc.rcvd is not None
                code, reason = exc.rcvd.code, exc.rcvd.reason
                break
            if frame["op"] == "event" and time.time() > asked["expires_at"]:
                heard_after.append(time.time())
        closed_at = time.time()
    finally:
        publisher.stop()
    assert code == 4401 and reason.startswith("token_expired"), (code, reason)
    assert not heard_after, f"{len(heard_after)} events after the expiry"
    assert any(f["op"] == "event" for f in client.frames)  # it did hear them before
    print(f"\nclosed {closed_at - asked['expires_at']:.2f} s after the token's expiry")


def test_a_client_that_refreshes_in_time_stays_connected(redis, gateway) -> None:
    server = gateway()
    client = Client(server.ws_url(token("alice", ("m1", "m2"), ttl=3)))
    for meeting in ("m1", "m2"):
        client.request({"op": "subscribe", "channel": f"meeting.{meeting}", "request_id": meeting})
    client.until(lambda f: f["op"] == "token_expiring", timeout=10)
    fresh = token("alice", ("m1",), ttl=60)  # no longer grants m2
    answer = client.request({"op": "auth", "token": fresh, "request_id": "refresh"})
    assert answer["op"] == "authenticated" and answer["expires_at"] > time.time() + 50
    dropped = [f["channel"] for f in client.frames if f["op"] == "unsubscribed"]
    assert dropped == ["meeting.m2"]  # sent before the answer
    time.sleep(3)  # past the first token's expiry
    assert client.request({"op": "ping", "request_id": "alive"})["op"] == "pong"
    publisher = Publisher(redis, "m1")
    try:
        assert client.until(lambda f: f["op"] == "event")["channel"] == "meeting.m1"
    finally:
        publisher.stop()


def test_a_refresh_with_another_users_token_closes_the_connection(gateway) -> None:
    server = gateway()
    client = Client(server.ws_url(token("alice")))
    client.send({"op": "auth", "token": token("mallory")})
    assert client.until(lambda f: f["op"] == "error")["code"] == "user_mismatch"
    code, reason = client.closed()
    assert code == 4403 and reason.startswith("user_mismatch")


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: token("alice", ttl=10 * 365 * 86400), "token_too_long_lived"),
        (lambda: token("alice", ttl=600, now=time.time() + 86400), "token_not_yet_valid"),
    ],
    ids=["ten years", "issued tomorrow"],
)
def test_a_token_living_too_long_or_issued_in_the_future_is_refused(
    gateway, make: Callable[[], str], code: str
) -> None:
    server = gateway()
    client = Client(server.ws_url(make()), expect_session=False)
    assert client.until(lambda f: f["op"] == "error")["code"] == code
    assert client.closed()[0] == 4401
    status, body = server.http("POST", "/tasks", {"type": "echo", "data": {}}, token=make())
    assert (status, body["code"]) == (401, code)


def test_only_allowed_origins_may_connect(gateway) -> None:
    server = gateway()
    own = f"http://127.0.0.1:{server.port}"
    assert Client(server.ws_url(token("alice")), origin=own).session is not None
    assert Client(server.ws_url(token("alice")), origin="http://localhost:3000").session
    evil = Client(
        server.ws_url(token("alice")), origin="https://evil.example", expect_session=False
    )
    assert evil.until(lambda f: f["op"] == "error")["code"] == "origin_refused"
    code, reason = evil.closed()
    assert code == 4403 and reason.startswith("origin_refused")

    listed = gateway(gateway_allowed_origins="https://app.example")
    assert Client(listed.ws_url(token("alice")), origin="https://app.example").session
    other = Client(listed.ws_url(token("alice")), origin=own, expect_session=False)
    assert other.until(lambda f: f["op"] == "error")["code"] == "origin_refused"


def test_connections_and_sessions_over_a_users_limits_are_refused(gateway) -> None:
    server = gateway(gateway_max_connections_per_user=2, gateway_max_sessions_per_user=2)
    first, second = Client(server.ws_url(token("alice"))), Client(server.ws_url(token("alice")))
    third = Client(server.ws_url(token("alice")), expect_session=False)
    assert third.until(lambda f: f["op"] == "error")["code"] == "too_many_connections"
    assert third.closed()[0] == 4429
    assert Client(server.ws_url(token("bob"))).session  # another user is not concerned
    first.close()
    time.sleep(0.5)
    again = Client(server.ws_url(token("alice"), session=second.session_id))  # resumes one
    assert again.session is not None and again.session["resumed"]
    refused = server.http("GET", "/stats")[1]["gateway"]["refusals"]
    assert refused["too_many_connections"] == 1


def test_post_tasks_is_limited_like_the_websocket_path(app, redis, gateway) -> None:
    server = gateway(gateway_user_submit_rate=0.5, gateway_user_submit_burst=3)
    codes = [server.http("POST", "/tasks", {"type": "echo", "data": {"value": n}},
                         token=token("alice"))[1].get("code") for n in range(5)]  # fmt: skip
    assert codes == [None, None, None, "rate_limited", "rate_limited"]
    status = server.http("POST", "/tasks", {"type": "echo", "data": {}}, token=token("alice"))[0]
    assert status == 429
    assert server.http("POST", "/tasks", {"type": "echo", "data": {}}, token=token("bob"))[0] == 202

    crowded = gateway(gateway_max_tasks=2)  # unfinished ones: no worker runs them here
    answers = [crowded.http("POST", "/tasks", {"type": "echo", "data": {}},
                            token=token("carol"))[1] for _ in range(3)]  # fmt: skip
    assert [a.get("code") for a in answers] == [None, None, "too_many_tasks"]


def test_the_stats_want_the_operator_token_on_a_gateway_bound_publicly(gateway) -> None:
    public = gateway(host="0.0.0.0")
    status, body = public.http("GET", "/stats")
    assert (status, body["code"]) == (401, "operator_token_required")
    assert public.http("GET", "/metrics")[0] == 401
    assert public.http("GET", "/healthz")[0] == 200

    guarded = gateway(host="0.0.0.0", gateway_operator_token=OPERATOR)
    assert guarded.http("GET", "/stats", token="wrong" * 5)[0] == 401
    assert guarded.http("GET", "/stats", token=OPERATOR)[0] == 200
    assert guarded.http("GET", "/metrics", token=OPERATOR)[0] == 200
    assert gateway().http("GET", "/stats")[0] == 200  # loopback, no operator token: open


def test_the_page_is_served_with_strict_security_headers(gateway) -> None:
    server = gateway()
    for path in ("/", "/page.js", "/client.js"):
        status, _, headers = server.http_with_headers("GET", path)
        assert status == 200
        policy = headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "'unsafe-inline'" not in policy
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"


def test_a_gateway_bound_beyond_loopback_without_a_secret_refuses_to_start() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MEETINGTASKS_SECRET"}
    done = subprocess.run(
        [sys.executable, "-m", "meetingtasks", "gateway", "--host", "0.0.0.0",
         "--port", str(free_port())],
        cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    said = " ".join(done.stderr.split())
    assert done.returncode == 2, said
    assert "MEETINGTASKS_SECRET" in said and "beyond loopback" in said
