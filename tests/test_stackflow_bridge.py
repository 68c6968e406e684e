"""The StackFlow bridge (``ai-node --upstream``) against the peer double: nothing breaks it.

Every test ends with the double neither crashed nor wedged (the ``peer`` fixture checks),
and each rule of the bridge has a test that fails without it.
"""

from __future__ import annotations

import json
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from meetingtasks.errors import MeetingTasksError, NodeUnavailable
from meetingtasks.llm import LLMClient
from meetingtasks.node import InferenceNode, NodeConfig
from meetingtasks.node.stackflow import StackFlowBridge
from tests.support.llm_nodes import REPO, NodeProcess
from tests.support.stackflow_peer import StackFlowPeer

pytestmark = pytest.mark.timeout(90)

StartBridge = Callable[..., InferenceNode]


@pytest.fixture
def peer() -> Iterator[StackFlowPeer]:
    double = StackFlowPeer()
    yield double
    double.stop()


@pytest.fixture
def healthy(peer: StackFlowPeer) -> Iterator[StackFlowPeer]:
    """The double, checked at the end: never crashed, its node never wedged."""
    yield peer
    assert peer.crashed is None
    assert peer.node_state != "wedged"


@pytest.fixture
def start_bridge(peer: StackFlowPeer) -> Iterator[StartBridge]:
    nodes: list[InferenceNode] = []

    def start(**options: Any) -> InferenceNode:
        options = {"read_timeout": 2.0, "queue_timeout": 4.0, "recheck_after": 0.3, **options}
        bridge = StackFlowBridge(peer.address, **options)
        config = NodeConfig(bind="tcp://127.0.0.1:*", tcp_port=0)
        nodes.append(InferenceNode(config, bridge).start())
        return nodes[-1]

    yield start
    for node in nodes:
        node.stop()


@pytest.fixture
def clients() -> Iterator[Callable[..., LLMClient]]:
    made: list[LLMClient] = []

    def make(addresses: str | list[str], **options: Any) -> LLMClient:
        options = {"timeout": 30.0, "read_timeout": 8.0, "connect_timeout": 2.0, **options}
        made.append(LLMClient(addresses, **options))
        return made[-1]

    yield make
    for client in made:
        client.close()


def chat(system: str, text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": text}]


def test_a_reply_streams_through_the_bridge_with_its_text_intact(
    healthy: StackFlowPeer, start_bridge: StartBridge, clients: Callable[..., LLMClient]
) -> None:
    node = start_bridge()
    client = clients(node.addresses[0])
    deltas: list[str] = []
    system = 'Answer in "one" line.\nBe brief {always}.'
    reply = client.stream(chat(system, "会议 {ok} 🎉"), on_delta=deltas.append)
    assert deltas == ["会议 {ok} 🎉", "hello"]  # the echo node: the input, then "hello"
    assert reply == "会议 {ok} 🎉hello"
    assert [setup["prompt"] for setup in healthy.work_ids.values()] == [system]
    stats = node.stats()["backend"]
    assert stats["state"] == "up" and stats["work_ids"] == list(healthy.work_ids)


def test_four_system_prompts_from_one_client_stay_within_the_peers_three_units(
    healthy: StackFlowPeer, start_bridge: StartBridge, clients: Callable[..., LLMClient]
) -> None:
    client = clients(start_bridge().addresses[0])
    for round_ in range(2):
        for n in range(4):
            assert client.complete(chat(f"prompt {n}", f"q{round_}{n}")) == f"q{round_}{n}hello"
        assert len(healthy.work_ids) <= 3
    exits = [text for _conn, text in healthy.received if '"action":"exit"' in text]
    assert exits  # the least recently used unit made room


def test_twenty_concurrent_tasks_reach_the_peer_one_at_a_time_on_one_connection_at_a_time(
    healthy: StackFlowPeer, start_bridge: StartBridge, clients: Callable[..., LLMClient]
) -> None:
    healthy.token_delay = 0.01
    client = clients(start_bridge().addresses[0])
    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(lambda n: client.complete(f"task {n}"), range(20)))
    assert replies == [f"task {n}hello" for n in range(20)]
    assert healthy.most_streams_at_once == 1
    used = [connection for connection, _text in healthy.received]
    in_turn = [name for n, name in enumerate(used) if n == 0 or used[n - 1] != name]
    assert len(in_turn) == len(set(in_turn))  # each connection's requests, then the next's


def test_five_hundred_requests_in_a_row_stay_below_the_peers_read_limit(
    healthy: StackFlowPeer, start_bridge: StartBridge, clients: Callable[..., LLMClient]
) -> None:
    # The real unit manager dies of std::bad_alloc after about 28 reads of one connection
    # (its input buffer grows on each); the double crashes at the 29th.
    assert healthy.max_reads == 28
    node = start_bridge()
    client = clients(node.addresses[0])
    for n in range(500):
        assert client.complete(f"q{n}") == f"q{n}hello"
    reads = healthy.reads_per_connection()
    assert len(reads) > 500 // 28 and max(reads.values()) <= 20
    setups = [text for _conn, text in healthy.received if '"action":"setup"' in text]
    assert len(setups) == 1  # the work unit outlived every reconnect
    assert node.stats()["backend"]["connections_opened"] == len(reads)


