"""Redis behind Sentinel: every client of ours connects to whichever server is primary.

A ``sentinel://`` URL names the sentinels, as kombu and Celery write it::

    sentinel://[:PASSWORD@]HOST:PORT[/DB][;sentinel://HOST:PORT...]

The password and database are the Redis servers'; the primary's name is
``MEETINGTASKS_REDIS_SENTINEL_MASTER`` (``mymaster``) and the sentinels' own password,
if they have one, ``MEETINGTASKS_REDIS_SENTINEL_PASSWORD``.

redis-py asks the sentinels for the primary's address only in ``connect()``, but its
reconnects after a dropped connection go through ``connect_check_health()``, which keeps
the old address (redis-py issue #3874, open in 8.x): a client then retries a dead
primary until its retries run out, and a failover costs every caller its whole retry
budget. ``PrimaryConnection`` asks on every connect. It is the one class our clients,
kombu's channels and Celery's result backend connect with (``celery_ext`` passes it to
kombu and Celery); ``tests/test_private_api.py`` checks that the redis-py names it
relies on still exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.asyncio import sentinel as async_sentinel
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

from meetingtasks.base.settings import get_settings
from meetingtasks.errors import ConfigurationError

SCHEME = "sentinel"
DEFAULT_PORT = 26379


def is_sentinel(url: str) -> bool:
    return url.startswith(f"{SCHEME}://")


@dataclass(frozen=True)
class SentinelTarget:
    """What a sentinel:// URL names: the sentinels, and the servers' db and credentials."""

    sentinels: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> SentinelTarget:
        sentinels: list[tuple[str, int]] = []
        db, username, password = 0, None, None
        for chunk in filter(None, (part.strip() for part in url.split(";"))):
            parts = urlsplit(chunk)
            try:
                port = parts.port or DEFAULT_PORT
            except ValueError:
                port = None
            if parts.scheme != SCHEME or not parts.hostname or port is None:
                raise ConfigurationError(
                    f"Redis URL {chunk!r} is not a sentinel address: write "
                    "sentinel://[:PASSWORD@]HOST:PORT[/DB][;sentinel://HOST:PORT...]"
                )
            sentinels.append((parts.hostname, port))
            if len(sentinels) == 1:
                path = parts.path.strip("/")
                if path and not path.isdigit():
                    raise ConfigurationError(f"the database in {chunk!r} must be a number")
                db = int(path or 0)
                username = unquote(parts.username) if parts.username else None
                password = unquote(parts.password) if parts.password else None
        if not sentinels:
            raise ConfigurationError("a sentinel:// URL needs at least one HOST:PORT")
        return cls(tuple(sentinels), db, username, password)

    def server_options(self) -> dict[str, Any]:
        """Connection options of the Redis servers (not of the sentinels)."""
        options: dict[str, Any] = {"db": self.db}
        if self.username:
            options["username"] = self.username
        if self.password:
            options["password"] = self.password
        return options


def sentinel_options() -> dict[str, Any]:
    """The sentinels' own connection options (their password, short timeouts)."""
    password = get_settings().redis_sentinel_password
    options: dict[str, Any] = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
    if password:
        options["password"] = password
    return options


def master_name() -> str:
    return get_settings().redis_sentinel_master


class PrimaryConnection(SentinelManagedConnection):
    """A connection that asks the sentinels where the primary is each time it connects."""

    def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if self._sock:
            return
        if self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        super().connect_check_health(check_health=check_health, retry_socket_connect=False)


class BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """Sentinel's pool with the bounded, waiting behaviour of a BlockingConnectionPool."""


def client_for(url: str, *, blocking: bool = False, **options: Any) -> redis.Redis:
    """A client of the Redis ``url`` names: the primary of a sentinel:// URL's sentinels,
    else the server itself; ``options`` as for redis.Redis, ``blocking`` for a bounded
    pool that waits for a free connection (``max_connections``, ``timeout``)."""
    if is_sentinel(url):
        return primary_client(url, blocking=blocking, **options)
    if blocking:
        return redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(url, **options))
    return redis.Redis.from_url(url, **options)


def primary_client(url: str, *, blocking: bool = False, **options: Any) -> redis.Redis:
    """A client of the primary the sentinels of ``url`` name; ``options`` as for
    redis.Redis (``max_connections`` and ``timeout`` with ``blocking``)."""
    target = SentinelTarget.parse(url)
    manager = Sentinel(target.sentinels, sentinel_kwargs=sentinel_options())
    pool_class = BlockingSentinelPool if blocking else SentinelConnectionPool
    return manager.master_for(
        master_name(),
        connection_pool_class=pool_class,
        connection_class=PrimaryConnection,
        **target.server_options(),
        **options,
    )


class AsyncPrimaryConnection(async_sentinel.SentinelManagedConnection):
    """The asyncio twin of PrimaryConnection (the same redis-py issue)."""

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if self.is_connected:
            return
        if self.connection_pool.is_master:
            self.host, self.port = await self.connection_pool.get_master_address()
        await super().connect_check_health(check_health=check_health, retry_socket_connect=False)


def async_primary_client(url: str, **options: Any) -> Any:
    """An asyncio client of the primary (``redis.asyncio.Redis``)."""
    target = SentinelTarget.parse(url)
    manager = async_sentinel.Sentinel(target.sentinels, sentinel_kwargs=sentinel_options())
    return manager.master_for(
        master_name(),
        connection_class=AsyncPrimaryConnection,
        **target.server_options(),
        **options,
    )
