"""The hub: this gateway process's sessions and connections, and where messages go.

It owns the process-wide parts every connection shares: the one Pub/Sub connection
(``Fanout``), the session store, the dispatcher's thread pool, the counters. A session
channel's message goes to the connections of that session here (through the session's
ordering rule); a meeting channel's event is framed once and pushed to every connection
that subscribed to it, encoded once as a WebSocket frame for all of them.

Two loops keep sessions honest: a keeper renews the TTL of sessions that still have a
connection (so only abandoned ones expire), and after a Redis outage a catch-up reads
the status of every unfinished task of the sessions here and sends the results that
Pub/Sub dropped meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from typing import Any

import redis.asyncio as aioredis

from meetingtasks.base import frames
from meetingtasks.base.keys import Keys, get_keys
from meetingtasks.errors import ProtocolError
from meetingtasks.events import EventBusConfig, meeting_channel
from meetingtasks.events.config import DeliveryMode
from meetingtasks.gateway import protocol as p
from meetingtasks.gateway.auth import Principal
from meetingtasks.gateway.config import GatewayConfig
from meetingtasks.gateway.counters import GatewayCounters
from meetingtasks.gateway.fanout import Fanout
from meetingtasks.gateway.guard import ClientLimits
from meetingtasks.gateway.session import Member, Session
from meetingtasks.gateway.sessions_store import SessionStore
from meetingtasks.gateway.tasks import UNREACHABLE, ClientTasks
from meetingtasks.gateway.ws_protocol import text_frame
from meetingtasks.store import sentinel

log = logging.getLogger(__name__)

#: Seconds a new session waits for Redis to confirm its channel subscription.
SUBSCRIBE_TIMEOUT = 5.0
#: Task statuses read per round trip by the catch-up.
CATCH_UP_BATCH = 500
#: Redis connections of the hub's own commands (sessions); more callers wait their turn.
REDIS_CONNECTIONS = 16


def async_client(url: str) -> aioredis.Redis:
    """The gateway's asyncio client: a bounded, waiting pool; behind Sentinel, redis-py's
    sentinel pool (unbounded: it has no waiting variant) of whichever server is primary."""
    if sentinel.is_sentinel(url):
        return sentinel.async_primary_client(url, decode_responses=True)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=REDIS_CONNECTIONS, decode_responses=True
    )
    return aioredis.Redis(connection_pool=pool)


class Hub:
    def __init__(self, config: GatewayConfig, keys: Keys | None = None) -> None:
        self.config = config
        self.keys = keys or get_keys()
        self.counters = GatewayCounters()
        self.limits = ClientLimits(
            config.max_connections_per_user,
            config.max_connections_per_address,
            config.max_sessions_per_user,
            config.user_submit_rate,
            config.user_submit_burst,
        )
        self.sessions: dict[str, Session] = {}
        #: Redis channel of a meeting -> connections subscribed to it here.
        self.meetings: dict[str, set[Member]] = {}
        self.redis = async_client(config.redis_url)
        self.store = SessionStore(self.redis, self.keys, config.idle_timeout)
        self.tasks = ClientTasks(config.dispatch_threads)
        self.fanout = Fanout(config.redis_url, self.deliver, self.catch_up)
        self._session_prefix = self.keys.session_channel("")
        self._keeper: asyncio.Task[None] | None = None
        #: Sessions whose last connection here ended since the keeper last ran.
        self._left: set[str] = set()
        self._someone_left = asyncio.Event()

    async def start(self) -> None:
        await self.fanout.start()
        self._keeper = asyncio.create_task(self._keep(), name="gateway-session-keeper")

    async def stop(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        with contextlib.suppress(*UNREACHABLE):
            await self.store.touch(self._left)  # their idle time starts now, not later
        await self.fanout.stop()
        await self.redis.aclose()
        self.tasks.close()

    def stats(self) -> dict[str, Any]:
        return {
            **self.counters.snapshot(),
            "process": os.getpid(),
            "max_connections": self.config.max_connections,
            "sessions": len(self.sessions),
            "meeting_channels": len(self.meetings),
            "fanout": self.fanout.stats(),
        }

    # -- sessions ------------------------------------------------------------------------

    async def open_session(
        self, connection: Member, principal: Principal, wanted: str | None
    ) -> str:
        """Resume session ``wanted`` of this user, or start one, as ``connection``'s;
        returns the ``session`` frame. A session that cannot be resumed is refused with an
        error frame first, and a new one starts. Raises UNREACHABLE errors."""
        task_ids = await self.store.resume(wanted, principal.user_id) if wanted else None
        if wanted is not None and task_ids is not None:
            session_id = wanted
        else:
            if wanted:
                connection.error(
                    p.SESSION_NOT_FOUND,
                    f"no session {wanted[:40]!r} of yours: it expired or never existed; "
                    "a new session starts",
                )
            mine = sum(1 for s in self.sessions.values() if s.user_id == principal.user_id)
            refusal = self.limits.new_session(mine)
            if refusal is not None:
                raise ProtocolError(*refusal)
            session_id = await self.store.create(principal.user_id)
        session = self.sessions.get(session_id)
        fresh = session is None
        if session is None:
            session = Session(
                session_id,
                principal.user_id,
                self.config.max_tasks,
                self.config.submit_rate,
                self.config.submit_burst,
                time.monotonic(),
            )
            self.sessions[session_id] = session
            self.fanout.want(self.keys.session_channel(session_id))
        session.members.append(connection)
        connection.session = session  # from here on, leave() undoes all this
        if fresh:
            await self.fanout.ready(self.keys.session_channel(session_id), SUBSCRIBE_TIMEOUT)
        listing = await self._listing(session, task_ids or [])
        limits = self.config.client_limits()
        resumed = task_ids is not None
        return frames.session(
            session_id, principal.user_id, resumed, listing, limits, principal.expires_at
        )

    async def _listing(self, session: Session, task_ids: list[str]) -> list[dict[str, Any]]:
        """The status of a resumed session's tasks; the unfinished ones count again."""
        listing: list[dict[str, Any]] = []
        results = await self.tasks.statuses(task_ids) if task_ids else []
        for task_id, result in zip(task_ids, results, strict=True):
            entry = {"task_id": task_id, "status": result.status.value if result else "unknown"}
            if result is not None and result.request_id is not None:
                entry["request_id"] = result.request_id
            listing.append(entry)
            if result is not None and not result.done:
                session.active.add(task_id)
        return listing

    def leave(self, connection: Member) -> None:
        """A connection ended: it leaves its meeting channels and its session; a session
        with no connection left here is dropped, and its Redis TTL runs from now."""
        for channel in connection.channels or ():
            self._unsubscribe(connection, channel)
        session = connection.session
        if session is None or connection not in session.members:
            return
        session.members.remove(connection)
        if not session.members:
            del self.sessions[session.id]
            self.fanout.drop(self.keys.session_channel(session.id))
            self._left.add(session.id)
            self._someone_left.set()

    # -- meeting events ------------------------------------------------------------------

    def revoke_channels(self, connection: Member, principal: Principal) -> list[str]:
        """After a token refresh: drop the meeting channels the new token no longer
        grants; the meeting channels (``meeting.<id>``) dropped."""
        dropped = []
        prefix = self.keys.event_channel("")
        for redis_channel in list(connection.channels or ()):
            channel = redis_channel[len(prefix) :]
            if not principal.allows(channel.removeprefix("meeting.")):
                self.unsubscribe(connection, channel)
                dropped.append(channel)
        return dropped

    async def subscribe(
        self, connection: Member, principal: Principal, channel: str
    ) -> dict[str, Any]:
        """Follow a meeting's events; returns the meeting's state as it stands once they
        flow (so no change falls between the two); ProtocolError if the token does not
        grant it."""
        meeting_id = channel.removeprefix("meeting.")
        if not channel.startswith("meeting.") or not principal.allows(meeting_id):
            raise ProtocolError(
                p.CHANNEL_NOT_ALLOWED,
                f"you may subscribe to meeting.<id> for the meetings your token grants "
                f"({', '.join(sorted(principal.meetings)) or 'none'}), not {channel!r}",
            )
        if EventBusConfig().mode_of(meeting_channel(meeting_id)) is DeliveryMode.DURABLE:
            raise ProtocolError(
                p.CHANNEL_NOT_ALLOWED,
                f"{channel!r} is a durable (stream) channel: the gateway forwards Pub/Sub "
                "meeting channels only",
            )
        redis_channel = self.keys.event_channel(channel)
        members = self.meetings.setdefault(redis_channel, set())
        members.add(connection)
        if connection.channels is None:
            connection.channels = set()
        connection.channels.add(redis_channel)
        self.fanout.want(redis_channel)
        await self.fanout.ready(redis_channel, SUBSCRIBE_TIMEOUT)
        return await self.meeting_state(meeting_id)

    async def meeting_state(self, meeting_id: str) -> dict[str, Any]:
        """Who is in a meeting and its live streams, as the meeting and media tasks keep
        them (``tasks/meeting.py``, ``tasks/media.py``): what a late joiner needs."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.smembers(self.keys.participants(meeting_id))
            pipe.hgetall(self.keys.streams(meeting_id))
            participants, streams = await pipe.execute()
        live: dict[str, Any] = {}
        for stream_id, description in streams.items():
            with contextlib.suppress(ValueError):
                live[stream_id] = json.loads(description)
        return {"participants": sorted(participants), "streams": live}

    def unsubscribe(self, connection: Member, channel: str) -> None:
        redis_channel = self.keys.event_channel(channel)
        if connection.channels and redis_channel in connection.channels:
            connection.channels.discard(redis_channel)
            self._unsubscribe(connection, redis_channel)

    def _unsubscribe(self, connection: Member, redis_channel: str) -> None:
        members = self.meetings.get(redis_channel)
        if members is None:
            return
        members.discard(connection)
        if not members:
            del self.meetings[redis_channel]
            self.fanout.drop(redis_channel)

    # -- from Redis ------------------------------------------------------------------------

    def deliver(self, channel: str, data: str) -> None:
        """One Pub/Sub message: a session's frame, or a meeting's event."""
        if channel.startswith(self._session_prefix):
            session = self.sessions.get(channel[len(self._session_prefix) :])
            if session is None:
                return
            try:
                frame = json.loads(data)
                task_id, op = frame.get("task_id"), frame.get("op")
            except (ValueError, AttributeError):
                log.warning("dropped a frame that is not a JSON object on %s", channel)
                return
            if session.route(data, task_id, op):
                for member in session.members:
                    member.push(data)
            return
        members = self.meetings.get(channel)
        if members:
            try:
                json.loads(data)
            except ValueError:
                log.warning("dropped an event that is not JSON on %s", channel)
                return
            frame = frames.event(channel[len(self.keys.event_channel("")) :], data)
            wire = text_frame(frame)  # encoded once for everyone
            for member in list(members):
                member.push(frame, wire)

    async def catch_up(self) -> None:
        """After a Redis outage: results of this process's unfinished tasks that were
        published while the connection was down, read from their status."""
        pending = [(s, t) for s in self.sessions.values() for t in list(s.active)]
        for start in range(0, len(pending), CATCH_UP_BATCH):
            batch = pending[start : start + CATCH_UP_BATCH]
            try:
                results = await self.tasks.statuses([task_id for _, task_id in batch])
            except ProtocolError:
                return  # Redis went away again: the next reconnect catches up
            for (session, task_id), result in zip(batch, results, strict=True):
                if result is None or not result.done or task_id not in session.active:
                    continue
                frame = frames.task_result(
                    task_id, result.status.value, result.result, result.error or "",
                    result.request_id,
                )  # fmt: skip
                if session.route(frame, task_id, "result"):
                    for member in session.members:
                        member.push(frame)

    async def _keep(self) -> None:
        """Renew the TTL of every session with a connection, a few times per timeout,
        and of each session whose last connection left (its idle time starts then)."""
        interval = max(0.2, self.config.idle_timeout / 3)
        renew_at = time.monotonic() + interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._someone_left.wait(), renew_at - time.monotonic())
            self._someone_left.clear()
            session_ids, self._left = self._left, set()
            if time.monotonic() >= renew_at:
                session_ids.update(self.sessions)
                renew_at = time.monotonic() + interval
            try:
                await self.store.touch(session_ids)
            except UNREACHABLE as exc:
                log.warning("could not renew client sessions in Redis: %s", exc)