def test_without_recycling_the_peer_dies_of_its_read_limit(
    peer: StackFlowPeer, start_bridge: StartBridge, clients: Callable[..., LLMClient]
) -> None:
    # The same calls as above on one connection for life: what the bridge did before.
    client = clients(start_bridge(recycle_after=10_000).addresses[0], timeout=5.0)
    with pytest.raises(MeetingTasksError):
        for n in range(40):
            client.complete(f"q{n}")
    assert peer.crashed is not None and "bad_alloc" in peer.crashed


def test_a_recycle_limit_below_two_is_refused() -> None:
    from meetingtasks.errors import ConfigurationError

    for bad in (0, 1, 2.5, "20"):
        with pytest.raises(ConfigurationError, match="recycle_after"):
            StackFlowBridge("tcp+json://127.0.0.1:1", recycle_after=bad)  # type: ignore[arg-type]


def test_stopping_the_bridge_exits_the_units_it_holds(
    healthy: StackFlowPeer, start_bridge: StartBridge, clients: Callable[..., LLMClient]
) -> None:
    node = start_bridge()
    client = clients(node.addresses[0])
    client.complete(chat("a", "x"))
    client.complete(chat("b", "y"))
    assert len(healthy.work_ids) == 2
    node.stop()
    assert healthy.work_ids == {}


def test_a_node_restart_is_detected_and_its_units_set_up_again(
    healthy: StackFlowPeer, start_bridge: StartBridge, clients: Callable[..., LLMClient]
) -> None:
    """An inference on a unit the node lost gets no reply: the bridge asks and sets up again."""
    node = start_bridge()
    client = clients(node.addresses[0])
    assert client.complete("before") == "beforehello"
    before = set(healthy.work_ids)
    healthy.restart_node()
    assert client.complete("after") == "afterhello"
    assert set(healthy.work_ids).isdisjoint(before)  # a new unit (work_ids keep counting)
    assert node.stats()["backend"]["restarts_detected"] == 1


def test_units_lost_in_a_restart_are_never_exited(
    healthy: StackFlowPeer, start_bridge: StartBridge, clients: Callable[..., LLMClient]
) -> None:
    """An exit of a work_id the node does not know aborts it: the bridge asks first."""
    node = start_bridge(units=2)
    client = clients(node.addresses[0])
    for system in "ab":
        client.complete(chat(system, "x"))
    healthy.restart_node()  # llm.0 and llm.1 are gone
    for system in "cde":  # e makes room: by exiting c, never the lost a
        client.complete(chat(system, "y"))
    healthy.restart_node()
    node.stop()  # exits at stop, none of them for the units lost again
    exits = [json.loads(text)["work_id"] for _conn, text in healthy.received if "exit" in text]
    assert exits == ["llm.2"]


def test_a_dead_node_gets_one_unanswered_request_and_nothing_queued_behind_it(
    healthy: StackFlowPeer, start_bridge: StartBridge, clients: Callable[..., LLMClient]
) -> None:
    node = start_bridge()
    client = clients(node.addresses[0])
    client.complete("warm")
    healthy.kill_node()
    for _ in range(4):  # our error each time (the client's own timeouts bound the wait)
        with pytest.raises(NodeUnavailable):
            client.complete("anyone?")
    assert healthy.behind_lock == []  # one request waits on the dead node, no more
    assert node.stats()["backend"]["state"] == "stuck"
    health = client.health()["nodes"][0]
    assert health["state"] == "down"


def test_a_task_for_a_missing_unit_leaves_the_address_serving_text(
    healthy: StackFlowPeer, start_bridge: StartBridge, clients: Callable[..., LLMClient]
) -> None:
    bridge = start_bridge()
    other = InferenceNode(NodeConfig(bind="tcp://127.0.0.1:*", tcp_port=None)).start()
    try:
        client = clients([bridge.addresses[0], other.addresses[0]], skip_base=30.0)
        with pytest.raises(NodeUnavailable, match="-9"):
            client.complete("transcribe this", unit="asr")
        for n in range(6):
            assert client.complete(f"text {n}") in (f"text {n}hello", f"text {n}")
        assert bridge.core.generations >= 2 and other.core.generations >= 2
        nodes = client.health()["nodes"]
        assert [node["state"] for node in nodes] == ["up", "up"]
        assert nodes[0]["units"]["asr"]["state"] == "down"
        assert not any('"asr' in text for _conn, text in healthy.received)
    finally:
        other.stop()


def test_the_unit_manager_restarting_is_a_reconnection(
    peer: StackFlowPeer, start_bridge: StartBridge, clients: Callable[..., LLMClient]
) -> None:
    node = start_bridge()
    client = clients(node.addresses[0])
    client.complete("one")
    peer.stop()
    replacement = StackFlowPeer(port=peer.port)
    try:
        assert client.complete("two") == "twohello"
        assert replacement.crashed is None and len(replacement.work_ids) == 1
    finally:
        replacement.stop()


