"""The StackFlow bridge: ``meetingtasks ai-node --upstream tcp+json://HOST:10001``.

A StackFlow unit manager (Edge-LLM-Infra) serves real models on edge boards, but it is
easily broken. Two or three connections at once crash it; its node holds 3 work units,
keeps them when a connection closes, and crashes on a 4th setup; an exit of a work_id
it does not know, a ``pause``, or a setup without a model aborts the node; an inference
on an unknown work_id is never answered; a reply to a connection that was closed blocks
the node for good; while a dead node's socket remains, it answers nothing and holds a
global lock, so every request sent meanwhile queues behind the first.

So our node runs this backend in front of it, and the backend alone talks to the peer.
Workers reach our node over ZMQ with full concurrency. The bridge is three parts:

- ``channel.py``: the one connection, each reply routed to its request, renewed every
  ``recycle_after`` requests before the peer's buffer growth kills it;
- ``units.py``: at most ``units`` work units, least recently used exited, reconciled
  with the peer's ``taskinfo`` at every connection, a restart of its node detected;
- here, one call at a time: callers wait their turn (``queue_timeout``, then error -10,
  which the client retries). A call never pauses, always sends a model and the whole
  input as chunk 0, and writes text so the peer's brace counting and substring cutting
  keep it intact (``text.py``). When an inference on a unit set up earlier gets no
  reply for ``recheck_after`` seconds, it asks ``taskinfo``: a unit the peer no longer
  lists means the node restarted, so the call sets up again and repeats the input once.
  While a setup, taskinfo or exit is unanswered (the node is down and the peer holds its
  lock), nothing more is sent, which would only queue behind it: calls fail at once with
  -10 until the reply comes or the connection breaks (the peer restarted). ``health()``
  (in the node's stats) reports the peer's state, the units held and the restarts seen.

It serves one unit name (``llm``); our node answers -9 for any other without asking the
peer, and the client counts that against the unit, not the address.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from meetingtasks.errors import ConfigurationError, MeetingTasksError
from meetingtasks.llm.protocol import STREAM_FORMAT, ErrorCode, UnitSetup
from meetingtasks.llm.transport import Address, parse_address
from meetingtasks.node.backends import Backend, BackendError, Generation, check_sampling
from meetingtasks.node.stackflow.channel import Channel, Silent, chunk
from meetingtasks.node.stackflow.units import Units

log = logging.getLogger(__name__)


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
        self.unit, self.max_units = unit, units
        self.read_timeout, self.queue_timeout = read_timeout, queue_timeout
        self.recheck_after = recheck_after
        self._turn = threading.Lock()
        self._channel = Channel(
            self.address, read_timeout=read_timeout, connect_timeout=connect_timeout,
            recycle_after=recycle_after,
        )  # fmt: skip
        self._units = Units(self._channel, unit, units)
        self._channel.on_connect = self._units.exit_leftovers
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
            "state": self._channel.state,
            "last_error": self._channel.last_error,
            "work_ids": self._units.work_ids(),
            "unanswered": [
                {"action": sent.action, "work_id": sent.work_id, "for_seconds": now - sent.at}
                for sent in list(self._channel.unanswered.values())
            ],
            "restarts_detected": self._units.restarts,
            "leftovers_exited": self._units.leftovers_exited,
            "connections_opened": self._channel.connections,
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
            if self._closed or not self._channel.connected:
                return
            self._closed = True
            try:
                if self._channel.unanswered:
                    self._channel.collect(self.read_timeout)
                if not self._channel.unanswered:
                    self._units.exit_all()
            except MeetingTasksError as exc:
                log.warning("could not exit the StackFlow units at close: %s", exc)
            if self._channel.unanswered:
                log.warning("closing the StackFlow connection with a reply still due")
            self._channel.close()
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
            known = self._units.held(key)
            work_id = self._units.work_id(key)
            try:
                yield from self._infer(work_id, request.text, recheck=known)
                self._channel.state = "up"
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
        channel = self._channel
        if channel.connected:
            try:
                channel.collect(0.0)  # late replies, or a connection the peer closed
            except BackendError:
                log.info("reconnecting to the StackFlow peer %s", self.address.url)
        if not channel.connected:
            channel.connect()
        if channel.unanswered:
            self._settle()

    def _settle(self) -> None:
        """Before a new request: wait a little for what is still unanswered.

        An exchange (setup, taskinfo, exit) left unanswered means the node is down or
        stuck: the peer queues every further request behind it, so none is sent. An
        inference left unanswered is either still streaming (its unit is listed) or
        will never be answered (its unit is gone, the node restarted)."""
        unanswered = self._channel.unanswered
        stuck = sorted({s.action for s in unanswered.values() if s.action != "inference"})
        if stuck:
            self._channel.state = "stuck"
            raise BackendError(
                f"the StackFlow peer {self.address.url} has not answered a "
                f"{'/'.join(stuck)} request yet; nothing more is sent until it does (while "
                "it is stuck it queues every request behind a global lock): check its node",
                ErrorCode.NOT_AVAILABLE,
            )
        listed = self._units.listed()
        for request_id, sent in list(unanswered.items()):
            if sent.work_id not in listed:
                del unanswered[request_id]
        self._channel.collect(self.recheck_after)
        if unanswered:
            raise BackendError(
                f"the StackFlow peer {self.address.url} is still answering an earlier "
                "request (it takes one at a time)",
                ErrorCode.NOT_AVAILABLE,
            )

    def _infer(self, work_id: str, text: str, recheck: bool) -> Iterator[str]:
        """The peer's reply to ``text``, delta by delta; the stream's ``index`` is a
        counter the node shares between units, so only the order of arrival counts."""
        channel = self._channel
        request_id = channel.send(
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
                    response = channel.reply(request_id, wait_until)
                except Silent:
                    if recheck and first and time.monotonic() < deadline:
                        recheck = False
                        if work_id not in self._units.listed():
                            channel.answered(request_id)  # never will be: its unit is gone
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
                    channel.answered(request_id)
                    raise channel.refusal(response, "inference")
                delta, finish = chunk(response)
                if finish:
                    channel.answered(request_id)
                if delta:
                    yield delta
                if finish:
                    return
        except GeneratorExit:
            channel.finish_quietly(request_id, deadline)
            raise
        finally:
            channel.forget_waits(request_id)
