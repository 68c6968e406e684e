"""The routing table: which service queue runs each task type, and its defaults.

The table is data: ``routes/<queue>.toml``, one file per service queue, each listing
the task types that queue's workers run with their default priority, timeout, retries
and expiry. Routes can also be added at run time (``TaskDispatcher.register_route``).

A task type no route names is refused at dispatch: sending it to some queue nobody
reads would lose it silently.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import tomllib
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from redis.exceptions import RedisError

from meetingtasks.base.keys import RESERVED_NAMES, Keys, get_keys
from meetingtasks.base.priority import Priority
from meetingtasks.base.settings import get_settings
from meetingtasks.errors import ConfigurationError, UnknownTaskType
from meetingtasks.store import routes as shared_routes

log = logging.getLogger(__name__)

#: Seconds between two checks for routes another process registered at run time, and
#: between two tries while Redis does not answer.
SHARED_CHECK = 1.0
SHARED_RETRY = 30.0

QUEUE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
TASK_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
DEFAULT_QUEUE = "default"


class Route(BaseModel):
    """Where one task type runs and the defaults a submission may override."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str = Field(pattern=TASK_TYPE.pattern, description='e.g. "ai.llm_chat"')
    queue: str = Field(pattern=QUEUE_NAME.pattern)
    priority: Priority = Priority.NORMAL
    timeout: float = Field(60.0, gt=0, description="seconds a run may take (soft limit)")
    max_retries: int = Field(3, ge=0, le=100)
    expires: float | None = Field(
        None, gt=0, description="seconds after submission a task that has not started is dropped"
    )
    retention: float | None = Field(
        None,
        gt=0,
        description="seconds a finished task's record is kept (default: by who awaits it)",
    )
    client: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9_]{0,63}$",
        description="the name WebSocket clients submit it by; a type without one is internal",
    )

    @field_validator("priority", mode="before")
    @classmethod
    def _parse_priority(cls, value: object) -> Priority:
        return Priority.parse(value)


#: Pools a routes file may give its workers. gevent is left to ``-P gevent`` on the
#: command line: only there does Celery patch the standard library early enough.
WORKER_POOLS = ("prefork", "threads", "solo")


