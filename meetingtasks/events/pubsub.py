"""The Pub/Sub side of the EventBus: one thread, one connection, every channel and pattern.

redis-py's PubSub is not thread-safe, so only this thread touches it: subscribe() from
other threads records what is wanted, and the thread applies it. After any connection
error the PubSub object is thrown away, the thread backs off, and a fresh one subscribes
to everything wanted (events published while disconnected are lost: that is the
fire-and-forget contract; durable channels use streams).

A connection whose peer vanished without a FIN (a half-open socket after a failover or
NAT timeout) never raises, so after ``health_check_interval`` seconds of silence the
thread sends PING and treats a missing answer as a dead connection.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from meetingtasks.events.config import EventBusConfig
from meetingtasks.events.connection import CONNECTION_ERRORS, Backoff

log = logging.getLogger(__name__)

#: (Redis channel or pattern name, is it a pattern, message data)
OnMessage = Callable[[str, bool, str], None]

_PING = "meetingtasks-events-ping"


class PubSubListener:
    def __init__(self, reader: redis.Redis, config: EventBusConfig, on_message: OnMessage):
        self._reader = reader
        self._config = config
        self._on_message = on_message
        self._cond = threading.Condition()
        self._wanted: set[tuple[str, bool]] = set()
        self._confirmed: set[tuple[str, bool]] = set()
        self._changed = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = False
        self.reconnects = 0

    # -- called from any thread -----------------------------------------------------------

    def want(self, name: str, pattern: bool) -> None:
        with self._cond:
            self._wanted.add((name, pattern))
            self._changed = True

    def unwant(self, name: str, pattern: bool) -> None:
        with self._cond:
            self._wanted.discard((name, pattern))
            self._changed = True

    def wait_ready(self, timeout: float) -> bool:
        """True once Redis confirmed every wanted subscription (so a publish is seen)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._wanted <= self._confirmed, timeout)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mt-event-pubsub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def stats(self) -> dict[str, Any]:
        with self._cond:
            wanted = sorted(self._wanted)
        return {
            "connected": self.connected,
            "reconnects": self.reconnects,
            "channels": [name for name, pattern in wanted if not pattern],
            "patterns": [name for name, pattern in wanted if pattern],
        }

    # -- the listener thread ---------------------------------------------------------------

    def _run(self) -> None:
        backoff = Backoff(self._config.reconnect_initial, self._config.reconnect_max)
        while not self._stopping.is_set():
            pubsub = self._reader.pubsub()
            try:
                self._listen(pubsub, backoff)
            except CONNECTION_ERRORS as exc:
                self._lost(f"{type(exc).__name__}: {exc}")
            except Exception:
                log.exception("event bus pub/sub listener failed; reconnecting")
                self._lost("unexpected error")
            finally:
                pubsub.close()
            if not self._stopping.is_set():
                self._stopping.wait(backoff.next())

    def _lost(self, reason: str) -> None:
        with self._cond:
            was_connected, self.connected = self.connected, False
            self._confirmed.clear()
            self._changed = True
        self.reconnects += 1
        if was_connected:
            log.warning("event bus lost its pub/sub connection (%s); reconnecting", reason)

    def _listen(self, pubsub: redis.client.PubSub, backoff: Backoff) -> None:
        asked: set[tuple[str, bool]] = set()
        last_heard = time.monotonic()
        ping_sent: float | None = None
        interval = self._config.health_check_interval
        while not self._stopping.is_set():
            asked = self._apply_changes(pubsub, asked)
            message = pubsub.get_message(timeout=self._config.poll_interval)
            now = time.monotonic()
            if message is not None:
                last_heard, ping_sent = now, None
                self._handle(message, backoff)
            elif asked and ping_sent is None and now - last_heard >= interval:
                pubsub.ping(_PING)
                ping_sent = now
            elif ping_sent is not None and now - ping_sent >= interval:
                raise redis.exceptions.ConnectionError(f"no answer to PING within {interval}s")

    def _apply_changes(
        self, pubsub: redis.client.PubSub, asked: set[tuple[str, bool]]
    ) -> set[tuple[str, bool]]:
        with self._cond:
            if not self._changed:
                return asked
            wanted, self._changed = set(self._wanted), False
        channels = [name for name, pattern in wanted - asked if not pattern]
        patterns = [name for name, pattern in wanted - asked if pattern]
        gone_channels = [name for name, pattern in asked - wanted if not pattern]
        gone_patterns = [name for name, pattern in asked - wanted if pattern]
        if channels:
            pubsub.subscribe(*channels)
        if patterns:
            pubsub.psubscribe(*patterns)
        if gone_channels:
            pubsub.unsubscribe(*gone_channels)
        if gone_patterns:
            pubsub.punsubscribe(*gone_patterns)
        return wanted

    def _handle(self, message: dict[str, object], backoff: Backoff) -> None:
        kind = message["type"]
        if kind in ("subscribe", "psubscribe"):
            with self._cond:
                self._confirmed.add((str(message["channel"]), kind == "psubscribe"))
                self.connected = True
                self._cond.notify_all()
            backoff.reset()
        elif kind in ("unsubscribe", "punsubscribe"):
            with self._cond:
                self._confirmed.discard((str(message["channel"]), kind == "punsubscribe"))
        elif kind == "message":
            self._on_message(str(message["channel"]), False, str(message["data"]))
        elif kind == "pmessage":
            self._on_message(str(message["pattern"]), True, str(message["data"]))
