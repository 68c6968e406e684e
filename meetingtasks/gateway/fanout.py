"""One Redis Pub/Sub connection per gateway process, for all of its clients.

Workers publish each session's frames on the session's channel, services publish
meeting events on the meeting's channel. A connection per client would cost Redis a
client and this process a socket and a task for every idle user; instead the process
subscribes on one connection to the channels its clients need right now (``want`` /
``drop``, reference counting is the caller's) and hands each message to ``deliver``.

Two tasks share the connection: a reader, and a writer that turns the wanted set into
SUBSCRIBE/UNSUBSCRIBE commands in batches (a thousand clients connecting at once cost a
few commands). ``ready(channel)`` returns once Redis confirmed the subscription, so a
session's submits start only when their results cannot be missed.

When Redis goes away both tasks end, and the connection is rebuilt with every wanted
channel (backing off while Redis is down); ``on_reconnect`` then runs, for the caller to
catch up on what was published in between (Pub/Sub does not keep it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

log = logging.getLogger(__name__)

#: Channels per SUBSCRIBE or UNSUBSCRIBE command.
BATCH = 500
#: Longest pause between two attempts to reach Redis again.
MAX_BACKOFF = 2.0


class Fanout:
    def __init__(
        self,
        redis_url: str,
        deliver: Callable[[str, str], None],
        on_reconnect: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        # No retries inside redis-py: a broken connection must end both tasks, so the
        # rebuild below resubscribes everything (a silent reconnect would lose them).
        self._client = aioredis.Redis.from_url(
            redis_url, decode_responses=True, retry=Retry(NoBackoff(), 0)
        )
        self._deliver = deliver
        self._on_reconnect = on_reconnect
        self._wanted: set[str] = set()
        self._subscribed: set[str] = set()
        #: Per channel, SUBSCRIBE commands sent and not confirmed yet.
        self._unconfirmed: dict[str, int] = {}
        self._confirmed: set[str] = set()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._dirty = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._catching_up: asyncio.Task[None] | None = None
        self.reconnects = 0
        self.messages = 0

    async def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="gateway-fanout")

    async def stop(self) -> None:
        for task in (self._runner, self._catching_up):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._client.aclose()

    def want(self, channel: str) -> None:
        self._wanted.add(channel)
        self._dirty.set()

    def drop(self, channel: str) -> None:
        self._wanted.discard(channel)
        self._dirty.set()

    async def ready(self, channel: str, timeout: float) -> bool:
        """Wait until ``channel``'s subscription is confirmed; False after ``timeout``
        (Redis is away: the rebuild subscribes it, and ``on_reconnect`` catches up)."""
        if channel in self._confirmed:
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._waiters.get(channel, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiters.pop(channel, None)

    def stats(self) -> dict[str, Any]:
        return {
            "channels": len(self._subscribed),
            "messages": self.messages,
            "reconnects": self.reconnects,
        }

    async def _run(self) -> None:
        backoff = 0.05
        connected_before = False
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.connect()
                self._reset()
                catch_up, connected_before, backoff = connected_before, True, 0.05
                if catch_up:
                    self.reconnects += 1
                    log.warning("gateway fan-out reconnected to Redis")
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._read(pubsub, catch_up))
                    group.create_task(self._write(pubsub))
            except* (RedisError, OSError) as errors:
                log.warning("gateway fan-out lost Redis (%s); reconnecting", errors.exceptions[0])
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    def _reset(self) -> None:
        self._subscribed.clear()
        self._unconfirmed.clear()
        self._confirmed.clear()
        self._dirty.set()

    async def _write(self, pubsub: Any) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            add = sorted(self._wanted - self._subscribed)
            drop = sorted(self._subscribed - self._wanted)
            for channel in add:  # all counted before any is sent: see _read's catch-up
                self._unconfirmed[channel] = self._unconfirmed.get(channel, 0) + 1
                self._confirmed.discard(channel)
            self._subscribed.update(add)
            for start in range(0, len(add), BATCH):
                await pubsub.execute_command("SUBSCRIBE", *add[start : start + BATCH])
            for start in range(0, len(drop), BATCH):
                chunk = drop[start : start + BATCH]
                self._subscribed.difference_update(chunk)
                self._confirmed.difference_update(chunk)
                await pubsub.execute_command("UNSUBSCRIBE", *chunk)

    async def _read(self, pubsub: Any, catch_up: bool) -> None:
        while True:
            message = await pubsub.get_message(timeout=None)
            if message is None:
                continue
            kind, channel = message["type"], message["channel"]
            if kind == "message":
                self.messages += 1
                try:
                    self._deliver(channel, message["data"])
                except Exception:
                    log.exception("delivering a message of %s failed", channel)
            elif kind == "subscribe":
                self._confirm(channel)
                if catch_up and not self._unconfirmed:
                    catch_up = False
                    self._catching_up = asyncio.create_task(self._catch_up())

    async def _catch_up(self) -> None:
        if self._on_reconnect is not None:
            try:
                await self._on_reconnect()
            except Exception:
                log.exception("catching up after a Redis reconnect failed")

    def _confirm(self, channel: str) -> None:
        left = self._unconfirmed.get(channel, 0) - 1
        if left > 0:
            self._unconfirmed[channel] = left
            return
        self._unconfirmed.pop(channel, None)
        if channel in self._subscribed:
            self._confirmed.add(channel)
            for waiter in self._waiters.pop(channel, []):
                if not waiter.done():
                    waiter.set_result(None)
