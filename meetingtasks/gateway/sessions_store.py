"""Client sessions in Redis, so any gateway process can resume any of them.

A session is a hash (its user, when it began) and a sorted set of the tasks it
submitted (``keys.gateway_session``/``gateway_session_tasks``). Both carry the idle
timeout as TTL, renewed on every submit and, while a connection is open, by the
process holding it (``touch``): a session with no connection and no activity for the
timeout disappears from Redis by itself, whichever process served it last, and even if
that process died.

Only the newest ``MAX_TASKS`` task ids are kept per session: a client fetches recent
results after a reconnect, not its whole history.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterable

import redis.asyncio as aioredis

from meetingtasks.base.keys import Keys

MAX_TASKS = 1000
#: Session ids are 32 hex digits; anything else cannot name one.
SESSION_ID = re.compile(r"^[0-9a-f]{32}$")
#: Sessions whose TTL one pipeline renews.
TOUCH_BATCH = 1000


class SessionStore:
    def __init__(self, client: aioredis.Redis, keys: Keys, idle_timeout: float) -> None:
        self.client = client
        self.keys = keys
        self.ttl_ms = max(1, int(idle_timeout * 1000))

    async def create(self, user_id: str) -> str:
        session_id = secrets.token_hex(16)
        key = self.keys.gateway_session(session_id)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"user": user_id, "created_at": time.time()})
            pipe.pexpire(key, self.ttl_ms)
            await pipe.execute()
        return session_id

    async def resume(self, session_id: str, user_id: str) -> list[str] | None:
        """The task ids (oldest first) of ``user_id``'s session, renewed; None if there is
        no such session of this user (expired, never existed, or someone else's)."""
        if not SESSION_ID.match(session_id):
            return None
        key, tasks = (
            self.keys.gateway_session(session_id),
            self.keys.gateway_session_tasks(session_id),
        )
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hget(key, "user")
            pipe.zrange(tasks, 0, -1)
            pipe.pexpire(key, self.ttl_ms)
            pipe.pexpire(tasks, self.ttl_ms)
            owner, task_ids, *_ = await pipe.execute()
        if owner != user_id:
            return None
        return list(task_ids)

    async def add_task(self, session_id: str, task_id: str) -> None:
        key, tasks = (
            self.keys.gateway_session(session_id),
            self.keys.gateway_session_tasks(session_id),
        )
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(tasks, {task_id: time.time()})
            pipe.zremrangebyrank(tasks, 0, -MAX_TASKS - 1)
            pipe.pexpire(tasks, self.ttl_ms)
            pipe.pexpire(key, self.ttl_ms)
            await pipe.execute()

    async def touch(self, session_ids: Iterable[str]) -> None:
        """Renew the TTL of sessions that still have a connection, in batches."""
        batch: list[str] = []
        for session_id in session_ids:
            batch.append(session_id)
            if len(batch) == TOUCH_BATCH:
                await self._touch(batch)
                batch = []
        if batch:
            await self._touch(batch)

    async def _touch(self, session_ids: list[str]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for session_id in session_ids:
                pipe.pexpire(self.keys.gateway_session(session_id), self.ttl_ms)
                pipe.pexpire(self.keys.gateway_session_tasks(session_id), self.ttl_ms)
            await pipe.execute()
