"""The gateway's Fanout on the store's Subscriber: messages and confirmations reach the
event loop, and a Redis restart ends with a catch-up once everything is subscribed."""

from __future__ import annotations

import asyncio
import threading

from redis import Redis

from meetingtasks.base.settings import get_settings
from meetingtasks.gateway.fanout import Fanout
from meetingtasks.run.embedded_redis import RedisServer
from meetingtasks.store.subscriber import BATCH
from tests.support.events_helpers import WAIT

CHANNELS = [f"fanout:{n}" for n in range(2 * BATCH + 1)]


async def received(messages: list[tuple[str, str]], count: int) -> None:
    async with asyncio.timeout(WAIT):
        while len(messages) < count:
            await asyncio.sleep(0.01)


def test_messages_reach_the_event_loop_once_channels_are_ready(redis: Redis) -> None:
    delivered_on: set[int] = set()
    messages: list[tuple[str, str]] = []

    def deliver(channel: str, data: str) -> None:
        delivered_on.add(threading.get_ident())
        messages.append((channel, data))

    async def scenario() -> None:
        fanout = Fanout(get_settings().redis_url, deliver)
        await fanout.start()
        try:
            for channel in CHANNELS:
                fanout.want(channel)
            assert all(await asyncio.gather(*(fanout.ready(c, WAIT) for c in CHANNELS)))
            for channel in (CHANNELS[0], CHANNELS[-1]):
                await asyncio.to_thread(redis.publish, channel, f"to {channel}")
            await received(messages, 2)
            assert sorted(messages) == sorted((c, f"to {c}") for c in (CHANNELS[0], CHANNELS[-1]))
            assert delivered_on == {threading.get_ident()}  # the loop's thread
            assert fanout.stats()["channels"] == len(CHANNELS)
        finally:
            await fanout.stop()

    asyncio.run(scenario())


def test_a_redis_restart_ends_with_a_catch_up_once_resubscribed(
    redis: Redis, redis_server: RedisServer
) -> None:
    messages: list[tuple[str, str]] = []

    async def scenario() -> None:
        ready_at_catch_up: list[bool] = []
        caught_up = asyncio.Event()

        async def catch_up() -> None:
            ready_at_catch_up.append(await fanout.ready(CHANNELS[-1], 0))
            caught_up.set()

        fanout = Fanout(
            get_settings().redis_url, lambda c, d: messages.append((c, d)), on_reconnect=catch_up
        )
        await fanout.start()
        try:
            for channel in CHANNELS:
                fanout.want(channel)
            assert await fanout.ready(CHANNELS[-1], WAIT)
            await asyncio.to_thread(redis_server.restart)
            async with asyncio.timeout(WAIT):
                await caught_up.wait()
            assert ready_at_catch_up == [True]
            await asyncio.to_thread(redis.publish, CHANNELS[-1], "after the restart")
            await received(messages, 1)
            assert messages == [(CHANNELS[-1], "after the restart")]
            assert fanout.stats()["reconnects"] >= 1
        finally:
            await fanout.stop()

    asyncio.run(scenario())
