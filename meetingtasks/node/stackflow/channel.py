"""The bridge's one connection to a StackFlow unit manager: requests sent, each reply
routed to the request it answers, and the connection renewed before the peer breaks.

- one connection, never closed while a reply is due; a reply abandoned by its caller is
  still read to its end (``finish_quietly``);
- a new connection after ``recycle_after`` requests (20), at a moment when no reply is
  due: the unit manager reserves its input buffer anew on every read (``zmq_bus.cpp``,
  ``select_json_str``), at least doubling it, and aborts with ``std::bad_alloc`` after
  about 28 reads on one connection. The old connection is half-closed and its end
  awaited before the new one sends: two open connections crash the peer too;
- the peer's state as last seen (up, down, stuck, unknown), for ``health()``.

Each new connection calls ``on_connect`` before any request of a call goes out: the
bridge reconciles its work units there (``units.py``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from meetingtasks.errors import MeetingTasksError, NodeUnavailable
from meetingtasks.llm.protocol import ErrorCode, Response, parse_response
from meetingtasks.llm.transport import Address, NodeSilent, TcpConnection
from meetingtasks.node.backends import BackendError
from meetingtasks.node.stackflow.text import request_line

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sent:
    """A request on the wire, not yet answered to its end."""

    action: str
    work_id: str
    at: float

    def ended_by(self, response: Response) -> bool:
        """Whether ``response`` is the last reply this request gets."""
        return self.action != "inference" or not response.ok or chunk(response)[1]


class Silent(MeetingTasksError):
    """The peer sent nothing for a request within the wait."""


class Channel:
    def __init__(
        self,
        address: Address,
        *,
        read_timeout: float,
        connect_timeout: float,
        recycle_after: int,
        on_connect: Callable[[], None] = lambda: None,
    ) -> None:
        self.address = address
        self.read_timeout, self.connect_timeout = read_timeout, connect_timeout
        self.recycle_after = recycle_after
        self.on_connect = on_connect
        self._connection: TcpConnection | None = None
        #: Requests sent on the current connection; connections opened so far.
        self._sent_here = 0
        self.connections = 0
        #: Requests sent and not answered to their end, by request_id.
        self.unanswered: dict[str, Sent] = {}
        #: Replies to the requests the current call reads, by request_id: a reply that
        #: comes while the call waits for another request is kept for it here.
        self._waited: dict[str, list[Response]] = {}
        self.state = "unknown"
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        return self._connection is not None

    def connect(self) -> None:
        try:
            self._connection = TcpConnection(self.address, self.connect_timeout)
        except NodeUnavailable as exc:
            raise self.down(str(exc)) from exc
        self._sent_here = 0
        self.connections += 1
        self.on_connect()
        self.state = "up"

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # -- requests and replies -------------------------------------------------------

    def exchange(self, message: Mapping[str, Any]) -> Response:
        """One request answered by one reply (setup, taskinfo, exit)."""
        request_id = self.send(message)
        try:
            response = self.reply(request_id, time.monotonic() + self.read_timeout)
        except Silent:
            self.state = "stuck"  # it stays unanswered: the bridge sends nothing more
            self._waited.pop(request_id, None)
            raise BackendError(
                f"the StackFlow peer {self.address.url} did not answer a {message['action']} "
                f"within {self.read_timeout:.3g}s: its node is down or stuck",
                ErrorCode.NOT_AVAILABLE,
            ) from None
        self.answered(request_id)
        if not response.ok:
            raise self.refusal(response, str(message["action"]))
        return response

    def send(self, message: Mapping[str, Any]) -> str:
        """Send a request whose replies this call reads (``reply``), on a new
        connection once this one carried ``recycle_after`` and no reply is due."""
        if self._sent_here >= self.recycle_after and not self.unanswered:
            self._recycle()
        assert self._connection is not None
        self._sent_here += 1
        request_id = uuid.uuid4().hex[:16]
        line = request_line({"request_id": request_id, **message})
        try:
            self._connection.send(line[:-1], self.read_timeout)  # send() adds the newline
        except NodeUnavailable as exc:
            raise self.lost(exc) from exc
        action, work_id = str(message["action"]), str(message["work_id"])
        self.unanswered[request_id] = Sent(action, work_id, time.monotonic())
        self._waited[request_id] = []
        return request_id

    def answered(self, request_id: str) -> None:
        """The call is done with ``request_id`` (answered, or never will be)."""
        self.unanswered.pop(request_id, None)
        self._waited.pop(request_id, None)

    def forget_waits(self, request_id: str) -> None:
        """Replies to ``request_id`` that come from now on are dropped."""
        self._waited.pop(request_id, None)

    def reply(self, request_id: str, deadline: float) -> Response:
        """The next reply to ``request_id``, or Silent at ``deadline``."""
        while True:
            waiting = self._waited.get(request_id)
            if waiting:
                return waiting.pop(0)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Silent
            self.collect(remaining, until=request_id)

    def collect(self, timeout: float, until: str | None = None) -> None:
        """Read replies for up to ``timeout`` seconds (0: only those already here).

        Stops early once a reply to ``until`` came, or (without ``until``) once nothing
        is unanswered. Each reply goes to the request it answers, if the call reads it;
        late replies to requests given up on are dropped, a final one marks its request
        answered."""
        assert self._connection is not None
        deadline = time.monotonic() + timeout
        while True:
            if timeout == 0 and self._connection.alive():
                return  # open, and nothing waiting to be read
            try:
                raw = self._connection.recv(max(deadline - time.monotonic(), 0.001))
                response = parse_response(raw, self.address.url)
            except NodeSilent:
                return
            except MeetingTasksError as exc:  # lost, or garbage: out of step for good
                raise self.lost(exc) from exc
            request_id = self._owner(response)
            if request_id is None:
                continue
            if self.unanswered[request_id].ended_by(response):
                del self.unanswered[request_id]
            if request_id in self._waited:
                self._waited[request_id].append(response)
            if request_id == until or (until is None and not self.unanswered):
                return

    def finish_quietly(self, request_id: str, deadline: float) -> None:
        """Read an abandoned reply to its end, so the next request starts in step."""
        self._waited.pop(request_id, None)
        try:
            while request_id in self.unanswered and time.monotonic() < deadline:
                self.collect(deadline - time.monotonic())
        except BackendError:
            pass  # the connection is gone: the next call reconnects

    def _owner(self, response: Response) -> str | None:
        if response.request_id in self.unanswered:
            return response.request_id
        if response.request_id == "0" and self.unanswered:  # the peer could not parse it
            return list(self.unanswered)[-1]
        log.debug("dropping a late StackFlow reply to %s", response.request_id)
        return None

    # -- the connection's end -------------------------------------------------------

    def _recycle(self) -> None:
        """Close the connection, its end seen by the peer, and open the next one."""
        assert self._connection is not None
        log.debug("recycling the StackFlow connection after %d requests", self._sent_here)
        self._connection.close_and_wait(self.connect_timeout)
        self._connection = None
        self.connect()

    def lost(self, error: Exception) -> BackendError:
        """The connection broke: the unit manager restarted or crashed. Its units are
        checked against ``taskinfo`` at the next connection."""
        self.close()
        self.unanswered.clear()
        self._waited.clear()
        return self.down(f"lost the connection to the StackFlow peer: {error}")

    def down(self, why: str) -> BackendError:
        self.state, self.last_error = "down", why
        return BackendError(why, ErrorCode.NOT_AVAILABLE)

    def refusal(self, response: Response, action: str) -> BackendError:
        self.last_error = f"{action}: error {response.code} {response.message}"
        return BackendError(
            f"the StackFlow peer refused {action}: error {response.code} "
            f"({response.message or 'no message'})",
            response.code,
        )


def chunk(response: Response) -> tuple[str, bool]:
    """(delta, finish) of a stream chunk; a plain reply is the whole text, finished."""
    data = response.data
    if isinstance(data, Mapping):
        delta, finish = data.get("delta", ""), data.get("finish")
        if isinstance(delta, str) and isinstance(finish, bool):
            return delta, finish
    elif isinstance(data, str) and not response.object.endswith(".stream"):
        return data, True
    raise BackendError(
        f"the StackFlow peer sent a chunk that is not {{delta, finish}}: {data!r:.200}",
        ErrorCode.GENERAL,
    )