class WorkerDefaults(BaseModel):
    """How a worker of one queue runs its tasks when its command line does not say
    (``[worker]`` of ``routes/<queue>.toml``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pool: str = Field(pattern="^(" + "|".join(WORKER_POOLS) + ")$")
    concurrency: int | None = Field(None, ge=1, le=10_000)


class RouteTable:
    """Task type -> Route, over a fixed set of declared queues.

    A table shared with the deployment (``share``, the process-wide one) also follows
    the routes any process registered at run time (``publish``): it checks a version
    counter in Redis at most every SHARED_CHECK seconds and reads them again when it
    moved. Those override routes/ (they are newer).
    """

    def __init__(
        self,
        queues: list[str],
        routes: list[Route] = (),  # type: ignore[assignment]
        workers: dict[str, WorkerDefaults] | None = None,
    ) -> None:
        for queue in queues:
            _check_queue_name(queue)
        if DEFAULT_QUEUE not in queues:
            raise ConfigurationError(f"the {DEFAULT_QUEUE!r} queue must be declared")
        self.queues: tuple[str, ...] = tuple(queues)
        #: Queue -> how its workers run, for the queues whose file has a [worker] table.
        self.workers: dict[str, WorkerDefaults] = dict(workers or {})
        self._routes: dict[str, Route] = {}
        self._lock = threading.Lock()
        self._keys: Keys | None = None
        self._shared_version = -1
        self._checked_at = -SHARED_CHECK
        for route in routes:
            self.register(route)

    def worker_for(self, queues: Iterable[str]) -> WorkerDefaults | None:
        """How a worker of ``queues`` runs when its command line does not say: the
        queues' [worker] table if they all have the same one; None (Celery's settings)
        when none has one or they differ (a warning says so: pass -P and -c)."""
        named = list(dict.fromkeys(queues))
        chosen = {self.workers.get(queue) for queue in named}
        if len(chosen) == 1:
            return chosen.pop()
        pools = [self.workers[q].pool if q in self.workers else "default" for q in named]
        log.warning(
            "queues %s ask for different pools (%s): this worker uses the default pool; "
            "start one worker per pool, or pass -P and -c",
            ", ".join(named),
            "; ".join(f"{queue}: {pool}" for queue, pool in zip(named, pools, strict=True)),
        )
        return None

    def share(self, keys: Keys) -> RouteTable:
        """Follow (and take part in) the run-time routes of the deployment of ``keys``."""
        self._keys = keys
        return self

    def publish(self, route: Route) -> None:
        """Register ``route`` here and in every process of the deployment."""
        self.register(route)
        if self._keys is not None:
            shared_routes.save(self._keys, route.type, route.model_dump_json())

    def _follow(self) -> None:
        """Read the deployment's run-time routes again if they changed (at most every
        SHARED_CHECK seconds; while Redis does not answer, every SHARED_RETRY seconds)."""
        if self._keys is None or time.monotonic() - self._checked_at < SHARED_CHECK:
            return
        self._checked_at = time.monotonic()
        try:
            if shared_routes.version(self._keys) == self._shared_version:
                return
            version, raw = shared_routes.load(self._keys)
        except RedisError as exc:
            log.warning("could not read the routes registered at run time: %s", exc)
            self._checked_at += SHARED_RETRY - SHARED_CHECK
            return
        for task_type, text in raw.items():
            try:
                self.register(Route.model_validate_json(text))
            except (ValidationError, ConfigurationError) as exc:
                log.warning("route %s registered at run time does not fit here: %s", task_type, exc)
        self._shared_version = version

    @classmethod
    def load(cls, directory: Path) -> RouteTable:
        """Read every ``<queue>.toml`` of ``directory``; the file name is the queue."""
        files = sorted(Path(directory).glob("*.toml"))
        if not files:
            raise ConfigurationError(
                f"no routes found in {directory}: it needs one <queue>.toml per service queue "
                "(set MEETINGTASKS_ROUTES_DIR to the routes/ folder)"
            )
        queues = [path.stem for path in files]
        routes: list[Route] = []
        workers: dict[str, WorkerDefaults] = {}
        seen: dict[str, Path] = {}
        for path in files:
            file_routes, worker = _read_route_file(path)
            if worker is not None:
                workers[path.stem] = worker
            for route in file_routes:
                clients = {r.client: r.type for r in routes if r.client}
                if route.client in clients:
                    raise ConfigurationError(
                        f"client name {route.client!r} is given to both "
                        f"{clients[route.client]!r} and {route.type!r} ({path}); "
                        "each client name must be unique"
                    )
                if route.type in seen:
                    raise ConfigurationError(
                        f"task type {route.type!r} is routed twice: in {seen[route.type]} "
                        f"and in {path}; keep it in one file"
                    )
                seen[route.type] = path
                routes.append(route)
        return cls(queues, routes, workers)

    def register(self, route: Route) -> None:
        """Add or replace the route of one task type (its queue must be declared)."""
        if route.queue not in self.queues:
            raise ConfigurationError(
                f"route {route.type!r} names queue {route.queue!r}, which is not declared; "
                f"declared queues: {', '.join(self.queues)}"
            )
        with self._lock:
            self._routes[route.type] = route

    def find(self, task_type: str) -> Route | None:
        self._follow()
        return self._routes.get(task_type)

    def get(self, task_type: str) -> Route:
        """The route of ``task_type``, or UnknownTaskType naming what exists."""
        route = self.find(task_type)
        if route is None:
            raise UnknownTaskType(
                f"unknown task type {task_type!r}: no route in routes/ names it. "
                f"Known types: {', '.join(sorted(self._routes))}. "
                "Add it to routes/<queue>.toml or call register_route()."
            )
        return route

    def for_client(self, name: str) -> Route:
        """The route clients call ``name``: only types routes/ exposes to clients."""
        self._follow()
        for route in list(self._routes.values()):
            if route.client == name:
                return route
        raise UnknownTaskType(
            f"unknown task {name!r}: clients may submit "
            f"{', '.join(sorted(r.client for r in self._routes.values() if r.client))}"
        )

    def __iter__(self) -> Iterator[Route]:
        return iter(list(self._routes.values()))

    def __len__(self) -> int:
        return len(self._routes)

    def __contains__(self, task_type: object) -> bool:
        return task_type in self._routes


def _check_queue_name(queue: str) -> None:
    if not QUEUE_NAME.match(queue) or queue in RESERVED_NAMES:
        raise ConfigurationError(
            f"bad queue name {queue!r}: use lowercase letters, digits and _ "
            f"(starting with a letter), and none of {', '.join(sorted(RESERVED_NAMES))}"
        )


def _read_route_file(path: Path) -> tuple[list[Route], WorkerDefaults | None]:
    """The routes of one file, and its workers' defaults if it has a [worker] table."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read routes file {path}: {exc}") from exc
    unknown = set(data) - {"defaults", "tasks", "worker"}
    if unknown:
        raise ConfigurationError(
            f"{path}: unknown table(s) {', '.join(sorted(unknown))}; "
            'a routes file has [defaults], [tasks."<type>"] and [worker] tables'
        )
    defaults: dict[str, Any] = data.get("defaults", {})
    routes = []
    for task_type, fields in data.get("tasks", {}).items():
        try:
            routes.append(Route(**{**defaults, **fields, "type": task_type, "queue": path.stem}))
        except ValidationError as exc:
            raise ConfigurationError(f"{path}: bad route {task_type!r}: {exc}") from exc
    worker = None
    if "worker" in data:
        try:
            worker = WorkerDefaults(**data["worker"])
        except (ValidationError, TypeError) as exc:
            raise ConfigurationError(
                f"{path}: bad [worker] table: {exc}; it may set pool "
                f"({', '.join(WORKER_POOLS)}) and concurrency (1 to 10000)"
            ) from exc
    return routes, worker


@lru_cache(maxsize=1)
def get_route_table() -> RouteTable:
    """The process-wide table, loaded once from ``MEETINGTASKS_ROUTES_DIR`` and following
    the deployment's run-time routes."""
    return RouteTable.load(get_settings().routes_dir).share(get_keys())


def check_visibility_timeout(table: RouteTable, visibility_timeout: float, grace: float) -> None:
    """Refuse settings that break at-least-once delivery, before any task runs: a message
    taken by a worker comes back after the visibility timeout, so it must outlast the
    longest run."""
    longest = max((r.timeout for r in table), default=0.0)
    if longest + grace >= visibility_timeout:
        raise ConfigurationError(
            f"MEETINGTASKS_VISIBILITY_TIMEOUT={visibility_timeout}s is not longer than the "
            f"longest task timeout ({longest}s + {grace}s grace): a running task would be "
            "delivered to a second worker. Raise the visibility timeout."
        )
