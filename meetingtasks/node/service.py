"""The reference inference node: the Edge-LLM-Infra protocol over ZMQ and TCP at once.

    meetingtasks ai-node --bind tcp://127.0.0.1:5560 --tcp-port 10001

    node = InferenceNode(NodeConfig(bind="tcp://127.0.0.1:*", tcp_port=0)).start()
    client = LLMClient(node.addresses)
    ...
    node.stop()

It lets the whole AI path run on one machine. Its default backend is ``EchoBackend``, a
deterministic test double, not a model; ``--backend llama`` serves a real one (SmolLM2
on llama.cpp, ``llama.py``), and others plug in behind ``Backend``
(``--backend package.module:factory``). Once started it prints ``ready`` and the client
addresses of both front ends on one line, so a parent process knows where to connect.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from types import FrameType
from typing import Any

from meetingtasks.base import tracing
from meetingtasks.errors import ConfigurationError
from meetingtasks.llm.transport import TCP_JSON_SCHEME
from meetingtasks.node.backends import Backend, EchoBackend
from meetingtasks.node.core import NodeCore
from meetingtasks.node.servers import TcpFrontEnd, ZmqFrontEnd

DEFAULT_BIND = "tcp://127.0.0.1:5560"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeConfig:
    #: ZMQ endpoint of the ROUTER socket (a ``*`` port picks a free one); None: no ZMQ.
    bind: str | None = DEFAULT_BIND
    #: Port of the newline-delimited JSON front end (0 picks a free one); None: no TCP.
    tcp_port: int | None = None
    tcp_host: str = "127.0.0.1"
    #: The unit name clients set up (work_ids are ``<unit>.<number>``).
    unit: str = "llm"
    #: Seconds the default EchoBackend waits before each delta (for fault tests).
    token_delay: float = 0.0
    #: Work units kept at once; beyond it idle ones are recycled, busy ones refuse (-21).
    #: A client holds one per connection, and an ``ai`` worker one connection per thread.
    max_work_ids: int = 1024
    #: Requests the ZMQ front end serves at once (streams in progress included): as many
    #: as an ``ai`` worker's threads (routes/ai.toml), so none waits for a free one.
    workers: int = 512

    def __post_init__(self) -> None:
        if not self.bind and self.tcp_port is None:
            raise ConfigurationError("the inference node needs a ZMQ --bind or a --tcp-port")
        if self.token_delay < 0 or self.max_work_ids < 1 or self.workers < 1:
            raise ConfigurationError(
                "token_delay must be >= 0, max_work_ids and workers at least 1"
            )


class InferenceNode:
    """Both front ends around one NodeCore, with the start()/stop() lifecycle."""

    def __init__(self, config: NodeConfig | None = None, backend: Backend | None = None) -> None:
        self.config = config or NodeConfig()
        self.core = NodeCore(
            backend or EchoBackend(self.config.token_delay),
            unit=self.config.unit,
            max_work_ids=self.config.max_work_ids,
        )
        self._zmq: ZmqFrontEnd | None = None
        self._tcp: TcpFrontEnd | None = None

    @property
    def addresses(self) -> list[str]:
        """The addresses an LLMClient uses to reach this node, ZMQ first."""
        urls = [self._zmq.endpoint] if self._zmq else []
        if self._tcp:
            urls.append(f"{TCP_JSON_SCHEME}://{self._tcp.host}:{self._tcp.port}")
        return urls

    def start(self) -> InferenceNode:
        """Bind the front ends and serve; ConfigurationError if an address is taken."""
        config = self.config
        self.core.stopping.clear()
        try:
            if config.bind:
                zmq_front_end = ZmqFrontEnd(self.core, config.bind, config.workers)
                zmq_front_end.start()
                self._zmq = zmq_front_end
            if config.tcp_port is not None:
                tcp_front_end = TcpFrontEnd(self.core, config.tcp_host, config.tcp_port)
                tcp_front_end.start()
                self._tcp = tcp_front_end
        except ConfigurationError:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving: replies in progress end with error -10, connections close."""
        self.core.stopping.set()
        for front_end in (self._tcp, self._zmq):
            if front_end is not None:
                front_end.stop(timeout)
        self._zmq = self._tcp = None
        self.core.backend.close()

    def stats(self) -> dict[str, Any]:
        return {
            "addresses": self.addresses,
            "work_ids": self.core.work_ids(),
            "generations": self.core.generations,
            "replying": self.core.replying,
            "backend": self.core.backend.health(),
        }

    def __enter__(self) -> InferenceNode:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def run(
    bind: str | None = DEFAULT_BIND,
    tcp_port: int | None = None,
    backend: Backend | None = None,
    **options: Any,
) -> None:
    """Serve until SIGINT or SIGTERM; ``options`` are further NodeConfig fields."""
    tracing.setup("meetingtasks-node")
    node = InferenceNode(NodeConfig(bind=bind, tcp_port=tcp_port, **options), backend).start()
    log.info("backend: %s", node.core.backend.describe())
    print("ready", *node.addresses, flush=True)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, on_signal)
    try:
        stop.wait()
    finally:
        node.stop()
