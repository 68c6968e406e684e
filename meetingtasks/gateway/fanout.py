"""One Redis Pub/Sub connection per gateway process, for all of its clients.

Workers publish each session's frames on the session's channel, services publish
meeting events on the meeting's channel. A connection per client would cost Redis a
client and this process a socket and a task for every idle user; instead the process
subscribes on one connection to the channels its clients need right now (``want`` /
``drop``, reference counting is the caller's) and hands each message to ``deliver`` on
the event loop. A meeting's event is one Redis message however many clients follow it.

The connection is the store's ``Subscriber``, on its own thread: it subscribes in
batches (a thousand clients connecting at once cost a few commands), and after losing
Redis it rebuilds the connection with every wanted channel. ``ready(channel)`` returns
once Redis confirmed the subscription, so a session's submits start only when their
results cannot be missed; ``on_reconnect`` runs once everything is subscribed again,
for the caller to catch up on what was published in between (Pub/Sub does not keep it).

What the thread receives reaches the event loop in bursts: it goes into an inbox, and
one drain is scheduled while none is pending, so a busy second costs a few wake-ups of
the loop, not one per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from redis.backoff import EqualJitterBackoff

from meetingtasks.store.subscriber import Subscriber

log = logging.getLogger(__name__)

#: Pauses between attempts to reach Redis again: from 25-50 ms up to 1-2 s.
RECONNECT_BACKOFF = EqualJitterBackoff(cap=2.0, base=0.05)


class Fanout:
    def __init__(
        self,
        redis_url: str,
        deliver: Callable[[str, str], None],
        on_reconnect: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        self._subscriber = Subscriber(
            redis_url,
            self._received,
            on_confirmed=self._confirmed,
            on_reconnect=self._reconnected,
            backoff=RECONNECT_BACKOFF,
            name="mt-gateway-fanout",
        )
        self._deliver = deliver
        self._on_reconnect = on_reconnect
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        #: (function, arguments) for the event loop to run, in the order they came.
        self._inbox: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self._inbox_lock = threading.Lock()
        self._catching_up: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._subscriber.start()

    async def stop(self) -> None:
        await asyncio.to_thread(self._subscriber.stop)  # it may be connecting: not here
        if self._catching_up is not None:
            self._catching_up.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._catching_up

    def want(self, channel: str) -> None:
        self._subscriber.want(channel)

    def drop(self, channel: str) -> None:
        self._subscriber.drop(channel)

    async def ready(self, channel: str, timeout: float) -> bool:
        """Wait until ``channel``'s subscription is confirmed; False after ``timeout``
        (Redis is away: the rebuild subscribes it, and ``on_reconnect`` catches up)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(waiter)
        try:
            # Checked after the waiter is in place: a confirmation from now on resolves it.
            if not self._subscriber.confirmed(channel):
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
        return self._subscriber.stats()

    # -- on the subscriber's thread ----------------------------------------------------------

    def _received(self, channel: str, _pattern: bool, data: str) -> None:
        self._post(self._deliver_one, channel, data)

    def _confirmed(self, channel: str, _pattern: bool) -> None:
        self._post(self._resolve, channel)

    def _reconnected(self) -> None:
        self._post(self._catch_up)

    def _post(self, function: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None, "start() first"
        with self._inbox_lock:
            self._inbox.append((function, args))
            if len(self._inbox) > 1:
                return  # a drain is scheduled already
        self._loop.call_soon_threadsafe(self._drain)

    # -- on the event loop ------------------------------------------------------------------

    def _drain(self) -> None:
        with self._inbox_lock:
            batch, self._inbox = self._inbox, []
        for function, args in batch:
            function(*args)

    def _deliver_one(self, channel: str, data: str) -> None:
        try:
            self._deliver(channel, data)
        except Exception:
            log.exception("delivering a message of %s failed", channel)

    def _resolve(self, channel: str) -> None:
        if not self._subscriber.confirmed(channel):
            return  # dropped since: the confirmation of its next SUBSCRIBE resolves them
        for waiter in self._waiters.pop(channel, []):
            if not waiter.done():
                waiter.set_result(None)

    def _catch_up(self) -> None:
        if self._on_reconnect is not None:
            self._catching_up = asyncio.create_task(self._run_catch_up(self._on_reconnect))

    async def _run_catch_up(self, on_reconnect: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            await on_reconnect()
        except Exception:
            log.exception("catching up after a Redis reconnect failed")
