"""The gateway server: one ASGI app, served by uvicorn (``meetingtasks gateway``).

``ws://HOST:PORT/ws`` goes straight to ``Connection`` on raw ASGI messages; every other
path (the HTTP endpoints, the page and JavaScript client of ``web.py``, and the lifespan
that starts and stops the hub) is a Starlette app. The WebSocket path skips Starlette's
routing and middleware on purpose: their coroutine frames and objects stay alive for as
long as a connection does, about 4.5 KB of each idle connection's budget. uvicorn runs
the WebSocket protocol with wsproto, the leanest of its implementations per idle
connection, through ``ws_protocol.DirectSendWSProtocol``, which lets a broadcast write
one encoded frame to every socket without a coroutine per client (docs/gateway.md,
how it scales).

``workers`` above 1 runs that many gateway processes, each with its own socket bound
with SO_REUSEPORT: the kernel spreads new connections evenly over them, each process
uses a core of its own, and a session resumes on any of them as on any gateway.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import resource
import signal
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from starlette.applications import Starlette

from meetingtasks.base import tracing
from meetingtasks.base.settings import get_settings
from meetingtasks.celery_ext import logs
from meetingtasks.errors import ConfigurationError
from meetingtasks.gateway import web
from meetingtasks.gateway.auth import get_secret
from meetingtasks.gateway.config import GatewayConfig
from meetingtasks.gateway.connection import Connection
from meetingtasks.gateway.guard import connection_cap, is_loopback
from meetingtasks.gateway.http import routes
from meetingtasks.gateway.hub import Hub
from meetingtasks.gateway.ws_protocol import DirectSendWSProtocol
from meetingtasks.policies.routing import get_route_table
from meetingtasks.store.memory import check_eviction_policy

log = logging.getLogger(__name__)

WS_PATH = "/ws"
#: uvicorn's exit status when a server fails to start (its config.STARTUP_FAILURE).
STARTUP_FAILURE = 3


class GatewayApp:
    """The ASGI application of one gateway process."""

    def __init__(self, config: GatewayConfig | None = None) -> None:
        config = config or GatewayConfig.from_settings()
        self.config = replace(config, max_connections=connection_cap(config.max_connections))
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


def serve(
    host: str,
    port: int,
    config: GatewayConfig | None = None,
    workers: int = 1,
    reuse_port: bool = False,
) -> None:
    """Run a gateway until SIGINT/SIGTERM (uvicorn closes open sockets with 1012).

    ``workers`` > 1: that many processes on the port, restarted if one dies.
    ``reuse_port``: bind with SO_REUSEPORT, to share the port with other gateway
    processes started the same way (implied by ``workers``).

    Bound beyond loopback, it refuses to start without ``MEETINGTASKS_SECRET``: the key
    generated otherwise lives in Redis, where anyone who reads Redis could mint tokens."""
    public = not is_loopback(host)
    if public and get_settings().secret is None:
        raise ConfigurationError(
            f"the gateway would listen on {host}, beyond loopback, with no MEETINGTASKS_SECRET: "
            "set one (openssl rand -base64 48), the same on every gateway and token minter of "
            "the deployment"
        )
    config = config or GatewayConfig.from_settings(public=public)
    if workers > 1:
        raise SystemExit(_supervise(host, port, config, workers))
    _serve_process(host, port, config, reuse_port)


def _serve_process(host: str, port: int, config: GatewayConfig, reuse_port: bool) -> None:
    """One gateway process: the ASGI app on uvicorn, until SIGINT/SIGTERM."""
    import uvicorn

    if not logging.getLogger().handlers:  # a worker process of ``_supervise``
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logs.apply()
    _raise_open_files_limit()
    tracing.setup("meetingtasks-gateway")
    app = GatewayApp(config)
    server_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ws=DirectSendWSProtocol,
        # asyncio's own loop: uvloop measured no faster for the fan-out (docs/gateway.md).
        loop="asyncio",
        ws_max_size=app.config.hard_frame_bytes,
        # Compression would keep a zlib state of over 200 KB per connection, for
        # frames mostly too small to gain from it (and the direct send writes raw frames).
        ws_per_message_deflate=False,
        lifespan="on",
        access_log=False,
        log_level="info",
        backlog=4096,
    )
    logging.getLogger("uvicorn.error").addFilter(_without_handshakes)
    sockets = [_shared_socket(host, port)] if reuse_port else None
    server = uvicorn.Server(server_config)
    server.run(sockets=sockets)
    if not server.started:  # uvicorn logged why (Redis, routes, the port)
        raise SystemExit(STARTUP_FAILURE)


def _worker_process(host: str, port: int, config: GatewayConfig) -> None:
    """One of ``_supervise``'s processes."""
    try:
        _serve_process(host, port, config, reuse_port=True)
    except ConfigurationError as exc:
        log.error("%s", exc)
        raise SystemExit(STARTUP_FAILURE) from None


def _shared_socket(host: str, port: int) -> socket.socket:
    """A listening address other processes may bind too (SO_REUSEPORT): the kernel hands
    each new connection to one of them, spread by its addresses."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc}") from exc
    return sock


def _supervise(host: str, port: int, config: GatewayConfig, workers: int) -> int:
    """Keep ``workers`` gateway processes on the port until SIGINT/SIGTERM; a process
    that dies is replaced, one that cannot start stops them all. Returns the exit status."""
    spawn = multiprocessing.get_context("spawn")  # no fork of this process's threads

    def start() -> multiprocessing.process.BaseProcess:
        process = spawn.Process(
            target=_worker_process, args=(host, port, config), name="mt-gateway"
        )
        process.start()
        return process

    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    processes = [start() for _ in range(workers)]
    log.info("gateway: %d processes on %s:%d", workers, host, port)
    status = 0
    while not stopping.wait(0.5):
        for index, process in enumerate(processes):
            if process.is_alive():
                continue
            if process.exitcode == STARTUP_FAILURE:
                log.error("a gateway process could not start: stopping the others")
                status = STARTUP_FAILURE
                stopping.set()
                break
            log.error("gateway process %s exited (%s): starting another", process.pid,
                      process.exitcode)  # fmt: skip
            processes[index] = start()
    for process in processes:
        process.terminate()  # SIGTERM: uvicorn closes its connections with 1012
    for process in processes:
        process.join(15)
        if process.is_alive():
            process.kill()
            process.join()
    return status


def _raise_open_files_limit() -> None:
    """Every client holds a descriptor: allow as many as the hard limit does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _without_handshakes(record: logging.LogRecord) -> bool:
    """uvicorn logs every WebSocket handshake with its URL, a client's token included:
    drop those lines (connections are counted in /stats instead)."""
    return '"WebSocket %s"' not in str(record.msg)
