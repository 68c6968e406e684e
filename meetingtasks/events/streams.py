"""The durable side of the EventBus: one consumer of one consumer group, on its own thread.

Events of a durable channel are stream entries (XADD, MAXLEN ~). Each service reads
through its consumer group, so a service that was down resumes from the group's position
and gets what it missed (as far as the bounded stream still holds it).

- An entry is acknowledged (XACK) only after its handler succeeded; a failed one stays
  pending and is tried again once it has been idle ``claim_idle`` seconds.
- Entries left pending by a consumer that died are taken over (XAUTOCLAIM) by a live
  consumer of the group once idle ``claim_idle`` seconds.
- An entry delivered more than ``max_deliveries`` times is acknowledged without running
  again and counted dead, so a poison event cannot loop forever.
- Delivery is at least once: a consumer that dies between handler and XACK causes a
  second delivery; handlers of durable channels should be idempotent (Event.id helps).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from functools import partial
from typing import Any, cast

import redis

from meetingtasks.errors import InvalidEvent
from meetingtasks.events.config import EventBusConfig
from meetingtasks.events.counters import Counters
from meetingtasks.events.delivery import HandlerPool, Subscription
from meetingtasks.events.envelope import Event
from meetingtasks.store.clients import CONNECTION_ERRORS, pause

log = logging.getLogger(__name__)

#: The stream entry field holding the event's JSON.
FIELD = "event"

#: XREADGROUP's RESP2 reply: [[stream, [(entry_id, {field: value}), ...]]]; empty or None
#: when BLOCK timed out.
_ReadReply = list[tuple[str, list[tuple[str, dict[str, str]]]]] | None


def append(client: redis.Redis, stream: str, data: str, maxlen: int) -> None:
    """Add one event to a channel's stream, trimming it to about ``maxlen`` entries (MAXLEN ~
    trims whole internal nodes, cheaply, so the length may exceed maxlen a little)."""
    client.xadd(stream, {FIELD: data}, maxlen=maxlen, approximate=True)


class StreamConsumer:
    def __init__(
        self,
        subscription: Subscription,
        stream: str,
        *,
        reader: redis.Redis,
        writer: redis.Redis,
        pool: HandlerPool,
        config: EventBusConfig,
        generated_name: bool,
    ) -> None:
        assert subscription.group and subscription.consumer
        self.subscription = subscription
        self.stream = stream
        self.group = subscription.group
        self.name = subscription.consumer
        self._generated_name = generated_name
        self._reader = reader
        self._writer = writer
        self._pool = pool
        self._config = config
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._in_flight: set[str] = set()
        self._in_flight_lock = threading.Lock()
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self.connected = False
        self.counters = Counters("read", "claimed", "acked", "dead", "invalid", "reconnects")

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"mt-event-stream-{self.stream}", daemon=True
        )
        self._thread.start()

    def wait_ready(self, timeout: float) -> bool:
        """True once the group exists, so events published from now on reach it."""
        return self._ready.wait(timeout)

    def stop_reading(self) -> None:
        """Stop taking new entries; what was handed to handlers still finishes."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def retire(self) -> None:
        """After the pool drained: drop a generated consumer name with nothing pending, so
        restarts do not pile up dead consumers in XINFO (a named one is expected back)."""
        if not self._generated_name:
            return
        try:
            pending = self._writer.xpending_range(
                self.stream, self.group, "-", "+", 1, consumername=self.name
            )
            if not pending:
                self._writer.xgroup_delconsumer(self.stream, self.group, self.name)
        except redis.exceptions.RedisError as exc:
            log.info("could not remove consumer %s of %s: %s", self.name, self.stream, exc)

    def stats(self) -> dict[str, Any]:
        return {
            "channel": self.subscription.channel,
            "stream": self.stream,
            "group": self.group,
            "consumer": self.name,
            "connected": self.connected,
            **self.counters.snapshot(),
        }

    # -- the consumer thread ---------------------------------------------------------------

    def _run(self) -> None:
        backoff = self._config.reconnect_backoff()
        retries = 0
        while not self._stopping.is_set():
            try:
                if not self._ready.is_set():
                    self._create_group()
                if time.monotonic() >= self._next_claim:
                    self._claim()
                self._read()
                self.connected = True
                retries = 0
                continue
            except CONNECTION_ERRORS as exc:
                if self.connected:
                    log.warning("event stream %s lost Redis (%s); reconnecting", self.stream, exc)
                self.counters.add("reconnects")
            except redis.exceptions.ResponseError as exc:
                if not str(exc).startswith("NOGROUP"):
                    log.error("event stream %s: %s", self.stream, exc)
                # The stream or group vanished (deleted, or Redis lost its data): recreate.
                self._ready.clear()
            except Exception:
                log.exception("event stream consumer of %s failed; retrying", self.stream)
            self.connected = False
            self._stopping.wait(pause(backoff, retries))
            retries += 1

    def _create_group(self) -> None:
        try:
            self._reader.xgroup_create(
                self.stream, self.group, id=self._config.group_start, mkstream=True
            )
        except redis.exceptions.ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise
        self._ready.set()

    def _read(self) -> None:
        reply = self._reader.xreadgroup(
            self.group,
            self.name,
            {self.stream: ">"},
            count=self._config.read_count,
            block=int(self._config.poll_interval * 1000),
        )
        for _stream, entries in cast(_ReadReply, reply) or []:
            for entry_id, fields in entries:
                self.counters.add("read")
                self._deliver(entry_id, fields)

    def _claim(self) -> None:
        """Take over entries idle past claim_idle (a dead consumer's, or our own failures)."""
        next_cursor, claimed, *_deleted = self._reader.xautoclaim(
            self.stream,
            self.group,
            self.name,
            min_idle_time=int(self._config.claim_idle * 1000),
            start_id=self._claim_cursor,
            count=self._config.read_count,
        )
        self._claim_cursor = next_cursor
        if next_cursor == "0-0":  # scanned the whole pending list: rest until next round
            self._next_claim = time.monotonic() + self._config.claim_interval
        with self._in_flight_lock:
            # Redis < 7 reports trimmed entries as (None, None); ours still running are skipped.
            entries = [(i, f) for i, f in claimed if i is not None and i not in self._in_flight]
        if not entries:
            return
        pipe = self._reader.pipeline(transaction=False)
        for entry_id, _fields in entries:
            pipe.xpending_range(self.stream, self.group, entry_id, entry_id, 1, self.name)
        for (entry_id, fields), pending in zip(entries, pipe.execute(), strict=True):
            self.counters.add("claimed")
            deliveries = pending[0]["times_delivered"] if pending else 1
            if deliveries > self._config.max_deliveries:
                self._writer.xack(self.stream, self.group, entry_id)
                self.counters.add("dead")
                log.error(
                    "event stream %s: entry %s failed %d deliveries; dropped as dead: %s",
                    self.stream, entry_id, deliveries - 1, str(fields)[:500],
                )  # fmt: skip
            else:
                self._deliver(entry_id, fields)

    def _deliver(self, entry_id: str, fields: dict[str, str]) -> None:
        try:
            event = Event.from_json(fields.get(FIELD, ""), self._config.max_event_bytes)
        except InvalidEvent as exc:
            # It can never succeed: acknowledge it so it does not come back.
            self._writer.xack(self.stream, self.group, entry_id)
            self.counters.add("invalid")
            log.warning("event stream %s: entry %s dropped: %s", self.stream, entry_id, exc)
            return
        with self._in_flight_lock:
            self._in_flight.add(entry_id)
        if not self._pool.submit(partial(self._handle, entry_id, event), self._stopping):
            with self._in_flight_lock:  # stopping: left pending, claimed later
                self._in_flight.discard(entry_id)

    def _handle(self, entry_id: str, event: Event) -> None:
        try:
            if self.subscription.run(event):
                self._writer.xack(self.stream, self.group, entry_id)
                self.counters.add("acked")
        except redis.exceptions.RedisError as exc:
            log.warning(
                "event stream %s: could not acknowledge %s (%s); it will be delivered again",
                self.stream, entry_id, exc,
            )  # fmt: skip
        finally:
            with self._in_flight_lock:
                self._in_flight.discard(entry_id)


def consumer_name() -> str:
    """A consumer name unique to this process and subscription, readable in XINFO."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
