"""The node in front of OpenAI-compatible servers (``--upstream openai+http://…/v1``): a real
``llama_cpp.server`` serving SmolLM2 on loopback, and an HTTP double for the answers a
real server cannot be made to give here (busy, refused, a bad key)."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from meetingtasks.errors import NodeUnavailable
from meetingtasks.llm import LLMClient
from meetingtasks.node import InferenceNode, NodeConfig
from meetingtasks.node.openai_upstream import OpenAIUpstream
from meetingtasks.node.pool import BackendPool
from meetingtasks.run.embedded_redis import free_port
from tests.support.gateways import Client, GatewayProcess, token
from tests.support.llm_nodes import NodeProcess
from tests.support.waiting import wait_until

llama = pytest.importorskip("meetingtasks.node.llama")
pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(not llama.available(), reason="the model extra is not installed"),
]

#: SmolLM2 at temperature 0 answers it up to max_tokens (1,500 tokens: about 25 s on one
#: thread here), so the reply is still streaming when a 3 s time limit ends.
LONG_PROMPT = (
    "Write a very long, detailed story about a dragon and a knight. "
    "Make it at least 3000 words long."
)


class ModelServer:
    """``python -m llama_cpp.server`` serving the bundled SmolLM2 on a free loopback port."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115  (closed in stop)
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "llama_cpp.server", "--model", str(llama.bundled_model()),
                "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(self.port),
                "--n_ctx", "2048", "--n_threads", "1", "--verbose", "False",
            ],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(self._answers, timeout=120, what=f"llama_cpp.server on port {self.port}")

    @property
    def url(self) -> str:
        return f"openai+http://127.0.0.1:{self.port}/v1"

    def _answers(self) -> bool:
        assert self.process.poll() is None, self.log_path.read_text(errors="replace")[-2000:]
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1):
            return True
        return False

    def requests_served(self) -> int:
        """Chat completions the server logged (uvicorn's access log)."""
        return self.log_path.read_text(errors="replace").count("POST /v1/chat/completions")

    def connections(self) -> int:
        """Established TCP connections to the server's port, as the kernel lists them."""
        return established_to(self.port)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._log.close()


def established_to(port: int) -> int:
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == "01":  # the server's side, ESTABLISHED
                    count += 1
    return count


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ModelServer]]:
    logs = tmp_path_factory.mktemp("llama-servers")
    started = [ModelServer(logs / f"server-{n}.log") for n in range(2)]
    yield started
    for server in started:
        server.kill()


@pytest.fixture
def server(servers: list[ModelServer]) -> ModelServer:
    return servers[0]


@pytest.fixture
def nodes() -> Iterator[Callable[..., InferenceNode]]:
    started: list[InferenceNode] = []

    def start(backend: Any) -> InferenceNode:
        started.append(InferenceNode(NodeConfig(bind="tcp://127.0.0.1:*"), backend).start())
        return started[-1]

    yield start
    for node in started:
        node.stop()


def test_llm_chat_streams_from_the_server_through_gateway_worker_and_node(
    app, redis, start_worker, server: ModelServer, tmp_path: Path
) -> None:
    node = NodeProcess(tmp_path / "node.log", "--upstream", server.url)
    gateway = GatewayProcess(tmp_path / "gateway.log")
    try:
        start_worker(["ai"], env={"MEETINGTASKS_LLM_NODES": node.zmq_address})
        client = Client(gateway.ws_url(token("alice")))
        prompt = "Name three colours."
        data = {"prompt": prompt, "max_tokens": 48, "temperature": 0}
        accepted = client.request(
            {"op": "submit", "request_id": "chat", "type": "llm_chat", "data": data}
        )
        assert accepted["op"] == "accepted"
        result = client.result("chat", timeout=120)
        assert result["status"] == "completed", result
        deltas = [f["delta"] for f in client.frames if f["op"] == "delta"]
        assert len(deltas) > 1
        text = "".join(deltas)
        assert text == result["result"] and text.strip() and text.strip() != prompt
        client.close()
    finally:
        gateway.stop()
        node.kill()


def test_a_task_whose_time_limit_ends_mid_stream_closes_the_upstream_request(
    app, redis, start_worker, servers: list[ModelServer], tmp_path: Path
) -> None:
    from celery.exceptions import SoftTimeLimitExceeded

    server = servers[1]  # no kept-alive connection of an earlier test's node
    node = NodeProcess(tmp_path / "node.log", "--upstream", server.url)
    try:
        start_worker(["ai"], env={"MEETINGTASKS_LLM_NODES": node.zmq_address})
        kwargs = {"prompt": LONG_PROMPT, "max_tokens": 1500, "temperature": 0}
        started = server.requests_served()
        result = app.send_task("ai.llm_chat", kwargs=kwargs, timeout=3)
        wait_until(lambda: server.connections() >= 1, timeout=30, what="the stream's connection")
        with pytest.raises(SoftTimeLimitExceeded):
            result.get(timeout=60)
        # The node closed its HTTP stream as the task gave up: the server holds no
        # connection (a finished reply's would have stayed open, kept alive for reuse).
        wait_until(lambda: server.connections() == 0, timeout=20, what="the stream closed")
        assert server.requests_served() == started + 1
    finally:
        node.kill()


def test_the_server_killed_mid_stream_is_a_clear_error_and_leaves_no_thread_behind(
    nodes: Callable[..., InferenceNode], tmp_path: Path
) -> None:
    doomed = ModelServer(tmp_path / "doomed.log")
    upstream = OpenAIUpstream(doomed.url, read_timeout=10)
    node = nodes(upstream)
    client = LLMClient(node.addresses[0], timeout=30, read_timeout=10)
    deltas: list[str] = []
    failure: list[BaseException] = []

    def call() -> None:
        try:
            client.stream(LONG_PROMPT, max_tokens=1500, temperature=0, on_delta=deltas.append)
        except BaseException as exc:
            failure.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    try:
        wait_until(lambda: len(deltas) > 3, timeout=60, what="the first deltas")
        doomed.kill()
        caller.join(30)
        assert not caller.is_alive()
        assert len(failure) == 1 and isinstance(failure[0], NodeUnavailable), failure
        assert "OpenAI upstream" in str(failure[0]) and doomed.url.removeprefix("openai+") in str(
            failure[0]
        )
        stats = node.stats()
        assert stats["replying"] == 0
        assert stats["backend"]["in_flight"] == 0 and stats["backend"]["state"] == "down"
    finally:
        client.close()
        doomed.kill()


def test_two_servers_share_the_load_by_free_slots(
    servers: list[ModelServer], nodes: Callable[..., InferenceNode]
) -> None:
    pool = BackendPool([OpenAIUpstream(s.url, streams=1) for s in servers])
    node = nodes(pool)
    before = [s.requests_served() for s in servers]
    client = LLMClient(node.addresses[0], timeout=120, read_timeout=60)
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            members = node.stats()["backend"]["members"]
            peak = max(peak, sum(1 for m in members if m["replying"]))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        threads = [
            threading.Thread(
                target=client.complete, args=(f"Say the word {word}.",),
                kwargs={"max_tokens": 24, "temperature": 0},
            )
            for word in ("red", "green", "blue", "white")
        ]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        done.set()
        watcher.join()
        client.close()
    served = [s.requests_served() - b for s, b in zip(servers, before, strict=True)]
    assert served == [2, 2]  # one stream each: two replies at a time, one per server
    assert peak == 2
    stats = node.stats()["backend"]
    assert stats["free_slots"] == 2 and [m["slots"] for m in stats["members"]] == [1, 1]
