"""The gateway's HTTP endpoints, for probes, scrapers and services that prefer HTTP.

``GET /healthz``: 200 while this process serves and Redis answers, else 503 (open to
all). ``GET /stats``: the cluster's stats (``cluster_stats()``) with this process's under
``gateway``. ``GET /metrics``: the same for Prometheus. Both disclose worker hosts and
queue depths, so they want ``Authorization: Bearer <MEETINGTASKS_GATEWAY_OPERATOR_TOKEN>``
when one is set, and answer without one only on a gateway bound to loopback.
``POST /tasks`` and ``GET /tasks/{id}`` with ``Authorization: Bearer <token>``: the
``submit`` and ``status`` of the WebSocket protocol for one request each, with the same
checks and limits (the user's submit rate; its unfinished tasks sent this way count
like a session's); a task sent this way belongs to the token's user (it has no
session), and only that user can read it.

Errors are ``{"code", "message"}`` with the protocol's codes and an HTTP status.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from meetingtasks.errors import AuthError, ProtocolError
from meetingtasks.gateway import protocol as p
from meetingtasks.gateway.auth import Principal, verify
from meetingtasks.gateway.hub import Hub
from meetingtasks.gateway.metrics import render
from meetingtasks.gateway.tasks import UNREACHABLE, describe
from meetingtasks.metrics import CONTENT_TYPE
from meetingtasks.runtime import cluster_stats

#: HTTP status of each error code; 400 for the others.
_STATUS = {
    p.TOKEN_MISSING: 401,
    p.TOKEN_BAD_SIGNATURE: 401,
    p.TOKEN_EXPIRED: 401,
    p.TOKEN_MALFORMED: 401,
    p.TOKEN_NOT_YET_VALID: 401,
    p.TOKEN_TOO_LONG_LIVED: 401,
    p.OPERATOR_TOKEN_REQUIRED: 401,
    p.RATE_LIMITED: 429,
    p.TOO_MANY_TASKS: 429,
    p.MEETING_NOT_ALLOWED: 403,
    p.TASK_NOT_FOUND: 404,
    p.FRAME_TOO_LARGE: 413,
    p.PAYLOAD_TOO_LARGE: 413,
    p.UNAVAILABLE: 503,
    p.INTERNAL: 500,
}


def routes(hub: Hub) -> list[Route]:
    api = HttpApi(hub)
    return [
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/stats", api.stats, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/tasks", api.submit, methods=["POST"]),
        Route("/tasks/{task_id}", api.task, methods=["GET"]),
    ]


class HttpApi:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        #: User -> ids of its tasks sent over HTTP not known to be over (the session's
        #: concurrency limit, for a client that has no session).
        self._unfinished: dict[str, set[str]] = {}

    async def healthz(self, request: Request) -> Response:
        try:
            await asyncio.wait_for(self.hub.redis.ping(), 2.0)
        except (TimeoutError, *UNREACHABLE) as exc:
            return JSONResponse({"status": "unavailable", "redis": str(exc)}, 503)
        return JSONResponse({"status": "ok", "connections": self.hub.counters.connections})

    async def stats(self, request: Request) -> Response:
        refused = self._operator_only(request)
        if refused is not None:
            return refused
        try:
            cluster = await asyncio.to_thread(cluster_stats)
        except UNREACHABLE as exc:
            return _error(p.UNAVAILABLE, f"Redis is unreachable: {exc}")
        return JSONResponse({**cluster, "gateway": self.hub.stats()})

    async def metrics(self, request: Request) -> Response:
        refused = self._operator_only(request)
        if refused is not None:
            return refused
        try:
            body = await asyncio.to_thread(render, cluster_stats, self.hub.stats)
        except UNREACHABLE as exc:
            return _error(p.UNAVAILABLE, f"Redis is unreachable: {exc}")
        return Response(body, media_type=CONTENT_TYPE)

    async def submit(self, request: Request) -> Response:
        try:
            principal = _principal(request, self.hub.config.max_token_lifetime)
            body = await _body(request, self.hub.config.limits.max_frame_bytes)
            obj = p.decode(body)
            if not isinstance(obj, dict):
                raise ProtocolError(
                    p.NOT_OBJECT, 'the body is one JSON object: {"type": <task>, "data": {...}}'
                )
            command = p.parse_command({**obj, "op": "submit"}, self.hub.config.limits)
            assert isinstance(command, p.Submit)
            await self._admit(principal.user_id, command.request_id)
            response = await self.hub.tasks.submit(principal, command)
            if response.task_id is not None:
                self._unfinished.setdefault(principal.user_id, set()).add(response.task_id)
        except AuthError as exc:
            return _error(exc.code, str(exc))
        except ProtocolError as exc:
            return _error(exc.code, exc.message, exc.request_id)
        self.hub.counters.submitted += 1
        answer = {"task_id": response.task_id, "status": response.status}
        if command.request_id is not None:
            answer["request_id"] = command.request_id
        return JSONResponse(answer, 202)

    async def _admit(self, user_id: str, request_id: str | None) -> None:
        """The limits a WebSocket session has, for a user sending over HTTP: its submit
        rate, and at most MEETINGTASKS_GATEWAY_MAX_TASKS unfinished tasks sent this way."""
        unfinished = self._unfinished.get(user_id, set())
        if len(unfinished) >= self.hub.config.max_tasks:
            ids = list(unfinished)
            results = await self.hub.tasks.statuses(ids)
            unfinished.difference_update(
                task_id for task_id, r in zip(ids, results, strict=True) if r is None or r.done
            )
            if len(unfinished) >= self.hub.config.max_tasks:
                raise ProtocolError(
                    p.TOO_MANY_TASKS,
                    f"{self.hub.config.max_tasks} of your tasks sent over HTTP are "
                    "unfinished: wait for one to end before sending more",
                    request_id,
                )
        refusal = self.hub.limits.submit(user_id, time.monotonic())
        if refusal is not None:
            raise ProtocolError(*refusal, request_id)

    def _operator_only(self, request: Request) -> Response | None:
        """None if the request may read the cluster's stats, else the refusal."""
        config = self.hub.config
        if config.operator_token is None:
            if not config.public:
                return None
            return _error(
                p.OPERATOR_TOKEN_REQUIRED,
                "this gateway listens beyond loopback: set MEETINGTASKS_GATEWAY_OPERATOR_TOKEN "
                "and send it as Authorization: Bearer <token> to read the stats",
            )
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), config.operator_token):
            return None
        return _error(
            p.OPERATOR_TOKEN_REQUIRED,
            "send Authorization: Bearer <MEETINGTASKS_GATEWAY_OPERATOR_TOKEN> to read the stats",
        )

    async def task(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        try:
            principal = _principal(request, self.hub.config.max_token_lifetime)
            result = (await self.hub.tasks.statuses([task_id]))[0]
        except AuthError as exc:
            return _error(exc.code, str(exc))
        except ProtocolError as exc:
            return _error(exc.code, exc.message)
        if result is None or result.user_id != principal.user_id:
            return _error(p.TASK_NOT_FOUND, f"no task {task_id[:40]!r} of yours")
        return JSONResponse(describe(result))


def _principal(request: Request, max_lifetime: float) -> Principal:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return verify(token.strip() if scheme.lower() == "bearer" else None, max_lifetime=max_lifetime)


async def _body(request: Request, limit: int) -> str:
    """The request body as text, refused past ``limit`` bytes without reading it all."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(p.FRAME_TOO_LARGE, f"body is over the {limit}-byte limit")
        chunks.append(chunk)
    try:
        return b"".join(chunks).decode()
    except UnicodeDecodeError:
        raise ProtocolError(p.BAD_JSON, "body is not UTF-8 JSON") from None


def _error(code: str, message: str, request_id: str | None = None) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if request_id is not None:
        body["request_id"] = request_id
    headers = {"WWW-Authenticate": "Bearer"} if _STATUS.get(code) == 401 else None
    return Response(
        json.dumps(body), _STATUS.get(code, 400), headers, media_type="application/json"
    )
