"""A test double of a StackFlow unit manager with Edge-LLM-Infra's echo node behind it.

It behaves as the real ones were seen to (unit_manager plus node/test at the HEAD of
github.com/wwbing/Edge-LLM-Infra), where a bridge could break them:

- framing: the TCP stream is cut into messages by counting ``{`` and ``}``, in strings
  too; a count below zero aborts the unit manager (``runtime_error``);
- raw substrings: the node cuts ``delta``, ``index`` and ``finish`` out of the line as
  written (StackFlow's ``sample_json_str_get``, ported below), escapes included; the
  setup's ``data`` object is cut the same way, then parsed as JSON;
- silence: an inference on an unknown work_id, and an unknown action, get no reply;
- aborts: ``pause``, an exit of an unknown work_id, a setup without a model, a bad or
  missing input index, an empty input;
- units: the node holds 3 work units, keeps them when a connection closes, and crashes
  on a 4th setup; work_ids ``llm.0, llm.1 …`` are counted across node restarts;
- concurrency: a request on one connection while another connection that sent requests
  is still open crashes it (``bad_alloc``);
- growth: the unit manager reserves its input buffer anew on each read of a connection
  (``zmq_bus.cpp``, ``select_json_str``), so the read after ``max_reads`` on one
  connection (28 were seen) crashes it (``bad_alloc``); None turns the limit off;
- the stream's ``index`` is one counter for the whole node, reset at each finish;
- a dead node whose socket remains: a request for it takes a global lock and gets no
  reply, every later request queues behind it, and when the node returns the queued
  request wedges it; a reply to a connection that was closed wedges the node too;
- replies have sorted keys and ``data: ""`` when they carry nothing.

"Crashing" closes every connection and the listener, and ``crashed`` says why.
The echo node answers an input with three chunks: the input as received, "hello", and
an empty finishing chunk, as node/test does.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

STREAM = "llm.utf-8.stream"


def sample_json_str_get(json_str: str, json_key: str) -> str:
    """StackFlow's substring cut of a value, as written (StackFlowUtil.cpp)."""
    find_key = f'"{json_key}"'
    start = json_str.find(find_key)
    if start < 0:
        return ""
    value: list[str] = []
    status, last, depth = 0, "", 0
    for char in json_str[start + len(find_key) :]:
        if status == 0:
            if char == '"':
                status = 100
            elif char == "{":
                value.append(char)
                depth, status = 1, 10
            elif char == ":":
                depth = 1
            elif char in ",}":
                depth, status = 0, -1
            elif char != " " and depth:
                value.append(char)
        elif status == 10:
            value.append(char)
            depth += char == "{"
            depth -= char == "}"
            if depth == 0:
                status = -1
        elif status == 100:
            if char == '"' and last != "\\":
                depth, status = 0, -1
            else:
                value.append(char)
        last = char
    return "" if depth else "".join(value)


@dataclass
class _Connection:
    sock: socket.socket
    name: str
    used: bool = False
    open: bool = True
    framing: list[str] = field(default_factory=list)
    depth: int = 0
    last: str = ""
    reads: int = 0


