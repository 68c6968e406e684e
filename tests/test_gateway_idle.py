"""Idle sessions: kept while a connection is open, gone from Redis once abandoned."""

from __future__ import annotations

import time
from pathlib import Path

from meetingtasks.base.keys import get_keys
from tests.support.gateways import Client, GatewayProcess, token

IDLE_TIMEOUT = 2.0


def test_an_abandoned_session_expires_with_its_tasks_and_cannot_be_resumed(
    app, redis, start_worker, tmp_path: Path
) -> None:
    start_worker(["default"])
    gateway = GatewayProcess(tmp_path / "gateway.log", gateway_idle_timeout=IDLE_TIMEOUT)
    try:
        alice = token("alice")
        client = Client(gateway.ws_url(alice))
        session_id = client.session_id
        client.request({"op": "submit", "request_id": "r", "type": "echo", "data": {}})
        client.result("r")
        keys = (
            get_keys().gateway_session(session_id),
            get_keys().gateway_session_tasks(session_id),
        )
        assert redis.exists(*keys) == 2

        time.sleep(3 * IDLE_TIMEOUT)  # connected, though silent: the session is kept
        assert redis.exists(*keys) == 2
        assert client.request({"op": "ping", "request_id": "p"})["op"] == "pong"

        client.close()
        deadline = time.monotonic() + 30
        while redis.exists(*keys) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert redis.exists(*keys) == 0
        assert gateway.http("GET", "/stats")[1]["gateway"]["sessions"] == 0

        again = Client(gateway.ws_url(alice, session=session_id), expect_session=False)
        assert again.until(lambda f: f["op"] == "error")["code"] == "session_not_found"
        assert again.until(lambda f: f["op"] == "session")["session_id"] != session_id
        again.close()
    finally:
        gateway.stop()
