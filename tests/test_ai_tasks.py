"""AI tasks through real workers and a real reference node: streamed, retried, failed clearly."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from meetingtasks.base import headers
from meetingtasks.base.keys import get_keys
from meetingtasks.errors import InferenceError, InvalidPayload
from meetingtasks.store import get_redis
from tests.support.llm_nodes import FakeNode, NodeProcess


@pytest.fixture
def node(tmp_path: Path):
    process = NodeProcess(tmp_path / "node.log", "--token-delay", "0.01")
    yield process
    process.kill()


def collect_session(session_id: str, until_finish: threading.Event) -> list[dict]:
    """Frames published on a session's channel, gathered in a thread."""
    frames: list[dict] = []
    pubsub = get_redis().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(get_keys().session_channel(session_id))

    def listen() -> None:
        while not until_finish.is_set():
            message = pubsub.get_message(timeout=0.1)
            if message:
                frames.append(json.loads(message["data"]))
        pubsub.close()

    threading.Thread(target=listen, daemon=True).start()
    return frames


@pytest.mark.parametrize("transport", ["zmq", "tcp"])
def test_llm_chat_streams_deltas_to_the_session_and_returns_the_text(
    app, redis, start_worker, node, transport: str
) -> None:
    start_worker(["ai"], env={"MEETINGTASKS_LLM_NODES": node.address(transport)})
    done = threading.Event()
    frames = collect_session("s-1", done)
    prompt = "the quick brown fox jumps over the lazy dog"

    result = app.send_task(
        "ai.llm_chat",
        kwargs={"prompt": prompt},
        headers={headers.SESSION: "s-1", headers.REQUEST: "r-9"},
    )
    text = result.get(timeout=60)
    done.set()

    deltas = [f for f in frames if f["op"] == "delta"]
    assert [f["index"] for f in deltas] == list(range(len(deltas)))
    assert len(deltas) > 5
    assert "".join(f["delta"] for f in deltas) == text
    assert prompt.split()[0] in text
    assert {(f["task_id"], f["request_id"]) for f in deltas} == {(result.id, "r-9")}


def test_an_error_code_from_the_node_fails_clearly_without_retry(app, redis, start_worker) -> None:
    def refuse(request: dict | None) -> list[bytes]:
        reply = {
            "request_id": (request or {}).get("request_id", "0"), "work_id": "llm",
            "created": 0, "object": "None", "data": "None",
            "error": {"code": -5, "message": "model loading failed"},
        }  # fmt: skip
        return [json.dumps(reply).encode()]

    fake = FakeNode("zmq", refuse)
    try:
        start_worker(["ai"], env={"MEETINGTASKS_LLM_NODES": fake.address})
        result = app.send_task("ai.summarize", kwargs={"text": "a long meeting"})
        with pytest.raises(InferenceError, match="model loading failed"):
            result.get(timeout=60)
        assert len(fake.requests) == 1  # not retried
    finally:
        fake.stop()


def test_a_bad_payload_fails_at_once(app, redis, start_worker, node) -> None:
    start_worker(["ai"], env={"MEETINGTASKS_LLM_NODES": node.zmq_address})
    result = app.send_task("ai.llm_chat", kwargs={"prompt": "   "})
    with pytest.raises(InvalidPayload, match="prompt"):
        result.get(timeout=60)
