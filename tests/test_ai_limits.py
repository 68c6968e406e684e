"""AI tasks in the ai queue's own pool (threads, no flags): time limits still end a task
``timeout`` and free its node's work unit, and hundreds of streams share one worker
without crossing."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from meetingtasks.base import headers
from meetingtasks.base.keys import get_keys
from meetingtasks.base.status import TaskStatus
from meetingtasks.dispatch import TaskDispatcher
from meetingtasks.llm.protocol import parse_response, taskinfo_request
from meetingtasks.llm.transport import connect, parse_address
from meetingtasks.store import get_redis
from tests.support.llm_nodes import NodeProcess

STREAMS = 200


def work_ids(address: str) -> list[str]:
    """The work units the node holds, by its own taskinfo."""
    connection = connect(parse_address(address), 5.0)
    try:
        connection.send(taskinfo_request("probe", "llm").encode(), 5.0)
        return list(parse_response(connection.recv(5.0)).data)
    finally:
        connection.close()


def wait_for(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def stalling_node(tmp_path: Path):
    node = NodeProcess(
        tmp_path / "node.log", "--backend", "tests.support.llm_nodes:StallingBackend"
    )
    yield node, tmp_path / "node.log"
    node.kill()


def test_a_node_that_stalls_mid_stream_ends_the_task_timeout_and_frees_its_unit(
    app, redis, start_worker, stalling_node
) -> None:
    node, node_log = stalling_node
    # One thread: the next task runs only if the timed-out one let go of it.
    start_worker(["ai"], pool=None, concurrency=1, env={"MEETINGTASKS_LLM_NODES": node.zmq_address})
    stalled = app.send_task(
        "ai.llm_chat", kwargs={"prompt": "stall one two three four five"}, timeout=2
    )

    with pytest.raises(SoftTimeLimitExceeded):
        stalled.get(timeout=60)
    assert TaskDispatcher().status(stalled.id).status is TaskStatus.TIMEOUT
    # Its work unit was exited as the task gave up: the node holds none.
    assert wait_for(lambda: work_ids(node.zmq_address) == [])

    after = app.send_task("ai.llm_chat", kwargs={"prompt": "the worker goes on"})
    assert after.get(timeout=60) == "the worker goes on"

    # When the model woke up, the node stopped its reply: nobody was reading it.
    assert wait_for(lambda: "stalled reply abandoned after 2 of 6 words" in node_log.read_text())
    assert "was exited mid-reply" in node_log.read_text()


def test_200_streams_through_one_worker_each_keep_their_own_deltas_in_order(
    app, redis, start_worker, tmp_path: Path
) -> None:
    node = NodeProcess(tmp_path / "node.log", "--token-delay", "0.05")
    try:
        worker = start_worker(
            ["ai"], pool=None, concurrency=None, env={"MEETINGTASKS_LLM_NODES": node.zmq_address}
        )
        frames: dict[str, list[dict]] = {}
        listening = threading.Event()
        done = threading.Event()
        sessions = [f"s-{n}" for n in range(STREAMS)]

        def listen() -> None:
            pubsub = get_redis().pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(*(get_keys().session_channel(s) for s in sessions))
            listening.set()
            while not done.is_set():
                message = pubsub.get_message(timeout=0.1)
                if message:
                    channel = message["channel"]
                    channel = channel.decode() if isinstance(channel, bytes) else channel
                    frames.setdefault(channel, []).append(json.loads(message["data"]))
            pubsub.close()

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        assert listening.wait(10)
        # Each prompt is its own: words that name the stream, so a crossed delta shows.
        prompts = {s: " ".join(f"{s}-w{i}" for i in range(8)) for s in sessions}
        results = {
            s: app.send_task(
                "ai.llm_chat",
                kwargs={"prompt": prompts[s]},
                headers={headers.SESSION: s, headers.REQUEST: f"r-{s}"},
            )
            for s in sessions
        }
        texts = {s: r.get(timeout=120) for s, r in results.items()}
        time.sleep(0.5)  # the last deltas were published before each result
        done.set()
        listener.join(10)

        for s in sessions:
            assert texts[s] == prompts[s]
            deltas = [f for f in frames[get_keys().session_channel(s)] if f["op"] == "delta"]
            assert [f["index"] for f in deltas] == list(range(8))
            assert "".join(f["delta"] for f in deltas) == prompts[s]
            assert {f["task_id"] for f in deltas} == {results[s].id}
        assert "concurrency: 500 (thread_pool)" in worker.log()  # one process, threads
    finally:
        node.kill()
