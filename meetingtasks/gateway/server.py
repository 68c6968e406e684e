"""The gateway server: one ASGI app, served by uvicorn (``meetingtasks gateway``).

``ws://HOST:PORT/ws`` goes straight to ``Connection`` on raw ASGI messages; every other
path (the HTTP endpoints, the page and JavaScript client of ``web.py``, and the lifespan
that starts and stops the hub) is a Starlette app. The WebSocket path skips Starlette's
routing and middleware on purpose: their coroutine frames and objects stay alive for as
long as a connection does, about 4.5 KB of each idle connection's budget. uvicorn runs
the WebSocket protocol with wsproto, the leanest of its implementations per idle
connection (README: Client gateway, memory).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette

from meetingtasks.base.settings import get_settings
from meetingtasks.errors import ConfigurationError
from meetingtasks.gateway import web
from meetingtasks.gateway.auth import get_secret
from meetingtasks.gateway.config import GatewayConfig
from meetingtasks.gateway.connection import Connection
from meetingtasks.gateway.guard import is_loopback
from meetingtasks.gateway.http import routes
from meetingtasks.gateway.hub import Hub
from meetingtasks.policies.routing import get_route_table
from meetingtasks.store.memory import check_eviction_policy

log = logging.getLogger(__name__)

WS_PATH = "/ws"


class GatewayApp:
    """The ASGI application of one gateway process."""

    def __init__(self, config: GatewayConfig | None = None) -> None:
        self.config = config or GatewayConfig.from_settings()
        self.hub = Hub(self.config)
        self.http = Starlette(routes=routes(self.hub) + web.routes(), lifespan=self._lifespan)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and scope["path"] == WS_PATH:
            await Connection(self.hub, send).serve(scope, receive)
        else:
            await self.http(scope, receive, send)

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # Fail at start, not on the first client, when routes or Redis are wrong (or Redis
        # may evict queues); the secret may come from Redis, a blocking read done once here.
        get_route_table()
        await asyncio.to_thread(check_eviction_policy)
        await asyncio.to_thread(get_secret)
        await self.hub.start()
        log.info("gateway ready")
        try:
            yield
        finally:
            await self.hub.stop()


def serve(host: str, port: int, config: GatewayConfig | None = None) -> None:
    """Run a gateway until SIGINT/SIGTERM (uvicorn closes open sockets with 1012).

    Bound beyond loopback, it refuses to start without ``MEETINGTASKS_SECRET``: the key
    generated otherwise lives in Redis, where anyone who reads Redis could mint tokens."""
    import uvicorn

    public = not is_loopback(host)
    if public and get_settings().secret is None:
        raise ConfigurationError(
            f"the gateway would listen on {host}, beyond loopback, with no MEETINGTASKS_SECRET: "
            "set one (openssl rand -base64 48), the same on every gateway and token minter of "
            "the deployment"
        )
    app = GatewayApp(config or GatewayConfig.from_settings(public=public))
    server_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ws="wsproto",
        ws_max_size=app.config.hard_frame_bytes,
        # Compression would keep a zlib state of over 200 KB per connection, for
        # frames mostly too small to gain from it.
        ws_per_message_deflate=False,
        lifespan="on",
        access_log=False,
        log_level="info",
        backlog=4096,
    )
    logging.getLogger("uvicorn.error").addFilter(_without_handshakes)
    uvicorn.Server(server_config).run()


def _without_handshakes(record: logging.LogRecord) -> bool:
    """uvicorn logs every WebSocket handshake with its URL, a client's token included:
    drop those lines (connections are counted in /stats instead)."""
    return '"WebSocket %s"' not in str(record.msg)
