"""LLMClient: prompts to a set of inference nodes, with load spread and failover.

    client = LLMClient(["tcp://10.0.0.5:5560", "tcp+json://10.0.0.6:10001"])
    text = client.stream("Summarise the meeting", on_delta=send_delta_frame)
    client.health()   # JSON-able, per node: state, last success, failures, skipped until
    client.close()

Each call goes to the node with the fewest of this client's calls in flight, equals round
robin, so a slow or busy node is given fewer; a node that failed is skipped for a while
(see ``health.py``). Within the call's ``timeout``, which our own code enforces on every wait
(Celery's time limits do not apply in a thread pool), a node that cannot be reached, goes
silent for ``read_timeout`` or answers a transient error code is left for the next one.
Errors retrying cannot fix (bad input, a node error code, garbage) raise InferenceError at
once; when no node could answer the call raises NodeUnavailable, which Celery retries, and
when the call's own ``timeout`` ran out, CallTimedOut (a NodeUnavailable). A reply cut
short leaves its connection with the work units exited, so the node stops generating.

A node may fail in the middle of a streamed reply, after deltas went to ``on_delta``.
Then the reply restarts from scratch on another node only if the caller gave
``on_restart``: it is called (with the reason) before the first delta of the new reply, so
the caller can drop what it showed. Without ``on_restart``, the call raises NodeUnavailable
instead, so no caller ever sees a reply's beginning twice without being told. Before the
first delta, failover is always silent.

One client is shared by the threads of a process: each call borrows a connection of its
own from the node's pool, and a connection is never used by two threads at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meetingtasks.base import tracing
from meetingtasks.errors import (
    CallTimedOut,
    ConfigurationError,
    InferenceError,
    InvalidOption,
    NodeUnavailable,
    StateError,
    UnitUnavailable,
)
from meetingtasks.llm.health import NodeHealth, failover_order
from meetingtasks.llm.protocol import STREAM_FORMAT, TEXT_FORMAT, UnitSetup, split_prompt
from meetingtasks.llm.session import NodeSession
from meetingtasks.llm.transport import Address, connect, parse_address

Prompt = str | Sequence[Mapping[str, str]]

#: Bounds of the sampling options a call may ask for.
MAX_TOKENS = 8192
MAX_TEMPERATURE = 2.0


@dataclass
class _Node:
    address: Address
    #: The address: reachable, answering in time.
    health: NodeHealth
    #: Its units that answered -9 (not running there), by unit name.
    units: dict[str, NodeHealth] = field(default_factory=dict)
    idle: list[NodeSession] = field(default_factory=list)
    #: Calls of this client on the node now.
    in_flight: int = 0

    def unit_health(self, unit: str) -> NodeHealth:
        if unit not in self.units:
            self.units[unit] = NodeHealth(
                f"{self.address.url} {unit}",
                skip_base=self.health.skip_base,
                skip_max=self.health.skip_max,
            )
        return self.units[unit]

    def health_for(self, unit: str) -> NodeHealth:
        """Whichever of the address and the unit there is skipped longer."""
        unit_health = self.units.get(unit)
        if unit_health is None or self.health.skipped_for() >= unit_health.skipped_for():
            return self.health
        return unit_health


class LLMClient:
    def __init__(
        self,
        addresses: str | Sequence[str],
        *,
        unit: str = "llm",
        model: str = "echo",
        timeout: float = 60.0,
        read_timeout: float = 20.0,
        connect_timeout: float = 3.0,
        skip_base: float = 1.0,
        skip_max: float = 30.0,
    ) -> None:
        """``read_timeout`` is the longest silence accepted from a node, model loading
        included; ``timeout`` the default budget of a whole call, failovers included."""
        urls = [addresses] if isinstance(addresses, str) else list(addresses)
        if not urls:
            raise ConfigurationError(
                "LLMClient needs at least one inference node address, e.g. tcp://127.0.0.1:5560"
            )
        for name, value in (
            ("timeout", timeout),
            ("read_timeout", read_timeout),
            ("connect_timeout", connect_timeout),
        ):
            _check_positive(name, value)
        self.unit, self.model = unit, model
        self.timeout, self.read_timeout = timeout, read_timeout
        self.connect_timeout = connect_timeout
        self._nodes = [
            _Node(parse_address(url), NodeHealth(url, skip_base=skip_base, skip_max=skip_max))
            for url in urls
        ]
        self._lock = threading.Lock()
        self._next = 0
        self._closed = False

    def stream(
        self,
        prompt: Prompt,
        *,
        model: str | None = None,
        unit: str | None = None,
        timeout: float | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        on_delta: Callable[[str], None] | None = None,
        on_restart: Callable[[str], None] | None = None,
    ) -> str:
        """The full reply to a prompt or chat history; each delta to ``on_delta`` as it comes.

        ``max_tokens`` bounds the reply, ``temperature`` its sampling (None: the node's
        defaults). ``on_restart`` allows a restart on another node after deltas were
        delivered (see the module docstring). Raises InvalidPayload for a bad prompt,
        InvalidOption for a bad option, InferenceError when a node refuses it,
        NodeUnavailable when no node could answer, CallTimedOut when ``timeout`` ran out
        first; an exception raised by a callback ends the call and propagates as is.
        """
        system, text = split_prompt(prompt)
        setup = self._setup(system, STREAM_FORMAT, model, unit, max_tokens, temperature)
        return self._call(setup, text, timeout, on_delta, on_restart)

    def complete(
        self,
        prompt: Prompt,
        *,
        model: str | None = None,
        unit: str | None = None,
        timeout: float | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> str:
        """The reply in one piece (format llm.utf-8): nothing streams, so failover is free."""
        system, text = split_prompt(prompt)
        setup = self._setup(system, TEXT_FORMAT, model, unit, max_tokens, temperature)
        return self._call(setup, text, timeout, None, None)

    def health(self) -> dict[str, Any]:
        """Per node: state, last success and failure, consecutive failures, skipped until;
        and ``units``, the same for each unit that node answered -9 for (not running
        there: only that unit is skipped, the node still serves the others)."""
        with self._lock:
            nodes = [
                {
                    **node.health.to_dict(),
                    "units": {name: h.to_dict() for name, h in node.units.items()},
                }
                for node in self._nodes
            ]
        return {"nodes": nodes, "available": sum(not n["skipped_until"] for n in nodes)}

    def close(self) -> None:
        """Release the work units and close every idle connection; calls after it fail.

        Connections lent to calls still running are closed when those calls end.
        """
        with self._lock:
            self._closed = True
            sessions = [session for node in self._nodes for session in node.idle]
            for node in self._nodes:
                node.idle.clear()
        for session in sessions:
            session.close(graceful=True, timeout=min(1.0, self.read_timeout))

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _setup(
        self,
        system: str,
        response_format: str,
        model: str | None,
        unit: str | None,
        max_tokens: int | None,
        temperature: float | None,
    ) -> UnitSetup:
        if max_tokens is not None and not (
            type(max_tokens) is int and 1 <= max_tokens <= MAX_TOKENS
        ):
            raise InvalidOption(f"max_tokens must be a whole number from 1 to {MAX_TOKENS}")
        if temperature is not None and not (
            type(temperature) in (int, float) and 0 <= temperature <= MAX_TEMPERATURE
        ):
            raise InvalidOption(f"temperature must be a number from 0 to {MAX_TEMPERATURE}")
        unit, model = unit or self.unit, model or self.model
        return UnitSetup(unit, model, system, response_format, max_tokens, temperature)

    def _call(
        self,
        setup: UnitSetup,
        text: str,
        timeout: float | None,
        on_delta: Callable[[str], None] | None,
        on_restart: Callable[[str], None] | None,
    ) -> str:
        budget = self.timeout if timeout is None else timeout
        _check_positive("timeout", budget, InvalidOption)
        deadline = time.monotonic() + budget
        failures: list[str] = []
        for node in self._failover_order(setup.unit):
            if time.monotonic() >= deadline:
                break
            deltas = _Deltas(on_delta)
            with self._lock:
                node.in_flight += 1
            try:
                reply = self._attempt(node, setup, text, deadline, deltas)
            except NodeUnavailable as exc:
                with self._lock:
                    failed = isinstance(exc, UnitUnavailable)
                    (node.unit_health(setup.unit) if failed else node.health).record_failure(exc)
                failures.append(str(exc))
                if isinstance(exc, CallTimedOut):
                    raise  # no time left for another node
                if deltas.count and on_restart is None:
                    raise NodeUnavailable(
                        f"{exc} (after {deltas.count} deltas were delivered; the reply was not "
                        "restarted on another node because no on_restart callback was given)"
                    ) from exc
                if deltas.count and on_restart is not None:
                    on_restart(f"{exc}; the reply restarts on another node")
                continue
            except InferenceError as exc:
                with self._lock:
                    node.health.record_error(exc)
                raise
            finally:
                with self._lock:
                    node.in_flight -= 1
            with self._lock:
                node.health.record_success()
                if setup.unit in node.units:
                    node.units[setup.unit].record_success()
            return reply
        error = CallTimedOut if time.monotonic() >= deadline else NodeUnavailable
        raise error(
            f"no inference node completed the reply within {budget:.3g}s "
            f"({'; '.join(failures) or 'no time left to try one'}); start a node with "
            "'meetingtasks ai-node' or check the addresses"
        )

    def _attempt(
        self, node: _Node, setup: UnitSetup, text: str, deadline: float, deltas: _Deltas
    ) -> str:
        """One node's reply, on a pooled connection if one is still alive, else a new one."""
        session = self._borrow(node)
        if session is None:
            wait = min(self.connect_timeout, deadline - time.monotonic())
            if wait <= 0:
                raise CallTimedOut(f"no time left to connect to {node.address.url}")
            session = NodeSession(connect(node.address, wait), self.read_timeout)
        attributes = {
            "llm.node": node.address.url,
            "llm.unit": setup.unit,
            "llm.model": setup.model,
        }
        with tracing.span("llm.call", tracing.CLIENT, attributes=attributes):
            return self._generate(node, session, setup, text, deadline, deltas)

    def _borrow(self, node: _Node) -> NodeSession | None:
        """An idle connection of the node; those the node closed meanwhile are dropped."""
        while True:
            with self._lock:
                if self._closed:
                    raise StateError("this LLMClient is closed: create a new one")
                session = node.idle.pop() if node.idle else None
            if session is None or session.connection.alive():
                return session
            session.close(graceful=False)

    def _generate(
        self,
        node: _Node,
        session: NodeSession,
        setup: UnitSetup,
        text: str,
        deadline: float,
        deltas: _Deltas,
    ) -> str:
        """Run one reply on a session, then give it back to the pool or close it."""
        try:
            return session.generate(setup, text, deadline, deltas)
        finally:
            with self._lock:
                keep = session.reusable and not self._closed
                if keep:
                    node.idle.append(session)
            if not keep:
                session.close(graceful=session.reusable, timeout=min(1.0, self.read_timeout))

    def _failover_order(self, unit: str) -> list[_Node]:
        with self._lock:
            start, self._next = self._next, self._next + 1
            healths = [node.health_for(unit) for node in self._nodes]
            order = failover_order(healths, start)
            busy = {
                i: (1, 0) if healths[i].skipped_for() else (0, self._nodes[i].in_flight)
                for i in order
            }
        order.sort(key=busy.__getitem__)  # stable: equals keep the round robin
        return [self._nodes[index] for index in order]


class _Deltas:
    """The deltas of one attempt on their way to the caller, counted."""

    def __init__(self, on_delta: Callable[[str], None] | None) -> None:
        self.on_delta = on_delta
        self.count = 0

    def __call__(self, delta: str) -> None:
        self.count += 1
        if self.on_delta is not None:
            self.on_delta(delta)


def _check_positive(name: str, value: float, error: type[Exception] = ConfigurationError) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise error(f"LLMClient {name} must be a positive number of seconds, not {value!r}")
