"""Celery settings of meetingtasks, derived from the MEETINGTASKS_* environment.

Every choice that matters for reliability is explained where it is made. Values come
from ``meetingtasks.base.settings`` (one documented default each); Celery's own settings
not listed here keep Celery's defaults.
"""

from typing import Any

from kombu import Queue

from meetingtasks.base.keys import PRIORITY_SEP, get_keys
from meetingtasks.base.priority import PRIORITY_STEPS, Priority
from meetingtasks.base.settings import get_settings
from meetingtasks.celery_ext.backend import result_backend_for
from meetingtasks.celery_ext.transport import ACCEPT_CONTENT_OPTION, transport_for
from meetingtasks.policies.routing import DEFAULT_QUEUE, check_visibility_timeout, get_route_table
from meetingtasks.store.sentinel import is_sentinel, sentinel_options

#: The only content Celery sends and takes here (no pickle anywhere).
_JSON_ONLY = ["json"]
_settings = get_settings()
_keys = get_keys()
_routes = get_route_table()
check_visibility_timeout(_routes, _settings.visibility_timeout, _settings.timeout_grace)

# -- Broker and results: one Redis -------------------------------------------------------
broker_url = _settings.redis_url
# Celery's Redis backend, which also files final failures in the dead-letter queue.
result_backend = result_backend_for(_settings.redis_url)
# A result written while Redis restarts is retried, not lost.
result_backend_always_retry = True
result_backend_max_retries = 30
broker_connection_retry_on_startup = True
# kombu's Redis transport plus durable delays and owned unacked messages (transport.py),
# for this app's connections only (``BrokerConnection`` keeps it across a failover).
broker_transport = transport_for(_settings.redis_url)
broker_transport_options: dict[str, Any] = {
    # Four real priority levels: one Redis list per kombu step inside each queue,
    # popped in step order. Priority.CRITICAL..LOW are exactly these steps.
    "priority_steps": PRIORITY_STEPS,
    "sep": PRIORITY_SEP,
    # A message taken by a worker that dies before acknowledging it is delivered again
    # after this many seconds. It must exceed the longest task timeout, or a task still
    # running would be handed to a second worker (checked above, at import).
    "visibility_timeout": _settings.visibility_timeout,
    # Every kombu key carries the deployment namespace (see meetingtasks/base/keys.py).
    "global_keyprefix": _keys.prefix,
    # What the transport lets through to Celery: anything else is set aside (JSON only).
    ACCEPT_CONTENT_OPTION: _JSON_ONLY,
}
result_backend_transport_options: dict[str, Any] = {"global_keyprefix": _keys.prefix}
if is_sentinel(_settings.redis_url):
    # The primary the sentinels name (store/sentinel.py), for kombu and Celery alike.
    for _options in (broker_transport_options, result_backend_transport_options):
        _options["master_name"] = _settings.redis_sentinel_master
        _options["sentinel_kwargs"] = sentinel_options()
result_expires = 24 * 3600

# -- JSON only: a pickled message is refused by the worker, never run ----------------------
task_serializer = "json"
result_serializer = "json"
event_serializer = "json"
accept_content = _JSON_ONLY
result_accept_content = _JSON_ONLY

# -- At-least-once delivery ------------------------------------------------------------------
# Acknowledge after the task ran, not when it was received: a worker killed mid-task
# leaves the message unacknowledged and it runs again elsewhere.
task_acks_late = True
# With late ack, a task whose worker *process* died (kill -9, OOM) is requeued, not failed.
task_reject_on_worker_lost = True
# A task that failed for good is acknowledged: it goes to the dead-letter queue instead
# of being redelivered forever.
task_acks_on_failure = True
task_acks_on_timeout = True
# Each worker process reserves one message at a time, so priorities stay strict (no
# prefetched LOW task waits in a worker while a CRITICAL one arrives) and a dying worker
# holds at most one message per process.
worker_prefetch_multiplier = 1
# A message redelivered after a crash whose task already succeeded is skipped.
worker_deduplicate_successful_tasks = True
# On Redis an ack is a plain command, valid after a reconnect: let running tasks finish
# when the broker connection drops instead of cancelling them (which would run them twice).
worker_cancel_long_running_tasks_on_connection_loss = False
# Reconnect to the broker at once and then every half second at most (Celery waits 2 s,
# 4 s …): after a failover, tasks flow again within a second of the promotion.
worker_consumer = "meetingtasks.celery_ext.consumer:Consumer"

# -- Priorities -----------------------------------------------------------------------------
# Kombu puts a message without priority in the highest list; ours default to NORMAL.
task_default_priority = int(Priority.NORMAL)
# A child task takes the priority of its route, not of the task that sent it.
task_inherit_parent_priority = False

# -- Routing: the service queues of routes/ ----------------------------------------------------
task_queues = [Queue(name, routing_key=name) for name in _routes.queues]
task_default_queue = DEFAULT_QUEUE
task_create_missing_queues = False
task_routes = ("meetingtasks.app.route_task",)

# -- Events, so Flower and `celery events` show our tasks ---------------------------------
worker_send_task_events = True
task_send_sent_event = True
# No STARTED state in Celery's backend (two more round trips per task): our status
# record says "processing" from the moment a worker takes the task (tracking.py).
task_track_started = False

# -- Worker ----------------------------------------------------------------------------------
worker_concurrency = _settings.pool_processes
# A pool process that keeps more than this after a task (a leak) is replaced before its
# next one, instead of growing until the OOM killer takes it mid-task.
worker_max_memory_per_child = _settings.max_memory_per_child or None
# We use no Celery rate limits; skipping their bookkeeping speeds every message up.
worker_disable_rate_limits = True
# What every worker process adds to Celery's (heartbeat, scheduler loops, write-behind):
# Celery imports it as a worker starts, before the worker_init signal it connects to.
imports = ["meetingtasks.run.worker"]
# The service tasks; also imported by any process on its first send, to check arguments
# and apply route defaults.
include = [
    "meetingtasks.tasks.ai",
    "meetingtasks.tasks.meeting",
    "meetingtasks.tasks.media",
    "meetingtasks.tasks.signaling",
    "meetingtasks.tasks.user",
    "meetingtasks.tasks.maintenance",
]
