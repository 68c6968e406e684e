"""Fan-out at scale on real gateway processes: a client that stops reading is cut off at
its cap without holding the others back, and resumes its session; frames keep their order
under a storm of events; gateway processes share one port (SO_REUSEPORT, ``--workers``)
and a session resumes across them."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tests.support.gateways import Client, Frame, GatewayProcess, publish_notes, subscribe, token
from tests.support.waiting import wait_until

#: The smallest unsent-bytes cap the settings allow.
CAP = 1 << 16


class Reader:
    """A client subscribed to meeting m1, whose frames are then read on a thread as fast
    as they come."""

    def __init__(self, client: Client) -> None:
        self.client = client
        subscribe(client)
        self.frames: list[Frame] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while True:
                try:
                    self.frames.append(self.client.recv(timeout=0.5))
                except TimeoutError:
                    continue
        except ConnectionClosed:
            return

    def events(self) -> list[int]:
        return [f["event"]["payload"]["n"] for f in self.frames if f["op"] == "event"]

    def close(self) -> None:
        self.client.close()
        self._thread.join(10)


def completed(client: Client, task_id: str) -> Frame:
    """The task's ``status`` answer once it completed (asked again until then)."""

    def answer() -> Frame | None:
        status = client.request({"op": "status", "task_id": task_id, "request_id": "q"})
        return status if status["status"] == "completed" else None

    result: Frame = wait_until(answer, f"task {task_id} completed")
    return result


def refusals(gateway: GatewayProcess) -> dict[str, int]:
    return dict(gateway.http("GET", "/stats")[1]["gateway"]["refusals"])


@pytest.fixture
def gateway(redis, tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path / "gateway.log", gateway_max_unsent_bytes=CAP)
    yield process
    process.stop()


def test_a_client_that_stops_reading_is_cut_off_and_resumes_its_session(
    app, start_worker, gateway
) -> None:
    start_worker(["user"])
    alice_token = token("alice", ("m1",))
    slow = Client(gateway.ws_url(alice_token))
    subscribe(slow)
    nap = slow.request({"op": "submit", "request_id": "nap", "type": "sleep",
                        "data": {"seconds": 0.5}})  # fmt: skip
    reader = Reader(Client(gateway.ws_url(token("bob", ("m1",)))))
    # `slow` reads nothing from here on: its client library stops taking from the socket
    # once a few frames wait, then the kernel's buffers fill, then the gateway's cap.
    count = 400
    publish_notes(count, pad="p" * 60_000)  # 24 MB to each client

    wait_until(lambda: len(reader.events()) == count, "the reading client's events", 120)
    assert reader.events() == list(range(count))  # all of them, in order, meanwhile
    wait_until(lambda: refusals(gateway).get("too_slow") == 1, "the slow client cut off", 60)
    assert gateway.alive()

    # It reads again: what its socket held, then the close, which the JS client takes
    # as "resume" (4429), as any code but 4401/4403.
    code, reason = slow.closed(timeout=30)
    assert code == 4429 and reason is not None and reason.startswith("too_slow"), (code, reason)
    got = [f["event"]["payload"]["n"] for f in slow.frames if f["op"] == "event"]
    assert got == list(range(len(got))) and len(got) < count  # a prefix, in order

    resumed = Client(gateway.ws_url(alice_token, session=slow.session_id))
    assert resumed.session is not None and resumed.session["resumed"] is True
    assert [t["task_id"] for t in resumed.session["tasks"]] == [nap["task_id"]]
    assert completed(resumed, nap["task_id"])["result"] == "slept"
    resumed.close()
    reader.close()


def test_each_client_gets_its_frames_in_order_under_a_broadcast_storm(
    app, start_worker, gateway
) -> None:
    start_worker(["default"])
    readers = [Reader(Client(gateway.ws_url(token(user, ("m1",))))) for user in ("a", "b", "c")]
    count = 3000
    storm = threading.Thread(target=publish_notes, args=(count,))
    storm.start()
    for n in range(20):  # the sessions' own frames go out between the events
        readers[n % 3].client.send(
            {"op": "submit", "request_id": f"e{n}", "type": "echo", "data": {"value": n}}
        )
    storm.join()
    for reader in readers:
        wait_until(lambda r=reader: len(r.events()) == count, "every event", 60)
        assert reader.events() == list(range(count))
    for n in range(20):
        frames = readers[n % 3].frames
        wait_until(
            lambda fs=frames, n=n: any(
                f["op"] == "result" and f.get("request_id") == f"e{n}" for f in fs
            ),
            f"the result of e{n}",
        )
        ops = [f["op"] for f in frames if f.get("request_id") == f"e{n}"]
        assert ops == ["accepted", "progress", "result"], ops  # a task's frames in order too
    for reader in readers:
        reader.close()


def gateway_pids(gateway: GatewayProcess, requests: int = 30) -> set[int]:
    """The processes that answered ``requests`` new connections to the port (one that
    a killed process had queued is reset: it does not count)."""
    pids = set()
    for _ in range(requests):
        with contextlib.suppress(OSError):
            pids.add(gateway.http("GET", "/stats")[1]["gateway"]["process"])
    return pids


def test_two_gateway_processes_share_a_port_and_resume_one_session(
    app, start_worker, redis, tmp_path: Path
) -> None:
    start_worker(["user"])
    first = GatewayProcess(tmp_path / "first.log", reuse_port=True)
    second = None
    try:
        alice = token("alice")
        client = Client(first.ws_url(alice))  # only the first listens yet
        nap = client.request({"op": "submit", "request_id": "nap", "type": "sleep",
                              "data": {"seconds": 1.0}})  # fmt: skip
        client.close()

        second = GatewayProcess(tmp_path / "second.log", port=first.port, reuse_port=True)
        # Its health check may have been answered by the first: both answer, in time.
        wait_until(lambda: len(gateway_pids(second)) == 2, "connections spread over both")
        first.stop()

        resumed = Client(second.ws_url(alice, session=client.session_id))
        assert resumed.session is not None and resumed.session["resumed"] is True
        assert gateway_pids(second, 5) == {second.process.pid}
        assert completed(resumed, nap["task_id"])["result"] == "slept"
        resumed.close()
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_a_gateway_with_workers_replaces_a_process_that_dies(redis, tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path / "gateway.log", gateway_workers=2)
    try:
        pids = wait_until(lambda: len(p := gateway_pids(gateway)) == 2 and p, "two processes")
        assert gateway.process.pid not in pids  # the supervisor serves nothing itself
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(p := gateway_pids(gateway)) == 2 and victim not in p,
            "a process in place of the killed one",
        )
        client = Client(gateway.ws_url(token("alice")))
        assert client.session is not None
        client.close()
    finally:
        gateway.stop()
    assert gateway.process.returncode == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids - {victim})  # SIGTERM reached them all


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
