"""An LLM reply streamed to a WebSocket client: a real inference node, worker and gateway."""

from __future__ import annotations

from pathlib import Path

from tests.support.gateways import Client, GatewayProcess, token
from tests.support.llm_nodes import NodeProcess


def test_llm_chat_streams_ordered_deltas_then_the_whole_text(
    app, redis, start_worker, tmp_path: Path
) -> None:
    node = NodeProcess(tmp_path / "node.log", "--token-delay", "0.005")
    gateway = GatewayProcess(tmp_path / "gateway.log")
    try:
        start_worker(["ai"], env={"MEETINGTASKS_LLM_NODES": node.address("zmq")})
        client = Client(gateway.ws_url(token("alice")))
        prompt = "summarise the meeting about the quarterly roadmap in one line"
        accepted = client.request(
            {"op": "submit", "request_id": "chat", "type": "llm_chat", "data": {"prompt": prompt}}
        )
        assert accepted["op"] == "accepted"
        result = client.result("chat", timeout=60)

        deltas = [f for f in client.frames if f["op"] == "delta"]
        assert len(deltas) > 5
        assert [f["index"] for f in deltas] == list(range(len(deltas)))
        assert {(f["task_id"], f["request_id"]) for f in deltas} == {(accepted["task_id"], "chat")}
        assert client.frames.index(accepted) < client.frames.index(deltas[0])
        assert result["status"] == "completed"
        assert "".join(f["delta"] for f in deltas) == result["result"]
        assert "roadmap" in result["result"]
        client.close()
    finally:
        gateway.stop()
        node.kill()