class StackFlowPeer:
    def __init__(
        self,
        *,
        units: int = 3,
        token_delay: float = 0.0,
        port: int = 0,
        max_reads: int | None = 28,
    ) -> None:
        self.max_units = units
        self.max_reads = max_reads
        self.token_delay = token_delay
        self.crashed: str | None = None
        #: The node's live work units: work_id -> setup data (as the node parsed it).
        self.work_ids: dict[str, dict[str, Any]] = {}
        #: "up", "dead" (its socket file remains) or "wedged" (answers nothing, for good).
        self.node_state = "up"
        #: Every message the unit manager cut out of its input, as (connection, text).
        self.received: list[tuple[str, str]] = []
        #: What the model was handed for each inference, as the node cut it.
        self.model_inputs: list[str] = []
        #: Requests that got no reply because the global lock was held.
        self.behind_lock: list[str] = []
        self.streams_at_once = 0
        self.most_streams_at_once = 0
        self._numbers = itertools.count(0)
        self._index = 0
        self._lock = threading.RLock()
        self._global_lock_holder: str | None = None
        self._connections: list[_Connection] = []
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port = self._listener.getsockname()[1]
        self._names = itertools.count(1)
        threading.Thread(target=self._accept, daemon=True).start()

    def open_connections(self) -> int:
        """Connections the unit manager has not seen closed yet."""
        with self._lock:
            return sum(connection.open for connection in self._connections)

    def reads_per_connection(self) -> dict[str, int]:
        """How many times the unit manager read each connection, by its name."""
        with self._lock:
            return {connection.name: connection.reads for connection in self._connections}

    @property
    def address(self) -> str:
        return f"tcp+json://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._close_everything()

    def kill_node(self) -> None:
        """The node dies and its socket file stays: the next request for it takes the lock."""
        with self._lock:
            self.node_state = "dead"

    def restart_node(self) -> None:
        """The node starts again with no units; a request queued meanwhile wedges it."""
        with self._lock:
            self.work_ids.clear()
            self._index = 0
            self.node_state = "wedged" if self._global_lock_holder else "up"

    # -- the unit manager ---------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                sock, _peer = self._listener.accept()
            except OSError:
                return
            connection = _Connection(sock, f"c{next(self._names)}")
            with self._lock:
                if self.crashed:
                    sock.close()
                    return
                self._connections.append(connection)
            threading.Thread(target=self._read, args=(connection,), daemon=True).start()

    def _read(self, connection: _Connection) -> None:
        try:
            while chunk := connection.sock.recv(65536):
                connection.reads += 1
                if self.max_reads is not None and connection.reads > self.max_reads:
                    self._crash(
                        f"unit manager: std::bad_alloc, its input buffer reserved anew on "
                        f"each of {connection.reads} reads of one connection"
                    )
                for char in chunk.decode("utf-8", errors="replace"):
                    self._frame(connection, char)
        except (OSError, _Crash):
            pass
        finally:
            with self._lock:
                connection.open = False
            with contextlib.suppress(OSError):
                connection.sock.close()

    def _frame(self, connection: _Connection, char: str) -> None:
        """tcp_comm's select_json_str: messages end where the brace count is back to 0."""
        connection.framing.append(char)
        if char == "{" and connection.last != "\\":
            connection.depth += 1
        if char == "}" and connection.last != "\\":
            connection.depth -= 1
        connection.last = char
        if connection.depth == 0:
            text = "".join(connection.framing)
            connection.framing.clear()
            if text.startswith("{") and text.endswith("}"):
                self._on_message(connection, text)
        if connection.depth < 0:
            self._crash("unit manager: runtime_error, unbalanced braces in its input")

    def _on_message(self, connection: _Connection, text: str) -> None:
        with self._lock:
            self.received.append((connection.name, text))
            others = [c for c in self._connections if c is not connection and c.open and c.used]
            connection.used = True
            if others:
                self._crash("unit manager: std::bad_alloc, requests on two connections at once")
            if self._global_lock_holder is not None:
                self.behind_lock.append(text)
                return
        try:
            message = json.loads(text)
        except ValueError:
            self._reply(connection, "0", "sys", error=(-2, "json format error"))
            return
        request_id, work_id, action = (message.get(k) for k in ("request_id", "work_id", "action"))
        if not all(isinstance(v, str) for v in (request_id, work_id, action)):
            self._reply(connection, "0", "sys", error=(-2, "json format error"))
            return
        with self._lock:
            if self.node_state == "dead" and action != "inference":
                self._global_lock_holder = text  # its remote call waits for a dead node
                return
        if work_id.partition(".")[0] != "llm":
            self._reply(connection, request_id, work_id, error=(-9, "unit call false"))
            return
        with self._lock:
            if self.node_state != "up":
                return
        handler = {
            "setup": self._setup,
            "inference": self._inference,
            "taskinfo": self._taskinfo,
            "exit": self._exit,
            "pause": self._pause,
        }.get(action)
        if handler is not None:  # an unknown action gets no reply
            handler(connection, request_id, work_id, text)

    # -- the echo node ------------------------------------------------------------

    def _setup(self, connection: _Connection, request_id: str, work_id: str, text: str) -> None:
        try:
            data = json.loads(sample_json_str_get(text, "data"))
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("model"), str):
            self._crash("node: abort, setup without a model (an error body passed as a string)")
        with self._lock:
            if len(self.work_ids) >= self.max_units:
                self._crash(f"node: SIGSEGV, setup of a work unit beyond its {self.max_units}")
            new_id = f"llm.{next(self._numbers)}"
            self.work_ids[new_id] = data
        self._reply(connection, request_id, new_id)

    def _inference(self, connection: _Connection, request_id: str, work_id: str, text: str) -> None:
        with self._lock:
            if work_id not in self.work_ids:
                return  # no reply at all
        raw_index = sample_json_str_get(text, "index")
        finish = sample_json_str_get(text, "finish")
        delta = sample_json_str_get(text, "delta")
        if raw_index != "0" or "f" in finish:
            self._crash(f"node: abort, input index {raw_index!r} finish {finish!r}")
        if not delta or delta == "None":
            self._crash("node: abort, empty input (an error body passed as a string)")
        with self._lock:
            self.model_inputs.append(delta)
            self.streams_at_once += 1
            self.most_streams_at_once = max(self.most_streams_at_once, self.streams_at_once)
        threading.Thread(
            target=self._stream, args=(connection, request_id, work_id, delta), daemon=True
        ).start()

    def _stream(self, connection: _Connection, request_id: str, work_id: str, text: str) -> None:
        try:
            for delta, finish in ((text, False), ("hello", False), ("", True)):
                time.sleep(self.token_delay)
                with self._lock:
                    if self.node_state != "up" or work_id not in self.work_ids:
                        return
                    data = {"delta": delta, "finish": finish, "index": self._index}
                    self._index = 0 if finish else self._index + 1
                self._reply(connection, request_id, work_id, object_=STREAM, data=data)
        finally:
            with self._lock:
                self.streams_at_once -= 1

    def _taskinfo(self, connection: _Connection, request_id: str, work_id: str, text: str) -> None:
        with self._lock:
            listed = list(self.work_ids)
            known = work_id in self.work_ids
        if work_id == "llm":
            self._reply(connection, request_id, work_id, object_="llm.tasklist", data=listed)
        elif not known:
            self._reply(connection, request_id, work_id, error=(-6, "Unit Does Not Exist"))
        else:
            info = {"model": self.work_ids[work_id]["model"], "response_format": STREAM}
            self._reply(connection, request_id, work_id, object_="llm.taskinfo", data=info)

    def _exit(self, connection: _Connection, request_id: str, work_id: str, text: str) -> None:
        with self._lock:
            if work_id not in self.work_ids:
                self._crash(f"node: abort, exit of unknown {work_id} (error body as a string)")
            del self.work_ids[work_id]
        self._reply(connection, request_id, work_id)

    def _pause(self, connection: _Connection, request_id: str, work_id: str, text: str) -> None:
        self._crash("node: abort, pause (an error body passed as a string)")

    # -- replies and crashes ------------------------------------------------------

    def _reply(
        self,
        connection: _Connection,
        request_id: str,
        work_id: str,
        *,
        object_: str = "None",
        data: Any = "",
        error: tuple[int, str] = (0, ""),
    ) -> None:
        message = {
            "created": int(time.time()),
            "data": data,
            "error": {"code": error[0], "message": error[1]},
            "object": object_,
            "request_id": request_id,
            "work_id": work_id,
        }
        line = json.dumps(message, ensure_ascii=False, sort_keys=True) + "\n"
        with self._lock:
            if not connection.open:
                self.node_state = "wedged"  # a reply to a closed session blocks the node
                return
            try:
                connection.sock.sendall(line.encode())
            except OSError:
                self.node_state = "wedged"

    def _crash(self, why: str) -> None:
        with self._lock:
            if self.crashed is None:
                self.crashed = why
        self._close_everything()
        raise _Crash(why)

    def _close_everything(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept(), frees the port
        with contextlib.suppress(OSError):
            self._listener.close()


class _Crash(Exception):
    """Raised where the double crashed, to end the thread that made it crash."""
