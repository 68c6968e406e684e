"""The OpenAI upstream's answers to what a real server cannot be made to do here: busy,
refusing a model, a bad key, a broken stream. An HTTP double in a thread plays the
server; each test says what it answers."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from meetingtasks.errors import ConfigurationError, InferenceError, NodeUnavailable
from meetingtasks.llm import LLMClient
from meetingtasks.llm.protocol import ErrorCode
from meetingtasks.node import InferenceNode, NodeConfig
from meetingtasks.node.backends import BackendError, EchoBackend, Generation
from meetingtasks.node.openai_upstream import OpenAIUpstream
from meetingtasks.node.pool import BackendPool
from meetingtasks.run.embedded_redis import free_port
from tests.support.llm_nodes import NodeProcess

pytestmark = pytest.mark.timeout(60)

#: (status, headers, body) the double answers with.
Reply = tuple[int, dict[str, str], bytes]


def sse(*chunks: Any, done: bool = True) -> Reply:
    lines = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    return (
        200,
        {"Content-Type": "text/event-stream"},
        lines + (b"data: [DONE]\n\n" if done else b""),
    )


def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


class Double:
    """An HTTP server answering every POST with ``reply``; it records each request."""

    def __init__(self) -> None:
        self.reply: Reply = sse(chunk("hi"), chunk(" there", "stop"))
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                double.requests.append((dict(self.headers), body))
                status, headers, payload = double.reply
                self.send_response(status)
                for name, value in {"Content-Length": str(len(payload)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"openai+http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def double() -> Iterator[Double]:
    server = Double()
    yield server
    server.stop()


@pytest.fixture
def upstream(double: Double) -> Iterator[Callable[..., OpenAIUpstream]]:
    made: list[OpenAIUpstream] = []

    def make(**options: Any) -> OpenAIUpstream:
        made.append(OpenAIUpstream(double.url, **options))
        return made[-1]

    yield make
    for backend in made:
        backend.close()


def generation(text: str = "hello", **options: Any) -> Generation:
    return Generation(text, "smollm2", "Be brief.", "llm.1", options)


def test_the_request_carries_messages_options_and_the_key(
    double: Double, upstream: Callable[..., OpenAIUpstream], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEETINGTASKS_UPSTREAM_API_KEY", "sk-test")
    backend = upstream()
    reply = list(backend.generate(generation(max_token_len=32, temperature=0.5)))
    assert reply == ["hi", " there"]
    headers, body = double.requests[0]
    assert headers["Authorization"] == "Bearer sk-test"
    assert body == {
        "model": "smollm2",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello"},
        ],
        "stream": True,
        "max_tokens": 32,
        "temperature": 0.5,
    }


def test_a_model_name_given_at_start_replaces_the_units(
    double: Double, upstream: Callable[..., OpenAIUpstream]
) -> None:
    list(upstream(model="Qwen/Qwen2.5-0.5B").generate(generation()))
    assert double.requests[0][1]["model"] == "Qwen/Qwen2.5-0.5B"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (429, ErrorCode.NOT_AVAILABLE),
        (503, ErrorCode.NOT_AVAILABLE),
        (404, ErrorCode.MODEL_LOAD_FAILED),
        (400, ErrorCode.MODEL_LOAD_FAILED),
        (401, ErrorCode.GENERAL),
    ],
)
def test_the_servers_refusals_map_to_the_nodes_codes(
    double: Double, upstream: Callable[..., OpenAIUpstream], status: int, code: int
) -> None:
    double.reply = (status, {"Content-Type": "application/json"}, b'{"error": "no such model"}')
    with pytest.raises(BackendError) as raised:
        list(upstream().generate(generation()))
    assert raised.value.code == code
    assert f"HTTP {status}" in str(raised.value) and "no such model" in str(raised.value)


def test_a_stream_cut_short_or_garbled_fails_the_reply(
    double: Double, upstream: Callable[..., OpenAIUpstream]
) -> None:
    double.reply = sse(chunk("half"), done=False)
    with pytest.raises(BackendError, match="before the reply ended") as raised:
        list(upstream().generate(generation()))
    assert raised.value.code == ErrorCode.NOT_AVAILABLE
    double.reply = 200, {"Content-Type": "text/event-stream"}, b"data: {not json\n\n"
    with pytest.raises(BackendError, match="not JSON"):
        list(upstream().generate(generation()))


def test_an_unreachable_server_is_retried_and_a_refused_model_is_not(
    double: Double,
) -> None:
    dead = f"openai+http://127.0.0.1:{free_port()}/v1"
    with InferenceNode(NodeConfig(bind="tcp://127.0.0.1:*"), OpenAIUpstream(dead)) as node:
        client = LLMClient(node.addresses[0], timeout=3, skip_base=0.1)
        with pytest.raises(NodeUnavailable, match="could not be reached"):
            client.complete("hello")
        client.close()
    double.reply = (404, {}, b'{"error": "model smollm2 not found"}')
    with InferenceNode(NodeConfig(bind="tcp://127.0.0.1:*"), OpenAIUpstream(double.url)) as node:
        client = LLMClient(node.addresses[0], timeout=10)
        with pytest.raises(InferenceError, match="not found"):
            client.complete("hello")
        client.close()
    assert len(double.requests) == 1  # refused once, not asked again


def test_streams_beyond_the_bound_wait_then_are_refused_busy(
    double: Double, upstream: Callable[..., OpenAIUpstream]
) -> None:
    backend = upstream(streams=1, queue_timeout=0.2)
    first = backend.generate(generation())
    assert next(first) == "hi"  # holds the one stream
    assert backend.health()["free_slots"] == 0
    with pytest.raises(BackendError, match="busy") as raised:
        list(backend.generate(generation()))
    assert raised.value.code == ErrorCode.NOT_AVAILABLE
    first.close()  # a reply abandoned gives its stream back
    assert backend.health()["free_slots"] == 1
    assert list(backend.generate(generation())) == ["hi", " there"]


def test_a_pool_skips_a_member_that_cannot_be_reached(double: Double) -> None:
    # The dead one has the most free slots, so it is tried first.
    dead = OpenAIUpstream(f"openai+http://127.0.0.1:{free_port()}/v1", streams=4)
    pool = BackendPool([dead, OpenAIUpstream(double.url, streams=1)])
    assert pool.health()["free_slots"] == 5
    assert list(pool.generate(generation())) == ["hi", " there"]
    assert list(pool.generate(generation())) == ["hi", " there"]
    assert len(double.requests) == 2  # the second went straight to the live one
    members = pool.health()["members"]
    assert members[0]["skipped_for"] > 0 and members[0]["state"] == "down"
    assert [m["replying"] for m in members] == [0, 0]
    pool.close()


def test_bad_upstream_settings_are_refused() -> None:
    for url in ("http://127.0.0.1:8080/v1", "openai://x", "tcp+json://127.0.0.1:1"):
        with pytest.raises(ConfigurationError, match="openai\\+http://"):
            OpenAIUpstream(url)
    with pytest.raises(ConfigurationError, match="at least 1 stream"):
        OpenAIUpstream("openai+http://127.0.0.1:1/v1", streams=0)
    with pytest.raises(ConfigurationError, match="two backends"):
        BackendPool([EchoBackend()])


def test_the_node_command_pools_repeated_upstreams_and_refuses_an_unknown_scheme(
    tmp_path: Path,
) -> None:
    first, second = Double(), Double()
    node = NodeProcess(tmp_path / "node.log", "--upstream", first.url, "--upstream", second.url)
    try:
        client = LLMClient(node.zmq_address, timeout=10)
        assert [client.complete(f"q{n}") for n in range(4)] == ["hi there"] * 4
        assert (len(first.requests), len(second.requests)) == (2, 2)  # equals in turn
        client.close()
    finally:
        node.kill()
        first.stop()
        second.stop()
    refused = subprocess.run(
        [sys.executable, "-m", "meetingtasks", "ai-node", "--upstream", "http://x:1/v1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "openai+http://" in refused.stderr and "tcp+json://" in refused.stderr


def test_each_backend_tells_the_pool_its_slots() -> None:
    from meetingtasks.node.pool import slots_of
    from meetingtasks.node.stackflow import StackFlowBridge

    # The StackFlow peer answers one request at a time: in a pool it must not look free.
    assert slots_of(StackFlowBridge("tcp+json://127.0.0.1:1")) == 1
    assert slots_of(OpenAIUpstream("openai+http://127.0.0.1:1/v1", streams=3)) == 3
    assert slots_of(EchoBackend()) == float("inf")
