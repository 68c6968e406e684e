"""Inference nodes for the LLM tests: real ones in threads or processes, and fake ones.

- ``NodeProcess``: ``meetingtasks ai-node`` in its own process, to be killed with -9.
- ``FakeNode``: a ZMQ ROUTER or a TCP listener that answers each request with whatever
  bytes a test wants (garbage, wrong ids, error codes), to see what the client makes of it.
- ``StallingBackend``: a node backend (``--backend tests.support.llm_nodes:StallingBackend``)
  that goes silent mid-stream on a prompt starting with "stall".
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import zmq

from meetingtasks.node.backends import EchoBackend, Generation

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]

#: Given the request (a dict, or None if it was not JSON), the raw replies to send back.
Answer = Callable[[dict[str, Any] | None], list[bytes]]


class NodeProcess:
    """A reference node in a subprocess, serving ZMQ and TCP on free ports."""

    def __init__(self, log_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        command = [
            sys.executable, "-m", "meetingtasks", "ai-node",
            "--bind", "tcp://127.0.0.1:*", "--tcp-port", "0", *args,
        ]  # fmt: skip
        self._log = open(log_path, "ab")  # noqa: SIM115  (closed in kill)
        self.process = subprocess.Popen(
            command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
            stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.zmq_address, self.tcp_address = self._wait_ready(log_path)

    def _wait_ready(self, log_path: Path, timeout: float = 30.0) -> tuple[str, str]:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([self.process.stdout], [], [], 0.1)[0]:
                line = self.process.stdout.readline().decode()
                if line.startswith("ready "):
                    zmq_address, tcp_address = line.split()[1:3]
                    return zmq_address, tcp_address
            if self.process.poll() is not None:
                break
        self.kill()
        raise RuntimeError(f"inference node did not start:\n{log_path.read_text()}")

    def address(self, transport: str) -> str:
        return self.zmq_address if transport == "zmq" else self.tcp_address

    def kill(self) -> None:
        """kill -9, as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()
        self._log.close()


class FakeNode:
    """A node that answers as ``answer`` says, over ZMQ ("zmq") or newline TCP ("tcp")."""

    def __init__(self, transport: str, answer: Answer) -> None:
        self.transport = transport
        self.answer = answer
        self.requests: list[dict[str, Any] | None] = []
        self._stop = threading.Event()
        if transport == "zmq":
            self._context = zmq.Context()
            self._router = self._context.socket(zmq.ROUTER)
            self._router.linger = 0
            self._router.bind("tcp://127.0.0.1:*")
            self.address = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
            target: Callable[[], None] = self._serve_zmq
        else:
            self._listener = socket.create_server(("127.0.0.1", 0))
            self._listener.settimeout(0.1)
            self.address = f"tcp+json://127.0.0.1:{self._listener.getsockname()[1]}"
            target = self._serve_tcp
        self._thread = threading.Thread(target=target, daemon=True)
        self._thread.start()

    def _replies(self, raw: bytes) -> list[bytes]:
        try:
            request = json.loads(raw)
        except ValueError:
            request = None
        self.requests.append(request)
        return self.answer(request)

    def _serve_zmq(self) -> None:
        while not self._stop.is_set():
            if self._router.poll(100):
                identity, raw = self._router.recv_multipart()
                for reply in self._replies(raw):
                    self._router.send_multipart([identity, reply])
        self._router.close()

    def _serve_tcp(self) -> None:
        connections: list[socket.socket] = []
        with self._listener:
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    connection, _ = self._listener.accept()
                    connections.append(connection)
                    threading.Thread(
                        target=self._serve_connection, args=(connection,), daemon=True
                    ).start()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def _serve_connection(self, connection: socket.socket) -> None:
        with connection, connection.makefile("rb") as lines, contextlib.suppress(OSError):
            for line in lines:
                for reply in self._replies(line):
                    connection.sendall(reply + b"\n")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self.transport == "zmq":
            self._context.term()


class StallingBackend(EchoBackend):
    """The echo double, except that a prompt starting with "stall" gets its first word and
    then nothing for ``STALL`` seconds, as a hung model would. Whether the rest of such a
    reply was generated or abandoned goes to the node's log."""

    STALL = 6.0

    def generate(self, request: Generation) -> Iterator[str]:
        if not request.text.startswith("stall"):
            yield from super().generate(request)
            return
        words = request.text.split()
        sent = 0
        try:
            for sent, word in enumerate(words, 1):
                yield word if sent == 1 else f" {word}"
                if sent == 1:
                    time.sleep(self.STALL)
        finally:
            state = "finished" if sent == len(words) else "abandoned"
            log.warning("stalled reply %s after %d of %d words", state, sent, len(words))


def reply(request: dict[str, Any] | None, **fields: Any) -> bytes:
    """A well-formed reply to ``request``, with ``fields`` overriding its parts."""
    request = request or {}
    message = {
        "request_id": request.get("request_id", "0"),
        "work_id": request.get("work_id", "sys"),
        "created": int(time.time()),
        "object": "None",
        "data": "None",
        "error": {"code": 0, "message": ""},
    }
    if request.get("action") == "setup":
        message["work_id"] = f"{request['work_id']}.1000"
    message.update(fields)
    return json.dumps(message).encode()


def chunk(request: dict[str, Any] | None, index: int, delta: str, finish: bool = False) -> bytes:
    data = {"index": index, "delta": delta, "finish": finish}
    return reply(request, object="llm.utf-8.stream", data=data)
