"""LLMClient against real nodes (in threads) and fake ones, over ZMQ and newline-JSON TCP."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import zmq

from meetingtasks.errors import (
    ConfigurationError,
    InferenceError,
    InvalidOption,
    MeetingTasksError,
    NodeUnavailable,
)
from meetingtasks.llm import LLMClient
from meetingtasks.llm.transport import parse_address
from meetingtasks.node import Backend, Generation, InferenceNode, NodeConfig
from tests.support.llm_nodes import FakeNode, chunk, reply
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(60)
TRANSPORTS = ["zmq", "tcp"]
PROMPT = " ".join(f"word{n}" for n in range(20))

StartNode = Callable[..., InferenceNode]
MakeClient = Callable[..., LLMClient]


@pytest.fixture
def start_node() -> Iterator[StartNode]:
    nodes: list[InferenceNode] = []

    def start(backend: Backend | None = None, **options: Any) -> InferenceNode:
        options = {"bind": "tcp://127.0.0.1:*", "tcp_port": 0, **options}
        nodes.append(InferenceNode(NodeConfig(**options), backend).start())
        return nodes[-1]

    yield start
    for node in nodes:
        node.stop()


@pytest.fixture
def make_client() -> Iterator[MakeClient]:
    clients: list[LLMClient] = []

    def make(addresses: str | list[str], **options: Any) -> LLMClient:
        options = {"timeout": 20.0, "read_timeout": 5.0, "connect_timeout": 1.0, **options}
        clients.append(LLMClient(addresses, **options))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def fake_nodes() -> Iterator[list[FakeNode]]:
    fakes: list[FakeNode] = []
    yield fakes
    for fake in fakes:
        fake.stop()


def address(node: InferenceNode, transport: str) -> str:
    return node.addresses[0 if transport == "zmq" else 1]


def dead_address(transport: str) -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"tcp://127.0.0.1:{port}" if transport == "zmq" else f"tcp+json://127.0.0.1:{port}"


def test_a_node_busy_with_a_call_is_given_fewer_until_it_frees(
    start_node: StartNode, make_client: MakeClient
) -> None:
    slow, fast = start_node(token_delay=1.0), start_node()
    client = make_client([slow.addresses[0], fast.addresses[0]])
    held = threading.Thread(target=client.complete, args=("held there",))
    held.start()  # the first call goes to the first node (the round robin starts there)
    wait_until(lambda: slow.stats()["replying"] == 1, "the slow node replying")
    # Round robin would send every other call to the slow node; it has one in flight.
    for n in range(4):
        assert client.complete(f"quick {n}") == f"quick {n}"
    held.join(30)
    assert (slow.stats()["generations"], fast.stats()["generations"]) == (1, 4)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_stream_gives_ordered_deltas_that_join_to_the_reply(
    start_node: StartNode, make_client: MakeClient, transport: str
) -> None:
    client = make_client(address(start_node(), transport))
    deltas: list[str] = []
    text = client.stream(PROMPT, on_delta=deltas.append)
    assert text == PROMPT == "".join(deltas)
    assert deltas == ["word0"] + [f" word{n}" for n in range(1, 20)]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_complete_and_chat_history(
    start_node: StartNode, make_client: MakeClient, transport: str
) -> None:
    client = make_client(address(start_node(), transport))
    assert client.complete("a {json-like} prompt") == "a {json-like} prompt"
    history = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
    ]
    assert client.stream(history) == "user: hi assistant: hello user: bye"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_work_unit_is_reused_and_released_on_close(
    start_node: StartNode, make_client: MakeClient, transport: str
) -> None:
    node = start_node()
    client = make_client(address(node, transport))
    assert [client.stream("one"), client.stream("two")] == ["one", "two"]
    assert len(node.stats()["work_ids"]) == 1 and node.stats()["generations"] == 2
    client.close()
    assert node.stats()["work_ids"] == []
    with pytest.raises(MeetingTasksError, match="closed"):
        client.stream("three")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_threads_share_one_client_and_a_node_serves_them_at_once(
    start_node: StartNode, make_client: MakeClient, transport: str
) -> None:
    node = start_node(token_delay=0.01)
    client = make_client(address(node, transport))

    def call(n: int) -> tuple[str, str, str]:
        deltas: list[str] = []
        prompt = f"thread {n} says " + " ".join(["hello"] * (n % 5 + 1))
        return prompt, client.stream(prompt, on_delta=deltas.append), "".join(deltas)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(24)))
    assert all(prompt == text == joined for prompt, text, joined in results)
    assert node.stats()["generations"] == 24


def test_calls_spread_over_all_nodes(start_node: StartNode, make_client: MakeClient) -> None:
    nodes = [start_node() for _ in range(3)]
    client = make_client([address(nodes[0], "zmq"), address(nodes[1], "tcp"), *nodes[2].addresses])
    for n in range(8):
        assert client.stream(f"call {n}") == f"call {n}"
    assert [node.stats()["generations"] for node in nodes] == [2, 2, 4]
    assert {n["state"] for n in client.health()["nodes"]} == {"up"}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_dead_node_is_skipped_and_shown_down_in_health(
    start_node: StartNode, make_client: MakeClient, transport: str
) -> None:
    dead = dead_address(transport)
    client = make_client([dead, address(start_node(), transport)])
    assert [client.stream(f"call {n}") for n in range(3)] == ["call 0", "call 1", "call 2"]
    health = client.health()
    down, up = health["nodes"]
    assert (down["address"], down["state"], up["state"]) == (dead, "down", "up")
    assert down["skipped_until"] is not None and down["consecutive_failures"] == 1
    assert "127.0.0.1" in down["last_error"] and health["available"] == 1
    assert json.loads(json.dumps(health)) == health


def test_no_node_answering_is_node_unavailable_naming_each(make_client: MakeClient) -> None:
    dead = [dead_address("zmq"), dead_address("tcp")]
    client = make_client(dead)
    with pytest.raises(NodeUnavailable, match="no inference node completed") as caught:
        client.stream("anyone?")
    assert all(url in str(caught.value) for url in dead)
    assert [n["state"] for n in client.health()["nodes"]] == ["down", "down"]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("node_kind", ["slow", "silent"])
def test_our_code_enforces_the_timeout_in_a_thread_pool(
    start_node: StartNode,
    make_client: MakeClient,
    fake_nodes: list[FakeNode],
    transport: str,
    node_kind: str,
) -> None:
    """Celery's time limits do not apply to thread pools: the client's own waits must,
    even when the node streams slowly or goes silent for longer than read_timeout."""
    if node_kind == "slow":
        url = address(start_node(token_delay=0.5), transport)
    else:
        fake_nodes.append(FakeNode(transport, _setup_then(lambda request: [])))
        url = fake_nodes[0].address
    client = make_client(url, read_timeout=120.0)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(client.stream, " ".join(["slow"] * 200), timeout=1.0)
        with pytest.raises(NodeUnavailable, match="timeout ran out"):
            future.result(timeout=30)


class Broken(Backend):
    def setup(self, options: Mapping[str, Any]) -> None:
        if options["model"] != "ok":
            raise ValueError(f"model {options['model']!r} is not installed")

    def generate(self, request: Generation) -> Iterator[str]:
        yield "half"
        raise RuntimeError("GPU fell off")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_node_error_codes_are_clear_inference_errors(
    start_node: StartNode, make_client: MakeClient, transport: str
) -> None:
    client = make_client(address(start_node(Broken()), transport))
    with pytest.raises(InferenceError, match=r"error -5 .*model 'big' is not installed"):
        client.stream("hi", model="big")
    deltas: list[str] = []
    with pytest.raises(InferenceError, match=r"error -11 .*GPU fell off"):
        client.stream("hi", model="ok", on_delta=deltas.append)
    assert deltas == ["half"]
    [node] = client.health()["nodes"]
    assert (node["errors"], node["failures"], node["state"]) == (2, 0, "up")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_transient_error_code_fails_over_to_the_next_node(
    start_node: StartNode, make_client: MakeClient, fake_nodes: list[FakeNode], transport: str
) -> None:
    def task_full(request: dict[str, Any] | None) -> list[bytes]:
        return [reply(request, error={"code": -21, "message": "task full"})]

    fake_nodes.append(FakeNode(transport, task_full))
    client = make_client([fake_nodes[0].address, address(start_node(), transport)])
    assert client.stream("elsewhere") == "elsewhere"
    busy = client.health()["nodes"][0]
    assert busy["state"] == "down" and "error -21" in busy["last_error"]


def _setup_then(bad: Callable[[dict[str, Any]], list[bytes]]) -> Callable[..., list[bytes]]:
    def answer(request: dict[str, Any] | None) -> list[bytes]:
        if request and request.get("action") == "setup":
            return [reply(request)]
        if request and request.get("action") == "exit":
            return [reply(request)]
        return bad(request or {})

    return answer


BAD_REPLIES: dict[str, tuple[Callable[[dict[str, Any]], list[bytes]], str]] = {
    "garbage bytes": (lambda r: [b"\x00\xff\xfe\x9c binary"], "not JSON"),
    "not an object": (lambda r: [b'"hello"'], "not a JSON object"),
    "other request": (lambda r: [chunk({**r, "request_id": "zzz"}, 0, "x")], "mixes up"),
    "repeated chunk": (lambda r: [chunk(r, 0, "a"), chunk(r, 0, "a")], "repeated chunk"),
    "skipped chunk": (lambda r: [chunk(r, 0, "a"), chunk(r, 2, "c")], "out-of-order"),
    "unknown action": (
        lambda r: [reply(r, error={"code": -3, "message": "action match false"})],
        "error -3",
    ),
    "bad work_id": (
        lambda r: [reply(r, error={"code": -4, "message": "inference data push false"})],
        "error -4 .*does not know this work_id",
    ),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", BAD_REPLIES)
def test_protocol_violations_from_a_node_are_clear_inference_errors(
    make_client: MakeClient, fake_nodes: list[FakeNode], transport: str, case: str
) -> None:
    bad, message = BAD_REPLIES[case]
    fake_nodes.append(FakeNode(transport, _setup_then(bad)))
    client = make_client(fake_nodes[0].address)
    with pytest.raises(InferenceError, match=message):
        client.stream("hi")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_forgotten_work_id_is_set_up_again_once(
    make_client: MakeClient, fake_nodes: list[FakeNode], transport: str
) -> None:
    """A node that restarted answers -4 to a cached work_id: set up again, transparently."""
    inferences = 0

    def answer(request: dict[str, Any] | None) -> list[bytes]:
        nonlocal inferences
        assert request is not None
        if request["action"] != "inference":
            return [reply(request)]
        inferences += 1
        if inferences == 2:
            return [reply(request, error={"code": -4, "message": "inference data push false"})]
        return [chunk(request, 0, "ok"), chunk(request, 1, "", finish=True)]

    fake_nodes.append(FakeNode(transport, answer))
    client = make_client(fake_nodes[0].address)
    assert [client.stream("a"), client.stream("b")] == ["ok", "ok"]
    actions = [request["action"] for request in fake_nodes[0].requests if request]
    assert actions == ["setup", "inference", "inference", "setup", "inference"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_restarted_node_is_used_again(
    start_node: StartNode, make_client: MakeClient, transport: str
) -> None:
    first = start_node()
    url = address(first, transport)
    client = make_client(url)
    assert client.stream("before") == "before"
    first.stop()
    port = parse_address(url).port
    options = {"bind": url, "tcp_port": None} if transport == "zmq" else {"tcp_port": port}
    start_node(**options)
    assert client.stream("after") == "after"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_node_answers_bad_requests_and_keeps_serving(
    start_node: StartNode, transport: str
) -> None:
    node = start_node()
    requests = [
        b"\x00\xff\xfe garbage",
        b'{"request_id": "1", "work_id": "llm", "action": "dance"}',
        b'{"request_id": "2", "work_id": "llm.4242", "action": "inference", "data": "hi"}',
        b'{"request_id": "3", "work_id": "llm.4242", "action": "exit"}',
    ]
    codes = [r["error"]["code"] for r in _raw_exchange(address(node, transport), requests)]
    assert codes == [-2, -3, -4, -6]


def _raw_exchange(url: str, requests: list[bytes]) -> list[dict[str, Any]]:
    """Each request sent as is, and its one reply, over a bare socket."""
    replies = []
    if url.startswith("tcp+json://"):
        target = parse_address(url)
        with socket.create_connection((target.host, target.port), 10) as sock:
            lines = sock.makefile("rb")
            for raw in requests:
                sock.sendall(raw + b"\n")
                replies.append(json.loads(lines.readline()))
            lines.close()
        return replies
    dealer: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(url)
    try:
        for raw in requests:
            dealer.send(raw)
            assert dealer.poll(10_000), "the node did not answer"
            replies.append(json.loads(dealer.recv()))
    finally:
        dealer.close()
    return replies


def test_bad_configuration_is_refused(start_node: StartNode) -> None:
    for url in ("http://x:1", "tcp://nohost", "tcp+json://h:1/path", "zmq"):
        with pytest.raises(ConfigurationError, match="not understood"):
            LLMClient(url)
    assert parse_address("tcp+json://node").port == 10001
    with pytest.raises(ConfigurationError, match="at least one"):
        LLMClient([])
    with pytest.raises(ConfigurationError, match="timeout"):
        LLMClient("tcp://127.0.0.1:5560", timeout=0)
    with pytest.raises(InvalidOption, match="timeout"):
        LLMClient("tcp://127.0.0.1:5560").stream("hi", timeout=-1)
    taken = start_node(tcp_port=None).addresses[0]
    with pytest.raises(ConfigurationError, match="cannot bind"):
        start_node(bind=taken, tcp_port=None)


def test_a_running_call_in_another_thread_survives_close(
    start_node: StartNode, make_client: MakeClient
) -> None:
    node = start_node(token_delay=0.05)
    client = make_client(address(node, "zmq"))
    started = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(client.stream, "a b c d e f", on_delta=lambda _: started.set())
        assert started.wait(10)
        client.close()
        assert future.result(timeout=30) == "a b c d e f"
    assert node.stats()["work_ids"] == []
