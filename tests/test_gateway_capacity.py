"""A gateway process holds as many connections as it may and no more: past its cap
(``MEETINGTASKS_GATEWAY_MAX_CONNECTIONS``, or its open-file limit less a reserve) a new
client is closed with 1013 ``gateway_full`` and tries again, while the process keeps
serving the clients it holds, Redis and its HTTP endpoints."""

from __future__ import annotations

from pathlib import Path

from tests.support.gateways import Client, GatewayProcess, publish_notes, subscribe, token
from tests.support.waiting import wait_until


def refused(client: Client) -> bool:
    """Whether the gateway turned ``client`` away as full (error frame, then 1013)."""
    first = client.recv()
    if first["op"] == "session":
        return False
    assert first["op"] == "error" and first["code"] == "gateway_full", first
    assert client.closed()[0] == 1013
    return True


def test_past_its_connections_a_gateway_says_try_again(redis, tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path / "gateway.log", gateway_max_connections=3)
    try:
        held = [Client(gateway.ws_url(token(f"user-{i}"))) for i in range(3)]
        extra = Client(gateway.ws_url(token("user-3")), expect_session=False)
        assert refused(extra)
        held.pop().close()
        wait_until(
            lambda: gateway.http("GET", "/stats")[1]["gateway"]["connections"] == 2,
            "the closed connection let go",
            10,
        )
        again = Client(gateway.ws_url(token("user-3")), expect_session=False)
        assert not refused(again)
        stats = gateway.http("GET", "/stats")[1]["gateway"]
        assert stats["max_connections"] == 3
        assert stats["refusals"]["gateway_full"] == 1
        for client in [*held, again, extra]:
            client.close()
    finally:
        gateway.stop()


def test_near_its_open_file_limit_a_gateway_refuses_and_keeps_serving(
    redis, tmp_path: Path
) -> None:
    """Without the cap, the process ran out of descriptors: accept failed (asyncio logs it
    and retries every second), and so could a Redis connection or a file."""
    gateway = GatewayProcess(
        tmp_path / "gateway.log", open_files=256, gateway_max_connections_per_address=1000
    )
    clients: list[Client] = []
    try:
        cap = gateway.http("GET", "/stats")[1]["gateway"]["max_connections"]
        assert 0 < cap < 256
        turned_away = 0
        for i in range(cap + 20):
            client = Client(gateway.ws_url(token(f"user-{i}", ("m1",))), expect_session=False)
            if refused(client):
                client.close()
                turned_away += 1
            else:
                clients.append(client)
        assert (len(clients), turned_away) == (cap, 20)
        for client in clients:
            subscribe(client)
        publish_notes(1)
        for client in clients:
            client.until(lambda f: f["op"] == "event")
        assert gateway.http("GET", "/healthz")[0] == 200
        log = gateway.log()
        assert "Too many open files" not in log and "out of system resource" not in log
    finally:
        for client in clients:
            client.close()
        gateway.stop()