CLIENT = """
import sys
from meetingtasks.llm import LLMClient
client = LLMClient(sys.argv[1], read_timeout=20, timeout=60)
client.stream(sys.argv[2], on_delta=lambda d: print("delta", d, flush=True))
print("done", flush=True)
"""


def _first_line(process: subprocess.Popen[bytes], timeout: float = 20.0) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "the client printed nothing"
    return process.stdout.readline().decode()


def test_three_clients_killed_mid_stream_then_a_new_one(
    healthy: StackFlowPeer, start_bridge: StartBridge, clients: Callable[..., LLMClient]
) -> None:
    healthy.token_delay = 0.3
    node = start_bridge(read_timeout=5.0, queue_timeout=10.0)
    zmq_address, tcp_address = node.addresses
    for n, address in enumerate([zmq_address, tcp_address, zmq_address]):
        process = subprocess.Popen(
            [sys.executable, "-c", CLIENT, address, f"client {n} words"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            assert _first_line(process).startswith("delta")
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
            assert process.stdout is not None
            process.stdout.close()
    assert clients(zmq_address).complete("the new one") == "the new onehello"
    assert len(healthy.work_ids) <= 3


def test_a_restarted_bridge_exits_the_units_its_last_run_left(
    healthy: StackFlowPeer, tmp_path: Path
) -> None:
    """Killed bridges leave units on the peer; without exiting them a 4th setup crashes it."""
    for n in range(4):
        bridge = NodeProcess(tmp_path / "bridge.log", "--upstream", healthy.address)
        try:
            client = LLMClient(bridge.zmq_address, read_timeout=8.0, timeout=20.0)
            assert client.complete(chat(f"run {n}", "hi")) == "hihello"
            client.close()
        finally:
            bridge.kill()
    assert len(healthy.work_ids) == 1  # the last run's, left for the next one to exit
    exits = [text for _conn, text in healthy.received if '"action":"exit"' in text]
    assert len(exits) == 3


def test_a_stackflow_sample_client_works_against_the_bridge(
    healthy: StackFlowPeer, start_bridge: StartBridge
) -> None:
    """Edge-LLM-Infra's sample/test.py, as it talks: json.dumps lines, fixed request_id."""
    host, port = start_bridge().addresses[1].removeprefix("tcp+json://").split(":")
    with socket.create_connection((host, int(port)), 5) as sock, sock.makefile("rb") as lines:

        def send(data: dict[str, Any]) -> dict[str, Any]:
            sock.sendall((json.dumps(data, ensure_ascii=False) + "\n").encode())
            return json.loads(lines.readline())

        setup = send({"request_id": "llm_001", "work_id": "llm", "action": "setup",
                      "object": "llm.setup", "data": {
                          "model": "DeepSeek-R1-Distill-Qwen-1.5B",
                          "response_format": "llm.utf-8.stream", "input": "llm.utf-8.stream",
                          "enoutput": True, "max_token_len": 1023,
                          "prompt": "You are a knowledgeable assistant."}})  # fmt: skip
        work_id = setup["work_id"]
        first = send({"request_id": "llm_001", "work_id": work_id, "action": "inference",
                      "object": "llm.utf-8.stream",
                      "data": {"delta": "你好 {there}", "index": 0, "finish": True}})  # fmt: skip
        chunks = [first]
        while not chunks[-1]["data"]["finish"]:
            chunks.append(json.loads(lines.readline()))
        assert "".join(c["data"]["delta"] for c in chunks) == "你好 {there}hello"
        bye = send({"request_id": "llm_exit", "work_id": work_id, "action": "exit"})
        assert bye["error"]["code"] == 0


def test_a_bad_upstream_is_refused_at_start() -> None:
    for url in ("tcp://127.0.0.1:5560", "http://x"):
        with pytest.raises(MeetingTasksError, match="tcp\\+json"):
            StackFlowBridge(url)


def test_ai_workers_reach_the_peer_through_the_bridge(
    app, redis, start_worker, healthy: StackFlowPeer, tmp_path: Path
) -> None:
    """The whole path: 20 llm_chat tasks at once on an ai worker, one at a time at the peer."""
    bridge = NodeProcess(tmp_path / "bridge.log", "--upstream", healthy.address)
    try:
        start_worker(["ai"], env={"MEETINGTASKS_LLM_NODES": bridge.zmq_address})
        results = [
            app.send_task("ai.llm_chat", kwargs={"prompt": f"topic {n} {{agenda}}"})
            for n in range(20)
        ]
        texts = [result.get(timeout=120) for result in results]
    finally:
        bridge.kill()
    assert texts == [f"topic {n} {{agenda}}hello" for n in range(20)]
    assert healthy.most_streams_at_once == 1
    assert len(healthy.work_ids) == 1  # one system prompt, one unit, reused
