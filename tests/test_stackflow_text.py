"""Text across a StackFlow unit manager, and the peer double's rules, with raw clients."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from meetingtasks.node.stackflow.text import as_received, carry, request_line, unpaired_braces
from tests.support.stackflow_peer import StackFlowPeer
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(60)

#: (what a caller sends, what a node that cuts raw substrings hands its model)
TEXTS = {
    "latin": ("Summarise the meeting, please.", "Summarise the meeting, please."),
    "chinese and emoji": ("会议纪要 发布 🎉👍🏽 ok", "会议纪要 发布 🎉👍🏽 ok"),
    "balanced braces": ("f(x) = {a, {b}} and {}", "f(x) = {a, {b}} and {}"),
    "a lone closing brace": ("end } here", "end \\u007d here"),
    "a lone opening brace": ("start { here", "start \\u007b here"),
    "braces the wrong way round": ("} then {", "\\u007d then \\u007b"),
    "one pair and one extra": ("{{x}", "\\u007b{x}"),
    "quotes": ('say "hi"', "say \\u0022hi\\u0022"),
    "backslashes, one at the end": ("C:\\dir\\", "C:\\u005cdir\\u005c"),
    "newline, tab, return": ("a\nb\tc\r", "a\\u000ab\\u0009c\\u000d"),
    "a lone surrogate": ("x\ud800y", "x\\ud800y"),
}


@pytest.mark.parametrize("name", TEXTS)
def test_each_character_class_is_carried_as_documented(name: str) -> None:
    text, received = TEXTS[name]
    assert as_received(text) == received
    assert json.loads(carry(text)) == text  # a JSON parser reads back the exact text


def test_unpaired_braces_are_those_without_a_partner() -> None:
    assert unpaired_braces("{a}") == set()
    assert unpaired_braces("}{") == {0, 1}
    assert unpaired_braces("{{x}") == {0}
    assert unpaired_braces("{x}}") == {3}


def test_a_request_line_is_one_json_line_reading_back_the_message() -> None:
    message = {"request_id": "r1", "data": {"delta": 'a "b" }', "index": 0, "finish": True}}
    line = request_line(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == message


@pytest.fixture
def peer() -> Iterator[StackFlowPeer]:
    double = StackFlowPeer()
    yield double
    double.stop()
    for client in RawClient.made:
        client.close()
    RawClient.made.clear()


class RawClient:
    """A client of the double that writes exactly the bytes it is given."""

    made: list[RawClient] = []

    def __init__(self, peer: StackFlowPeer) -> None:
        self.sock = socket.create_connection(("127.0.0.1", peer.port), 5)
        self.buffer = b""
        RawClient.made.append(self)

    def send(self, line: bytes) -> None:
        self.sock.sendall(line)

    def replies(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        self.sock.settimeout(timeout)
        while self.buffer.count(b"\n") < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the double closed the connection")
            self.buffer += chunk
        lines = self.buffer.split(b"\n")
        self.buffer = b"\n".join(lines[count:])
        return [json.loads(line) for line in lines[:count]]

    def silent(self, wait: float = 0.5) -> bool:
        self.sock.settimeout(wait)
        try:
            self.sock.recv(65536)  # a reply, or even a close, is not silence
        except TimeoutError:
            return True
        return False

    def setup(self, prompt: str = "", model: str = "echo") -> str:
        data = {"model": model, "response_format": "llm.utf-8.stream", "prompt": prompt}
        self.send(request_line({"request_id": "s", "work_id": "llm", "action": "setup",
                                "object": "llm.setup", "data": data}))  # fmt: skip
        (reply,) = self.replies(1)
        assert reply["error"]["code"] == 0, reply
        return str(reply["work_id"])

    def close(self) -> None:
        self.sock.close()


def inference(work_id: str, text: str) -> dict[str, Any]:
    data = {"delta": text, "index": 0, "finish": True}
    return {"request_id": "i", "work_id": work_id, "action": "inference",
            "object": "llm.utf-8.stream", "data": data}  # fmt: skip


@pytest.mark.parametrize("name", TEXTS)
def test_the_double_hands_its_model_the_documented_text_and_keeps_the_prompt_exact(
    peer: StackFlowPeer, name: str
) -> None:
    text, received = TEXTS[name]
    client = RawClient(peer)
    work_id = client.setup(prompt=text)
    assert peer.work_ids[work_id]["prompt"] == text  # setup data is parsed as JSON: exact
    client.send(request_line(inference(work_id, text)))
    chunks = client.replies(3)
    assert peer.model_inputs == [received]
    assert [c["data"]["delta"] for c in chunks] == [received, "hello", ""]
    assert list(chunks[0]) == sorted(chunks[0])  # keys sorted, as the real one sends them
    assert peer.crashed is None


def test_plain_json_breaks_the_double_as_it_breaks_the_real_peer(peer: StackFlowPeer) -> None:
    """Why ``carry`` exists: json.dumps leaves a lone brace, which aborts the unit manager."""
    client = RawClient(peer)
    work_id = client.setup()
    client.send(json.dumps(inference(work_id, "a } b")).encode() + b"\n")
    crash = wait_until(lambda: peer.crashed, "the double to abort", 5)
    assert "unbalanced braces" in crash


def test_the_double_holds_three_units_and_crashes_on_a_fourth(peer: StackFlowPeer) -> None:
    client = RawClient(peer)
    work_ids = [client.setup(prompt=str(n)) for n in range(3)]
    assert work_ids == ["llm.0", "llm.1", "llm.2"]
    client.close()
    # the double sees the close first (a request before it would be a concurrent one)
    wait_until(lambda: not peer.open_connections(), "the double to see the close", 5)
    again = RawClient(peer)  # units are not freed when a connection closes
    assert len(peer.work_ids) == 3
    again.send(request_line({"request_id": "s", "work_id": "llm", "action": "setup",
                             "data": {"model": "echo"}}))  # fmt: skip
    with pytest.raises(ConnectionError):
        again.replies(1)
    assert peer.crashed is not None and "SIGSEGV" in peer.crashed


@pytest.mark.parametrize(
    "message",
    [
        {"request_id": "x", "work_id": "llm.7", "action": "exit"},
        {"request_id": "x", "work_id": "llm.0", "action": "pause"},
        {"request_id": "x", "work_id": "llm", "action": "setup", "data": {"prompt": "p"}},
    ],
    ids=["exit of an unknown work_id", "pause", "setup without a model"],
)
def test_the_double_aborts_where_the_real_node_aborts(
    peer: StackFlowPeer, message: dict[str, Any]
) -> None:
    client = RawClient(peer)
    client.setup()
    client.send(request_line(message))
    with pytest.raises(ConnectionError):
        client.replies(1)
    assert peer.crashed is not None and "abort" in peer.crashed


def test_the_double_is_silent_on_an_unknown_work_id_or_action(peer: StackFlowPeer) -> None:
    client = RawClient(peer)
    client.send(request_line(inference("llm.42", "hello")))
    assert client.silent()
    client.send(request_line({"request_id": "x", "work_id": "llm", "action": "dance"}))
    assert client.silent()
    client.send(request_line({"request_id": "x", "work_id": "asr", "action": "setup",
                              "data": {"model": "m"}}))  # fmt: skip
    assert client.replies(1)[0]["error"]["code"] == -9  # a unit that does not exist
    assert peer.crashed is None


def test_the_double_crashes_on_requests_from_two_connections(peer: StackFlowPeer) -> None:
    first, second = RawClient(peer), RawClient(peer)
    first.setup()
    second.send(request_line({"request_id": "t", "work_id": "llm", "action": "taskinfo"}))
    with pytest.raises(ConnectionError):
        second.replies(1)
    assert peer.crashed is not None and "bad_alloc" in peer.crashed


def test_a_dead_node_takes_the_global_lock_and_wedges_when_it_returns(
    peer: StackFlowPeer,
) -> None:
    client = RawClient(peer)
    client.setup()
    peer.kill_node()
    client.send(request_line({"request_id": "v", "work_id": "vlm", "action": "setup",
                              "data": {"model": "m"}}))  # fmt: skip
    assert client.silent()  # normally an instant -9
    client.send(request_line({"request_id": "t", "work_id": "llm", "action": "taskinfo"}))
    assert client.silent()
    assert len(peer.behind_lock) == 1
    peer.restart_node()
    assert peer.node_state == "wedged"


def test_the_stream_index_is_one_counter_for_the_whole_node(peer: StackFlowPeer) -> None:
    client = RawClient(peer)
    first, second = client.setup("a"), client.setup("b")
    peer.token_delay = 0.2
    client.send(request_line(inference(first, "one")) + request_line(inference(second, "two")))
    chunks = client.replies(6)
    indices = [c["data"]["index"] for c in chunks if not c["data"]["finish"]]
    assert sorted(indices) != [0, 0, 1, 1]  # two streams share and interleave the counter
    assert peer.most_streams_at_once == 2
