"""Inference nodes killed with -9, before and during a reply: failover or a clear error."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from meetingtasks.errors import NodeUnavailable
from meetingtasks.llm import LLMClient
from tests.support.llm_nodes import NodeProcess

pytestmark = pytest.mark.timeout(120)
TRANSPORTS = ["zmq", "tcp"]
PROMPT = " ".join(f"w{n}" for n in range(15))

StartProcess = Callable[..., NodeProcess]


@pytest.fixture
def start_process(tmp_path: Path) -> Iterator[StartProcess]:
    started: list[NodeProcess] = []

    def start(*args: str) -> NodeProcess:
        started.append(NodeProcess(tmp_path / f"node{len(started)}.log", *args))
        return started[-1]

    yield start
    for process in started:
        process.kill()


@pytest.fixture
def clients() -> Iterator[list[LLMClient]]:
    made: list[LLMClient] = []
    yield made
    for client in made:
        client.close()


def client_for(clients: list[LLMClient], *addresses: str) -> LLMClient:
    clients.append(LLMClient(list(addresses), timeout=30, read_timeout=5, connect_timeout=1))
    return clients[-1]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_node_killed_mid_stream_restarts_the_reply_on_another_node(
    start_process: StartProcess, clients: list[LLMClient], transport: str
) -> None:
    slow, spare = start_process("--token-delay", "0.2"), start_process()
    client = client_for(clients, slow.address(transport), spare.address(transport))
    events: list[tuple[str, str]] = []

    def on_delta(delta: str) -> None:
        events.append(("delta", delta))
        if len(events) == 1:
            slow.kill()

    text = client.stream(
        PROMPT, on_delta=on_delta, on_restart=lambda r: events.append(("restart", r))
    )

    assert text == PROMPT
    kinds = [kind for kind, _ in events]
    assert kinds.count("restart") == 1 and kinds[0] == "delta"
    restart = kinds.index("restart")
    assert slow.address(transport) in events[restart][1]
    assert "".join(delta for _, delta in events[restart + 1 :]) == PROMPT
    down, up = client.health()["nodes"]
    assert (down["state"], up["state"]) == ("down", "up")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_without_on_restart_a_mid_stream_death_is_a_clear_error(
    start_process: StartProcess, clients: list[LLMClient], transport: str
) -> None:
    slow, spare = start_process("--token-delay", "0.2"), start_process()
    client = client_for(clients, slow.address(transport), spare.address(transport))
    deltas: list[str] = []

    def on_delta(delta: str) -> None:
        deltas.append(delta)
        slow.kill()

    with pytest.raises(NodeUnavailable, match=r"deltas were delivered.*no on_restart"):
        client.stream(PROMPT, on_delta=on_delta)
    assert deltas and PROMPT.startswith("".join(deltas))
    assert client.stream("the spare still works") == "the spare still works"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_only_node_killed_mid_stream_is_node_unavailable_in_time(
    start_process: StartProcess, clients: list[LLMClient], transport: str
) -> None:
    only = start_process("--token-delay", "0.2")
    client = client_for(clients, only.address(transport))
    restarts: list[str] = []
    with pytest.raises(NodeUnavailable, match="no inference node completed"):
        client.stream(PROMPT, on_delta=lambda _: only.kill(), on_restart=restarts.append)
    assert len(restarts) == 1
    [node] = client.health()["nodes"]
    assert node["state"] == "down" and node["skipped_until"] is not None


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_node_killed_between_calls_is_skipped_silently(
    start_process: StartProcess, clients: list[LLMClient], transport: str
) -> None:
    first, second = start_process(), start_process()
    client = client_for(clients, first.address(transport), second.address(transport))
    assert [client.stream("one"), client.stream("two")] == ["one", "two"]  # both pooled
    first.kill()
    restarts: list[str] = []
    assert client.stream("three", on_restart=restarts.append) == "three"
    assert restarts == []
    assert [n["state"] for n in client.health()["nodes"]] == ["down", "up"]
