"""QueueWorker: Celery's worker, taking its pool and concurrency from its queues.

``celery -A meetingtasks worker -Q ai`` runs the ``ai`` queue as its ``[worker]`` table
in ``routes/ai.toml`` says (threads, hundreds at once: AI tasks wait on inference
nodes), with no flag; ``-Q meeting`` keeps the default prefork pool. ``-P``/``--pool``
and ``-c``/``--concurrency`` on the command line always win. The threads pool, chosen
either way, is ``TimedThreadPool`` (``thread_pool.py``): Celery's, with time limits kept.

Celery's command line always hands the worker a pool class and a concurrency (its
defaults filled in), so whether they were typed is read from ``sys.argv``, as Celery
itself reads ``-P`` there to patch for gevent and eventlet.

Names of Celery 5.7 relied on (``tests/test_private_api.py`` checks each):
``WorkController.setup_defaults`` (overridden; its ``pool`` (the command line's ``-P``),
``pool_cls``, ``concurrency`` and ``queues`` keywords), ``Celery.Worker`` (a cached
property the app overrides), ``celery.concurrency.get_implementation``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

from celery.apps.worker import Worker
from celery.concurrency import get_implementation
from celery.concurrency.thread import TaskPool as ThreadTaskPool
from redis.exceptions import RedisError

from meetingtasks.celery_ext.thread_pool import TimedThreadPool
from meetingtasks.policies.routing import get_route_table
from meetingtasks.store.memory import check_eviction_policy

log = logging.getLogger(__name__)

POOL_FLAGS = ("-P", "--pool")
CONCURRENCY_FLAGS = ("-c", "--concurrency")


class QueueWorker(Worker):
    def setup_defaults(self, concurrency: Any = None, pool_cls: Any = None, **options: Any) -> None:
        try:
            check_eviction_policy()  # a Redis that may evict queues loses tasks: refuse it
        except RedisError as exc:  # not up yet: Celery's own connection retries go on
            log.warning("could not read Redis's maxmemory-policy at start (%s): not checked", exc)
        pool_cls = options.pop("pool", None) or pool_cls  # the command line's -P
        queues = _queue_names(options.get("queues"))
        chosen = get_route_table().worker_for(queues or get_route_table().queues)
        if chosen is not None and not given(POOL_FLAGS):
            pool_cls = get_implementation(chosen.pool)
        if chosen is not None and chosen.concurrency and not given(CONCURRENCY_FLAGS):
            concurrency = chosen.concurrency
        if pool_cls in (ThreadTaskPool, "threads"):
            pool_cls = TimedThreadPool  # the same pool, with time limits kept
        super().setup_defaults(concurrency=concurrency, pool_cls=pool_cls, **options)
        if chosen is not None:
            log.info("queues %s: %s pool, concurrency %s", ", ".join(queues) or "all",
                     chosen.pool, self.concurrency)  # fmt: skip


def given(flags: Sequence[str], argv: Sequence[str] | None = None) -> bool:
    """Whether the command line names one of ``flags`` (``-P x``, ``-Px``, ``--pool=x``)."""
    args = sys.argv[1:] if argv is None else argv
    for arg in args:
        if arg == "--":
            return False
        for flag in flags:
            long = flag.startswith("--")
            if arg == flag or (long and arg.startswith(flag + "=")):
                return True
            if not long and arg.startswith(flag) and not arg.startswith("--"):
                return True
    return False


def _queue_names(queues: Any) -> list[str]:
    if not queues:
        return []
    if isinstance(queues, str):
        queues = queues.split(",")
    return [name.strip() for name in queues if name.strip()]
