"""The StackFlow bridge: ``meetingtasks ai-node --upstream tcp+json://HOST:10001``.

A StackFlow unit manager (Edge-LLM-Infra) serves real models on edge boards, but it is
easily broken. Two or three connections at once crash it; its node holds 3 work units,
keeps them when a connection closes, and crashes on a 4th setup; an exit of a work_id
it does not know, a ``pause``, or a setup without a model aborts the node; an inference
on an unknown work_id is never answered; a reply to a connection that was closed blocks
the node for good; while a dead node's socket remains, it answers nothing and holds a
global lock, so every request sent meanwhile queues behind the first.

So our node runs this backend in front of it, and the backend alone talks to the peer.
Workers reach our node over ZMQ with full concurrency, and the bridge:

- serves one call at a time, on one connection it does not close while a reply is due;
  callers wait their turn (``queue_timeout``, then error -10, which the client retries),
  and a reply abandoned by its caller is still read to its end;
- opens a new connection after ``recycle_after`` requests (20), at a moment when no
  reply is due: the unit manager reserves its input buffer anew on every read
  (``zmq_bus.cpp``, ``select_json_str``), at least doubling it, and aborts with
  ``std::bad_alloc`` after about 28 reads on one connection. Its work units outlive the
  connection, so none is set up again. The old connection is half-closed and its end
  awaited before the new one sends: two open connections crash the peer too;
- keeps at most ``units`` work units (3), one per distinct setup (model, system prompt,
  options), the least recently used exited to make room, all exited when it stops;
- at start and after a reconnect, asks the peer for its work units (``taskinfo``) and
  exits those it finds that it does not hold: leftovers of an earlier run of the bridge,
  which must be the peer's only client;
- exits a work unit only after ``taskinfo`` listed it, never pauses, always sends a
  model and the whole input as chunk 0, and writes text so the peer's brace counting
  and substring cutting keep it intact (``stackflow_text.py``);
- when an inference on a unit it set up earlier gets no reply for ``recheck_after``
  seconds, asks ``taskinfo``: a unit the peer no longer lists means the node restarted,
  so the bridge forgets its units, sets up again and repeats the input once;
- while a setup, taskinfo or exit is unanswered (the node is down and the peer holds its
  lock), sends nothing more, which would only queue behind it: calls fail at once with
  -10 until the reply comes or the connection breaks (the peer restarted);
- reports the peer's state, the units held and the restarts it saw (``health()``, in
  the node's stats).

It serves one unit name (``llm``); our node answers -9 for any other without asking the
peer, and the client counts that against the unit, not the address.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from meetingtasks.errors import ConfigurationError, MeetingTasksError, NodeUnavailable
from meetingtasks.llm.backends import Backend, BackendError, Generation, check_sampling
from meetingtasks.llm.protocol import (
    STREAM_FORMAT,
    ErrorCode,
    Response,
    UnitSetup,
    parse_response,
)
from meetingtasks.llm.stackflow_text import request_line
from meetingtasks.llm.transport import Address, NodeSilent, TcpConnection, parse_address

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Sent:
    action: str
    work_id: str
    at: float

    def ended_by(self, response: Response) -> bool:
        """Whether ``response`` is the last reply this request gets."""
        return self.action != "inference" or not response.ok or _chunk(response)[1]


class _Silent(MeetingTasksError):
    """The peer sent nothing for a request within the wait."""


class _Forgotten(MeetingTasksError):
    """The peer no longer knows a unit the bridge set up: it restarted."""


class StackFlowBridge(Backend):
    #: The peer answers one request at a time.
    slots = 1

    def __init__(
        self,
        upstream: str,
        *,
        unit: str = "llm",
        units: int = 3,
        read_timeout: float = 20.0,
        queue_timeout: float = 15.0,
        connect_timeout: float = 3.0,
        recheck_after: float = 2.0,
        recycle_after: int = 20,
    ) -> None:
        """``read_timeout``: the longest silence accepted within a reply;
        ``queue_timeout``: how long a call waits for its turn (keep it below the clients'
        read timeout, so they hear -10 rather than silence); ``recycle_after``: requests
        sent on one connection before the next opens (the real peer dies near 28)."""
        self.address: Address = parse_address(upstream)
        if self.address.transport != "tcp":
            raise ConfigurationError(
                f"--upstream {upstream!r}: a StackFlow unit manager is reached at "
                "tcp+json://HOST[:PORT]"
            )
        if units < 1 or min(read_timeout, queue_timeout, connect_timeout, recheck_after) <= 0:
            raise ConfigurationError(
                "the StackFlow bridge needs at least 1 unit and positive timeouts"
            )
        if type(recycle_after) is not int or recycle_after < 2:
            raise ConfigurationError(
                f"recycle_after must be a whole number >= 2 (requests on one connection), "
                f"not {recycle_after!r}"
            )
        self.recycle_after = recycle_after
        #: Requests sent on the current connection; connections opened so far.
        self._sent_here = 0
        self._connections = 0
        self.unit, self.max_units = unit, units
        self.read_timeout, self.queue_timeout = read_timeout, queue_timeout
        self.connect_timeout, self.recheck_after = connect_timeout, recheck_after
        self._turn = threading.Lock()
        self._connection: TcpConnection | None = None
        #: The units this bridge set up on the peer, least recently used first.
        self._units: OrderedDict[UnitSetup, str] = OrderedDict()
        #: Requests sent and not answered to their end, by request_id.
        self._unanswered: dict[str, _Sent] = {}
        #: Replies to the requests the current call reads, by request_id: a reply that
        #: comes while the call waits for another request is kept for it here.
        self._waited: dict[str, list[Response]] = {}
        self._work_id_pattern = re.compile(rf"{re.escape(unit)}\.\d+")
        self._state = "unknown"
        self._last_error: str | None = None
        self._restarts = 0
        self._leftovers_exited = 0
        self._closed = False

    def describe(self) -> str:
        return f"StackFlow bridge to {self.address.url} (unit {self.unit}, {self.max_units} units)"

    def health(self) -> dict[str, Any]:
        """The peer as the bridge last saw it: up, down (unreachable), stuck (a request
        unanswered) or unknown (not used yet); its units; the restarts detected."""
        now = time.monotonic()
        return {
            "upstream": self.address.url,
            "unit": self.unit,
            "state": self._state,
            "last_error": self._last_error,
            "work_ids": list(self._units.values()),
            "unanswered": [
                {"action": sent.action, "work_id": sent.work_id, "for_seconds": now - sent.at}
                for sent in list(self._unanswered.values())
            ],
            "restarts_detected": self._restarts,
            "leftovers_exited": self._leftovers_exited,
            "connections_opened": self._connections,
        }

    def setup(self, options: Mapping[str, Any]) -> None:
        """Refuse at setup (-5) what the peer could choke on later."""
        if not str(options.get("model", "")).strip():
            raise ValueError("a StackFlow unit needs a model name")
        if not isinstance(options.get("prompt", ""), str):
            raise ValueError("the prompt must be text")
        check_sampling(options)

    def generate(self, request: Generation) -> Iterator[str]:
        if not self._turn.acquire(timeout=self.queue_timeout):
            raise BackendError(
                f"the StackFlow peer {self.address.url} is busy: this request waited "
                f"{self.queue_timeout:.3g}s for its turn (the peer takes one at a time)",
                ErrorCode.NOT_AVAILABLE,
            )
        try:
            yield from self._generate(request)
        finally:
            self._turn.release()

    def close(self) -> None:
        """Exit the units the bridge holds (those the peer still lists), then disconnect.

        A reply still due is awaited first (up to ``read_timeout``): closing the
        connection before it came would block the peer's node."""
        if not self._turn.acquire(timeout=self.queue_timeout):
            return
        try:
            if self._closed or self._connection is None:
                return
            self._closed = True
            try:
                if self._unanswered:
                    self._collect(self.read_timeout)
                if not self._unanswered:
                    listed = self._tasklist()
                    for key, work_id in list(self._units.items()):
                        if work_id in listed:
                            self._exit(work_id)
                        del self._units[key]
            except MeetingTasksError as exc:
                log.warning("could not exit the StackFlow units at close: %s", exc)
            if self._unanswered:
                log.warning("closing the StackFlow connection with a reply still due")
            if self._connection is not None:
                self._connection.close()
                self._connection = None
        finally:
            self._turn.release()

    # -- one call -------------------------------------------------------------------

    def _generate(self, request: Generation) -> Iterator[str]:
        if self._closed:
            raise BackendError("the StackFlow bridge is stopping", ErrorCode.NOT_AVAILABLE)
        options = request.options
        key = UnitSetup(
            self.unit,
            request.model,
            request.system_prompt,
            STREAM_FORMAT,
            options.get("max_token_len"),
            options.get("temperature"),
        )
        for _attempt in range(2):
            self._ready()
            known = key in self._units
            work_id = self._units[key] if known else self._set_up(key)
            self._units.move_to_end(key)
            try:
                yield from self._infer(work_id, request.text, recheck=known)
                self._state = "up"
                return
            except _Forgotten:
                continue  # the node restarted; set up again and repeat the input once
        raise BackendError(
            f"the StackFlow peer {self.address.url} lost its unit twice in a row: its node "
            "keeps restarting",
            ErrorCode.NOT_AVAILABLE,
        )

    def _ready(self) -> None:
        """Connected, in step with the peer (nothing unanswered), its units reconciled."""
        if self._connection is not None:
            try:
                self._collect(0.0)  # late replies, or a connection the peer closed
            except BackendError:
                log.info("reconnecting to the StackFlow peer %s", self.address.url)
        if self._connection is None:
            self._connect()
        if self._unanswered:
            self._settle()

    def _connect(self) -> None:
        try:
            self._connection = TcpConnection(self.address, self.connect_timeout)
        except NodeUnavailable as exc:
            raise self._down(str(exc)) from exc
        self._sent_here = 0
        self._connections += 1
        listed = self._tasklist()
        ours = set(self._units.values())
        for work_id in sorted(listed - ours):
            log.info("exiting %s, a leftover unit on the StackFlow peer", work_id)
            self._exit(work_id)
            self._leftovers_exited += 1
        self._state = "up"

    def _settle(self) -> None:
        """Before a new request: wait a little for what is still unanswered.

        An exchange (setup, taskinfo, exit) left unanswered means the node is down or
        stuck: the peer queues every further request behind it, so none is sent. An
        inference left unanswered is either still streaming (its unit is listed) or
        will never be answered (its unit is gone, the node restarted)."""
        stuck = sorted({s.action for s in self._unanswered.values() if s.action != "inference"})
        if stuck:
            self._state = "stuck"
            raise BackendError(
                f"the StackFlow peer {self.address.url} has not answered a "
                f"{'/'.join(stuck)} request yet; nothing more is sent until it does (while "
                "it is stuck it queues every request behind a global lock): check its node",
                ErrorCode.NOT_AVAILABLE,
            )
        listed = self._tasklist()
        for request_id, sent in list(self._unanswered.items()):
            if sent.work_id not in listed:
                del self._unanswered[request_id]
        self._collect(self.recheck_after)
        if self._unanswered:
            raise BackendError(
                f"the StackFlow peer {self.address.url} is still answering an earlier "
                "request (it takes one at a time)",
                ErrorCode.NOT_AVAILABLE,
            )

    # -- exchanges ------------------------------------------------------------------

    def _tasklist(self) -> set[str]:
        """The peer's work units; ours it no longer lists are forgotten (it restarted)."""
        response = self._exchange({"work_id": self.unit, "action": "taskinfo"})
        listed = response.data if isinstance(response.data, list) else []
        work_ids = {w for w in listed if isinstance(w, str) and self._work_id_pattern.fullmatch(w)}
        gone = [key for key, work_id in self._units.items() if work_id not in work_ids]
        if gone:
            self._restarts += 1
            log.warning(
                "the StackFlow peer %s no longer has units %s: its node restarted; they "
                "are set up again when needed",
                self.address.url,
                [self._units[key] for key in gone],
            )
            for key in gone:
                del self._units[key]
        return work_ids

    def _set_up(self, key: UnitSetup) -> str:
        listed = self._tasklist()
        while len(listed) >= self.max_units:
            if not self._units:
                raise BackendError(
                    f"the StackFlow peer {self.address.url} holds {len(listed)} units that "
                    "are not this bridge's: it must be the peer's only client",
                    ErrorCode.TASK_FULL,
                )
            _oldest, work_id = self._units.popitem(last=False)
            self._exit(work_id)
            listed.discard(work_id)
        response = self._exchange(
            {
                "work_id": self.unit,
                "action": "setup",
                "object": f"{self.unit}.setup",
                "data": key.data(),
            }
        )
        if not self._work_id_pattern.fullmatch(response.work_id):
            raise BackendError(
                f"the StackFlow peer answered a setup with work_id {response.work_id!r}",
                ErrorCode.GENERAL,
            )
        self._units[key] = response.work_id
        return response.work_id

    def _exit(self, work_id: str) -> None:
        """Only for a work_id the peer listed just now: an unknown one aborts its node."""
        self._exchange({"work_id": work_id, "action": "exit"})

    def _exchange(self, message: Mapping[str, Any]) -> Response:
        """One request answered by one reply (setup, taskinfo, exit)."""
        request_id = self._send(message)
        try:
            response = self._reply(request_id, time.monotonic() + self.read_timeout)
        except _Silent:
            self._state = "stuck"  # it stays unanswered: _settle() sends nothing more
            self._waited.pop(request_id, None)
            raise BackendError(
                f"the StackFlow peer {self.address.url} did not answer a {message['action']} "
                f"within {self.read_timeout:.3g}s: its node is down or stuck",
                ErrorCode.NOT_AVAILABLE,
            ) from None
        self._answered(request_id)
        if not response.ok:
            raise self._refusal(response, str(message["action"]))
        return response

    def _infer(self, work_id: str, text: str, recheck: bool) -> Iterator[str]:
        """The peer's reply to ``text``, delta by delta; the stream's ``index`` is a
        counter the node shares between units, so only the order of arrival counts."""
        request_id = self._send(
            {
                "work_id": work_id,
                "action": "inference",
                "object": STREAM_FORMAT,
                "data": {"delta": text, "index": 0, "finish": True},
            }
        )
        deadline = time.monotonic() + self.read_timeout
        first = True
        try:
            while True:
                wait_until = deadline
                if recheck and first:
                    wait_until = min(deadline, time.monotonic() + self.recheck_after)
                try:
                    response = self._reply(request_id, wait_until)
                except _Silent:
                    if recheck and first and time.monotonic() < deadline:
                        recheck = False
                        if work_id not in self._tasklist():
                            self._answered(request_id)  # never will be: its unit is gone
                            raise _Forgotten from None
                        continue
                    raise BackendError(
                        f"the StackFlow peer {self.address.url} sent nothing for "
                        f"{self.read_timeout:.3g}s in its reply on {work_id}",
                        ErrorCode.NOT_AVAILABLE,
                    ) from None
                first = False
                deadline = time.monotonic() + self.read_timeout  # a silence, not the reply
                if not response.ok:
                    self._answered(request_id)
                    raise self._refusal(response, "inference")
                delta, finish = _chunk(response)
                if finish:
                    self._answered(request_id)
                if delta:
                    yield delta
                if finish:
                    return
        except GeneratorExit:
            self._finish_quietly(request_id, deadline)
            raise
        finally:
            self._waited.pop(request_id, None)

    def _finish_quietly(self, request_id: str, deadline: float) -> None:
        """Read an abandoned reply to its end, so the next request starts in step."""
        self._waited.pop(request_id, None)
        try:
            while request_id in self._unanswered and time.monotonic() < deadline:
                self._collect(deadline - time.monotonic())
        except BackendError:
            pass  # the connection is gone: the next call reconnects

    # -- the connection -------------------------------------------------------------

    def _send(self, message: Mapping[str, Any]) -> str:
        """Send a request whose replies this call reads (``_reply``), on a new
        connection once this one carried ``recycle_after`` and no reply is due."""
        if self._sent_here >= self.recycle_after and not self._unanswered:
            self._recycle()
        assert self._connection is not None
        self._sent_here += 1
        request_id = uuid.uuid4().hex[:16]
        line = request_line({"request_id": request_id, **message})
        try:
            self._connection.send(line[:-1], self.read_timeout)  # send() adds the newline
        except NodeUnavailable as exc:
            raise self._lost(exc) from exc
        action, work_id = str(message["action"]), str(message["work_id"])
        self._unanswered[request_id] = _Sent(action, work_id, time.monotonic())
        self._waited[request_id] = []
        return request_id

    def _answered(self, request_id: str) -> None:
        """The call is done with ``request_id`` (answered, or never will be)."""
        self._unanswered.pop(request_id, None)
        self._waited.pop(request_id, None)

    def _reply(self, request_id: str, deadline: float) -> Response:
        """The next reply to ``request_id``, or _Silent at ``deadline``."""
        while True:
            waiting = self._waited.get(request_id)
            if waiting:
                return waiting.pop(0)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Silent
            self._collect(remaining, until=request_id)

    def _collect(self, timeout: float, until: str | None = None) -> None:
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
                raise self._lost(exc) from exc
            request_id = self._owner(response)
            if request_id is None:
                continue
            if self._unanswered[request_id].ended_by(response):
                del self._unanswered[request_id]
            if request_id in self._waited:
                self._waited[request_id].append(response)
            if request_id == until or (until is None and not self._unanswered):
                return

    def _owner(self, response: Response) -> str | None:
        if response.request_id in self._unanswered:
            return response.request_id
        if response.request_id == "0" and self._unanswered:  # the peer could not parse it
            return list(self._unanswered)[-1]
        log.debug("dropping a late StackFlow reply to %s", response.request_id)
        return None

    def _recycle(self) -> None:
        """Close the connection, its end seen by the peer, and open the next one."""
        assert self._connection is not None
        log.debug("recycling the StackFlow connection after %d requests", self._sent_here)
        self._connection.close_and_wait(self.connect_timeout)
        self._connection = None
        self._connect()

    def _lost(self, error: Exception) -> BackendError:
        """The connection broke: the unit manager restarted or crashed. Its units are
        checked against ``taskinfo`` at the next connection."""
        if self._connection is not None:
            self._connection.close()
        self._connection = None
        self._unanswered.clear()
        self._waited.clear()
        return self._down(f"lost the connection to the StackFlow peer: {error}")

    def _down(self, why: str) -> BackendError:
        self._state, self._last_error = "down", why
        return BackendError(why, ErrorCode.NOT_AVAILABLE)

    def _refusal(self, response: Response, action: str) -> BackendError:
        self._last_error = f"{action}: error {response.code} {response.message}"
        return BackendError(
            f"the StackFlow peer refused {action}: error {response.code} "
            f"({response.message or 'no message'})",
            response.code,
        )


def _chunk(response: Response) -> tuple[str, bool]:
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
