"""The one Redis Pub/Sub subscriber, with reconnect: under the EventBus, the gateway's
fan-out and the dispatcher's listener.

One thread owns one connection. ``want`` and ``drop``, from any thread, record the
channels and patterns wanted and wake the thread (it waits on its Redis socket and on a
wake-up socket, so a change goes out at once, not at the next poll), which sends only
the difference, at most ``BATCH`` names per command: a thousand clients connecting at
once cost a few commands. Redis confirms each subscription; ``confirmed``,
``wait_confirmed`` and ``on_confirmed`` tell a caller when a publish can no longer be
missed.

After any error the connection is thrown away (its client has no retries inside
redis-py, which would come back half-subscribed), the thread backs off and a fresh
connection subscribes to everything wanted; once all of it is confirmed,
``on_reconnect`` runs, for the caller to catch up on what was published in between
(Pub/Sub keeps nothing). A connection whose peer vanished without a FIN (a half-open
socket after a failover or NAT timeout) never raises, so after
``health_check_interval`` seconds of silence the thread sends PING, and no answer within
as long again counts as a lost connection.

Callbacks run on the subscriber's thread, one at a time, in the order Redis sent; one
that raises is logged and the others go on. An asyncio caller hands over with
``loop.call_soon_threadsafe``.

Private redis-py name relied on: ``Connection._sock``, the socket the thread polls
beside its wake-up socket.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis
from redis.backoff import AbstractBackoff, EqualJitterBackoff
from redis.connection import Connection

from meetingtasks.store.clients import CONNECTION_ERRORS, connect, pause

log = logging.getLogger(__name__)

#: Channel or pattern names per SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE or PUNSUBSCRIBE.
BATCH = 500

#: Reconnect pauses unless the caller chooses: from 0.05-0.1 s up to 2.5-5 s.
RECONNECT_BACKOFF = EqualJitterBackoff(cap=5.0, base=0.1)

#: (channel or pattern name, is it a pattern)
Topic = tuple[str, bool]
#: (channel or pattern name, is it a pattern, message data)
OnMessage = Callable[[str, bool, str], None]
#: (channel or pattern name, is it a pattern)
OnConfirmed = Callable[[str, bool], None]

_PING = "meetingtasks-subscriber-ping"
_SUBSCRIBE = {False: "SUBSCRIBE", True: "PSUBSCRIBE"}
_UNSUBSCRIBE = {False: "UNSUBSCRIBE", True: "PUNSUBSCRIBE"}


class Subscriber:
    def __init__(
        self,
        url: str,
        on_message: OnMessage,
        *,
        on_confirmed: OnConfirmed | None = None,
        on_reconnect: Callable[[], None] | None = None,
        backoff: AbstractBackoff = RECONNECT_BACKOFF,
        health_check_interval: float = 15.0,
        socket_timeout: float = 10.0,
        name: str = "mt-subscriber",
    ) -> None:
        self._client = connect(url, socket_timeout, retry=False)
        self._on_message = on_message
        self._on_confirmed = on_confirmed
        self._on_reconnect = on_reconnect
        self._backoff = backoff
        self._health_check_interval = health_check_interval
        self.name = name
        self._cond = threading.Condition()
        self._wanted: set[Topic] = set()
        self._confirmed: set[Topic] = set()
        #: Changes not sent yet: True to subscribe, False to unsubscribe.
        self._pending: dict[Topic, bool] = {}
        self._stopping = threading.Event()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._thread: threading.Thread | None = None
        # Only the subscriber's thread touches these three.
        #: Asked for on this connection (SUBSCRIBE sent, no UNSUBSCRIBE since).
        self._asked: set[Topic] = set()
        #: SUBSCRIBE commands sent on this connection and not confirmed yet, per topic.
        self._unconfirmed: dict[Topic, int] = {}
        self._catch_up_due = False
        self.connected = False
        self.reconnects = 0
        self.messages = 0

    # -- called from any thread -----------------------------------------------------------

    def want(self, name: str, pattern: bool = False) -> None:
        """Subscribe to ``name`` (a glob pattern if ``pattern``), now and after reconnects."""
        self._change((name, pattern), True)

    def drop(self, name: str, pattern: bool = False) -> None:
        self._change((name, pattern), False)

    def confirmed(self, name: str, pattern: bool = False) -> bool:
        """Whether Redis confirmed the subscription, so a publish from now on arrives."""
        with self._cond:
            return (name, pattern) in self._confirmed

    def wait_confirmed(self, name: str, *, pattern: bool = False, timeout: float) -> bool:
        """Block until ``confirmed(name, pattern)``; False after ``timeout`` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: (name, pattern) in self._confirmed, timeout)

    def wait_ready(self, timeout: float) -> bool:
        """Block until every wanted subscription is confirmed; False after ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: self._wanted <= self._confirmed, timeout)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Disconnect; no callback starts after this returns (unless a running one
        outlasts ``timeout``: the thread then ends once it returns)."""
        self._stopping.set()
        if self._thread is None:
            self._close()
            return
        self._wake()
        self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            patterns = sum(1 for _, is_pattern in self._wanted if is_pattern)
            channels = len(self._wanted) - patterns
        return {
            "connected": self.connected,
            "reconnects": self.reconnects,
            "channels": channels,
            "patterns": patterns,
            "messages": self.messages,
        }

    def _change(self, topic: Topic, wanted: bool) -> None:
        with self._cond:
            if wanted:
                self._wanted.add(topic)
            else:
                self._wanted.discard(topic)
            wake = not self._pending  # else the thread was woken already
            self._pending[topic] = wanted
        if wake:
            self._wake()

    def _wake(self) -> None:
        # A full buffer already wakes the thread; a closed one means it has ended.
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"\0")

    # -- the subscriber's thread -----------------------------------------------------------

    def _run(self) -> None:
        retries = 0
        try:
            while not self._stopping.is_set():
                try:
                    connection = self._client.connection_pool.get_connection()
                except CONNECTION_ERRORS as exc:
                    log.debug("%s cannot reach Redis: %s", self.name, exc)
                else:
                    retries = 0
                    self._serve_and_close(connection)
                if not self._stopping.is_set():
                    self._stopping.wait(pause(self._backoff, retries))
                    retries += 1
        finally:
            self._close()

    def _serve_and_close(self, connection: Connection) -> None:
        try:
            self._serve(connection)
        except CONNECTION_ERRORS as exc:
            self._lost(f"{type(exc).__name__}: {exc}")
        except Exception:
            log.exception("%s failed; reconnecting", self.name)
            self._lost("unexpected error")
        finally:
            self.connected = False
            connection.disconnect()
            self._client.connection_pool.release(connection)

    def _lost(self, reason: str) -> None:
        with self._cond:
            self._confirmed.clear()
        self.reconnects += 1
        self._catch_up_due = True
        log.warning("%s lost its Redis connection (%s); reconnecting", self.name, reason)

    def _serve(self, connection: Connection) -> None:
        """Keep ``connection`` subscribed to what is wanted and hand on what arrives,
        until stop() or an error."""
        with self._cond:
            self._pending = dict.fromkeys(self._wanted, True)
        self._asked, self._unconfirmed = set(), {}
        self.connected = True
        interval = self._health_check_interval
        heard, pinged = time.monotonic(), None
        poller = select.poll()
        poller.register(self._wake_reader, select.POLLIN)
        poller.register(connection._sock, select.POLLIN)  # type: ignore[arg-type]
        while not self._stopping.is_set():
            self._apply_changes(connection)
            if self._catch_up_due and not self._unconfirmed:
                self._catch_up_due = False
                if self._on_reconnect is not None:
                    self._call(self._on_reconnect)
            deadline = (heard if pinged is None else pinged) + interval
            if self._wait(connection, poller, deadline - time.monotonic()):
                self._handle(connection.read_response())
                heard, pinged = time.monotonic(), None
            elif time.monotonic() < deadline:
                continue  # woken: a change, or stop()
            elif pinged is None:
                connection.send_command("PING", _PING, check_health=False)
                pinged = time.monotonic()
            else:
                raise redis.exceptions.ConnectionError(f"no answer to PING within {interval}s")

    def _wait(self, connection: Connection, poller: select.poll, timeout: float) -> bool:
        """Whether a reply can be read; False when woken or ``timeout`` passed first."""
        if connection.can_read(0):  # a reply may already sit in redis-py's buffer
            return True
        ready = {fd for fd, _ in poller.poll(max(timeout, 0.0) * 1000)}
        wake_fd = self._wake_reader.fileno()
        if wake_fd in ready:
            with contextlib.suppress(BlockingIOError):
                while self._wake_reader.recv(4096):
                    pass
        return bool(ready - {wake_fd})

    def _apply_changes(self, connection: Connection) -> None:
        """Send what changed since the last call, in batches, in one write."""
        with self._cond:
            if not self._pending:
                return
            changes, self._pending = self._pending, {}
            dropped = {t for t, wanted in changes.items() if not wanted and t in self._asked}
            self._confirmed -= dropped
        added = {t for t, wanted in changes.items() if wanted and t not in self._asked}
        self._asked = (self._asked | added) - dropped
        for topic in added:
            self._unconfirmed[topic] = self._unconfirmed.get(topic, 0) + 1
        commands = [
            *_commands(_SUBSCRIBE, added),
            *_commands(_UNSUBSCRIBE, dropped),
        ]
        if commands:
            connection.send_packed_command(connection.pack_commands(commands), check_health=False)

    def _handle(self, reply: Any) -> None:
        if not isinstance(reply, list):
            return  # PING's answer while nothing is subscribed
        kind = reply[0]
        if kind == "message":
            self.messages += 1
            self._call(self._on_message, reply[1], False, reply[2])
        elif kind == "pmessage":
            self.messages += 1
            self._call(self._on_message, reply[1], True, reply[3])
        elif kind in ("subscribe", "psubscribe"):
            self._confirm((reply[1], kind == "psubscribe"))

    def _confirm(self, topic: Topic) -> None:
        # A topic dropped and asked again has two SUBSCRIBEs in flight: only the last
        # confirmation counts, the first may precede the UNSUBSCRIBE between them.
        left = self._unconfirmed.pop(topic, 1) - 1
        if left > 0:
            self._unconfirmed[topic] = left
            return
        if topic not in self._asked:
            return
        with self._cond:
            self._confirmed.add(topic)
            self._cond.notify_all()
        if self._on_confirmed is not None:
            self._call(self._on_confirmed, *topic)

    def _call(self, callback: Callable[..., object], *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("%s: callback %r failed", self.name, callback)

    def _close(self) -> None:
        self._wake_reader.close()
        self._wake_writer.close()
        self._client.close()


def _commands(verbs: dict[bool, str], topics: Iterable[Topic]) -> Iterator[tuple[str, ...]]:
    """``verbs``' commands for ``topics``, channels and patterns apart, ``BATCH`` names each."""
    for pattern, verb in verbs.items():
        names = sorted(name for name, is_pattern in topics if is_pattern is pattern)
        for start in range(0, len(names), BATCH):
            yield (verb, *names[start : start + BATCH])
