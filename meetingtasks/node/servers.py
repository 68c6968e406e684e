"""The reference node's two front ends; they move bytes between sockets and ``NodeCore``.

- ``ZmqFrontEnd``: a ROUTER socket, one JSON object per frame. One thread owns the ROUTER
  (ZMQ sockets are not thread-safe) and hands each request to a worker pool; workers send
  their replies back through that thread over an inproc PULL socket, each worker with a
  PUSH socket of its own. So many clients stream at once.
- ``TcpFrontEnd``: newline-delimited JSON, as StackFlow's unit manager serves on port
  10001; a thread per connection, the requests of one connection answered in order.

Both have the same lifecycle: ``start()`` binds (so a busy port fails there, with a clear
error) and starts their threads; ``stop()`` closes everything and joins them.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import zmq

from meetingtasks.errors import ConfigurationError
from meetingtasks.llm.protocol import MAX_MESSAGE_BYTES, ErrorCode, error_response
from meetingtasks.node.core import NodeCore

log = logging.getLogger(__name__)

#: How often the serving loops look at their stop flag, in seconds.
_POLL_INTERVAL = 0.1


class ZmqFrontEnd:
    def __init__(self, core: NodeCore, bind: str, workers: int) -> None:
        self.core = core
        self.bind = bind
        self.endpoint = ""
        self._context = zmq.Context()
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="llm-node-zmq")
        self._inbox_url = f"inproc://llm-node-replies-{id(self)}"
        self._local = threading.local()
        self._pushes: list[zmq.Socket[bytes]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="llm-node-zmq", daemon=True)

    def start(self) -> str:
        """Bind and serve; the bound endpoint (a ``*`` port resolved) is returned."""
        self._router = self._context.socket(zmq.ROUTER)
        self._router.linger = 0
        self._router.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        self._inbox = self._context.socket(zmq.PULL)
        self._inbox.linger = 0
        try:
            self._router.bind(self.bind)
            self._inbox.bind(self._inbox_url)
        except zmq.ZMQError as exc:
            self._router.close()
            self._inbox.close()
            self._context.term()
            raise ConfigurationError(
                f"the inference node cannot bind {self.bind!r} ({exc}): is another node "
                "running there? Pick another --bind, e.g. tcp://127.0.0.1:5561"
            ) from exc
        self.endpoint = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        self._thread.start()
        return self.endpoint

    def stop(self, timeout: float) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for push in self._pushes:
                push.close(linger=0)
        self._stopping.set()
        self._thread.join(timeout)
        self._context.destroy(linger=0)

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._inbox, zmq.POLLIN)
        while not self._stopping.is_set():
            ready = dict(poller.poll(int(_POLL_INTERVAL * 1000)))
            while self._inbox in ready and self._inbox.poll(0):
                self._router.send_multipart(self._inbox.recv_multipart())
            while self._router in ready and self._router.poll(0):
                identity, *frames = self._router.recv_multipart()
                raw = frames[0] if len(frames) == 1 else b"<not one frame>"
                try:
                    self._executor.submit(self._serve, identity, raw)
                except RuntimeError:  # stopping: requests that come now go unanswered
                    log.info("llm node stopping: a request came too late to be answered")
        self._router.close(linger=0)
        self._inbox.close(linger=0)

    def _serve(self, identity: bytes, raw: bytes) -> None:
        try:
            push = self._push_socket()
            for response in self.core.handle(raw, owner=f"zmq:{identity.hex()}"):
                push.send_multipart([identity, response.encode()])
        except Exception:  # one request's failure must not stop the node
            log.exception("llm node: could not answer a ZMQ request")

    def _push_socket(self) -> zmq.Socket[bytes]:
        push: zmq.Socket[bytes] | None = getattr(self._local, "push", None)
        if push is None:
            push = self._context.socket(zmq.PUSH)
            push.linger = 0
            push.connect(self._inbox_url)
            self._local.push = push
            with self._lock:
                self._pushes.append(push)
        return push


class TcpFrontEnd:
    def __init__(self, core: NodeCore, host: str, port: int) -> None:
        self.core = core
        self.host, self.port = host, port
        self._connections: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="llm-node-tcp", daemon=True)

    def start(self) -> int:
        """Listen and serve; the bound port (port 0 resolved) is returned."""
        try:
            self._listener = socket.create_server((self.host, self.port))
        except OSError as exc:
            raise ConfigurationError(
                f"the inference node cannot listen on {self.host}:{self.port} ({exc}): "
                "pick another --tcp-port"
            ) from exc
        self._listener.settimeout(_POLL_INTERVAL)
        self.port = self._listener.getsockname()[1]
        self._thread.start()
        return self.port

    def stop(self, timeout: float) -> None:
        self._stopping.set()
        self._thread.join(timeout)
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):  # already gone
                    connection.shutdown(socket.SHUT_RDWR)
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)

    def _accept_loop(self) -> None:
        with self._listener:
            while not self._stopping.is_set():
                try:
                    connection, peer = self._listener.accept()
                except TimeoutError:
                    continue
                connection.settimeout(None)
                thread = threading.Thread(
                    target=self._serve, args=(connection, f"tcp:{peer[0]}:{peer[1]}"), daemon=True
                )
                with self._lock:
                    self._connections.add(connection)
                    self._threads = [t for t in self._threads if t.is_alive()] + [thread]
                thread.start()

    def _serve(self, connection: socket.socket, owner: str) -> None:
        buffer = bytearray()
        try:
            while chunk := connection.recv(65536):
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end]).strip()
                    del buffer[: end + 1]
                    for response in self.core.handle(line, owner) if line else ():
                        connection.sendall(response.encode() + b"\n")
                if len(buffer) > MAX_MESSAGE_BYTES:
                    refusal = error_response(
                        "0", "sys", ErrorCode.JSON_FORMAT, "json format error: no newline"
                    )
                    connection.sendall(refusal.encode() + b"\n")
                    break
        except OSError:
            pass  # the client went away or the node is stopping
        finally:
            self.core.release_owner(owner)
            with self._lock:
                self._connections.discard(connection)
            connection.close()
