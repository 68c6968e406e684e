"""The two apps every comparison puts side by side: plain default Celery, and ours.

Imported only in child processes, after the orchestrator pointed the environment at the
private Redis (both apps read their settings once, at import).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

PLAIN = "plain"
OURS = "ours"


@dataclass(frozen=True)
class BenchApp:
    kind: str
    app: Any
    #: Name of the task a run sends: the no-op, or ``bench.wait`` (``load(kind, "wait")``).
    noop: str
    #: The queue the no-op task goes to; the app's module for ``celery -A``; the queues its
    #: worker is started with (None: Celery's default).
    queue: str
    module: str
    worker_queues: tuple[str, ...] | None
    #: Sends one no-op task as a user of this app would; returns the AsyncResult.
    send: Callable[..., Any]
    #: More arguments of its worker's command line.
    worker_args: tuple[str, ...] = ()

    def queue_depth(self, connection: Any) -> int:
        """Messages waiting in the no-op queue (every priority list of it)."""
        # kombu's own sum over the priority lists. Not queue_declare(passive=True): with a
        # global_keyprefix kombu checks the lists' existence without the prefix.
        return int(connection.default_channel._size(self.queue))

    def result_prefix(self) -> str:
        """Celery's result key names (ours: only channels, the result is in the record)."""
        prefix = self.app.backend.task_keyprefix
        return prefix.decode() if isinstance(prefix, bytes) else str(prefix)

    def completion_times(self) -> list[float]:
        """When each task that succeeded ended (unix seconds), read where the app keeps
        it: plain Celery's result keys, our task records."""
        client = self.app.backend.client
        if self.kind == OURS:
            from meetingtasks.base.keys import get_keys

            keys = list(client.scan_iter(match=f"{get_keys().status_prefix()}*", count=5000))
            fields = _in_chunks(
                client, keys, lambda pipe, key: pipe.hmget(key, "status", "updated_at")
            )
            return [float(at) for status, at in fields if status == b"completed" and at]
        keys = list(client.scan_iter(match=f"{self.result_prefix()}*", count=5000))
        raws = _in_chunks(client, keys, lambda pipe, key: pipe.get(key))
        metas = [json.loads(raw) for raw in raws if raw]
        return [
            datetime.fromisoformat(meta["date_done"]).timestamp()
            for meta in metas
            if meta.get("status") == "SUCCESS"
        ]


def _in_chunks(client: Any, keys: list[Any], read: Callable[[Any, Any], Any]) -> list[Any]:
    """``read(pipeline, key)`` of every key, 2,000 to a round trip."""
    found: list[Any] = []
    for start in range(0, len(keys), 2000):
        pipe = client.pipeline(transaction=False)
        for key in keys[start : start + 2000]:
            read(pipe, key)
        found.extend(pipe.execute())
    return found


def load(kind: str, task: str = "noop") -> BenchApp:
    """The app of ``kind``, sending its no-op task, or with ``task="wait"`` a task that
    waits ``config.WAIT_SECONDS`` (ours: on the ai queue, in that queue's own worker)."""
    if task == "wait":
        return _load_wait(kind)
    if task == "own_io":
        return _load_own_io(kind)
    if task in ("cost_ignored", "cost_kept"):
        return _load_cost(kind, task)
    if kind == PLAIN:
        from bench.plain_app import NOOP, app, noop

        return BenchApp(
            PLAIN, app, NOOP, app.conf.task_default_queue, "bench.plain_app", None,
            send=lambda **options: noop.apply_async(**options),
        )  # fmt: skip
    if kind == OURS:
        from meetingtasks.app import app as ours
        from meetingtasks.policies.routing import get_route_table

        ours.loader.import_default_modules()  # its tasks, as a worker or first send would
        name = "system.noop"
        queue = get_route_table().get(name).queue
        return BenchApp(
            OURS, ours, name, queue, "meetingtasks", (queue,),
            send=ours.tasks[name].apply_async,
        )  # fmt: skip
    raise ValueError(f"unknown app {kind!r}: {PLAIN} or {OURS}")


def _load_cost(kind: str, task: str) -> BenchApp:
    """A user's own task, its result ignored (``cost_ignored``) or kept (``cost_kept``)."""
    name = f"bench.{task}"
    if kind == PLAIN:
        from bench import plain_app

        send = getattr(plain_app, task).delay
        return BenchApp(PLAIN, plain_app.app, name, plain_app.app.conf.task_default_queue,
                        "bench.plain_app", None, send=lambda **_: send())  # fmt: skip
    from bench import cost_tasks
    from meetingtasks.app import app as ours

    send = getattr(cost_tasks, task).delay
    return BenchApp(OURS, ours, name, ours.conf.task_default_queue, "meetingtasks",
                    (ours.conf.task_default_queue,), send=lambda **_: send(),
                    worker_args=("--include", "bench.cost_tasks"))  # fmt: skip


def _load_wait(kind: str) -> BenchApp:
    if kind == PLAIN:
        from bench.plain_app import WAIT, app, wait

        return BenchApp(
            PLAIN, app, WAIT, app.conf.task_default_queue, "bench.plain_app", None,
            send=lambda **options: wait.apply_async(**options),
        )  # fmt: skip
    from bench.ai_tasks import WAIT as OURS_WAIT
    from bench.ai_tasks import wait as ours_wait
    from meetingtasks.app import app as ours

    return BenchApp(
        OURS, ours, OURS_WAIT, "ai", "meetingtasks", ("ai",), send=ours_wait.apply_async,
        worker_args=("--include", "bench.ai_tasks"),
    )  # fmt: skip


def _load_own_io(kind: str) -> BenchApp:
    """Tasks doing Redis I/O of their own (``bench/own_io.py``): plain Celery's threads
    pool at 500 against our ai worker with no pool flags."""
    from bench.own_io import OWN_IO

    if kind == PLAIN:
        from bench import plain_app

        return BenchApp(
            PLAIN, plain_app.app, OWN_IO, plain_app.app.conf.task_default_queue,
            "bench.plain_app", None, send=lambda **options: plain_app.own_io.apply_async(**options),
            worker_args=("-P", "threads", "-c", "500"),
        )  # fmt: skip
    from bench import ai_tasks
    from meetingtasks.app import app as ours

    return BenchApp(
        OURS, ours, OWN_IO, "ai", "meetingtasks", ("ai",), send=ai_tasks.own_io.apply_async,
        worker_args=("--include", "bench.ai_tasks"),
    )  # fmt: skip
