"""Every private Celery or kombu name meetingtasks relies on still exists.

``meetingtasks/celery_ext/`` overrides or uses these (each file's docstring lists its
own); ``pyproject.toml`` pins Celery and kombu to the minor versions they were checked
with. An upgrade that removes or renames one fails here, naming the file to port,
instead of failing at run time in a worker.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import re
from pathlib import Path

import pytest
from celery import Celery, signals
from celery.app.amqp import AMQP
from celery.app.routes import Router
from celery.app.task import Task
from celery.backends.redis import RedisBackend, ResultConsumer, SentinelBackend
from celery.concurrency.thread import TaskPool as ThreadTaskPool
from celery.events.dispatcher import EventDispatcher
from celery.worker.consumer import Consumer as CeleryConsumer
from celery.worker.request import Request
from celery.worker.worker import WorkController
from kombu import Connection
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from redis.asyncio.sentinel import SentinelManagedConnection as AsyncSentinelManagedConnection
from redis.connection import Connection as RedisConnection
from redis.sentinel import SentinelConnectionPool, SentinelManagedConnection

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

#: (owner, attribute, the file of ours that relies on it)
CLASS_NAMES = [
    (kombu_redis.Channel, "_brpop_start", "celery_ext/transport.py"),
    (kombu_redis.Channel, "_brpop_read", "celery_ext/transport.py"),
    (kombu_redis.Channel, "_put", "celery_ext/transport.py"),
    (kombu_redis.Channel, "_put_fanout", "celery_ext/transport.py"),
    (kombu_redis.Channel, "_size", "celery_ext/transport.py"),
    (kombu_redis.Channel, "_queue_bind", "celery_ext/transport.py"),
    (kombu_redis.Channel, "_q_for_pri", "celery_ext/transport.py"),
    (kombu_redis.Channel, "_flush_brpop_reauth", "celery_ext/transport.py"),
    (kombu_redis.Channel, "_get_message_priority", "celery_ext/transport.py"),
    (kombu_redis.Channel, "_get_publish_topics", "celery_ext/transport.py, envelopes.py"),
    (kombu_redis.QoS, "_remove_from_indices", "celery_ext/transport.py"),
    (kombu_redis.QoS, "restore_unacked", "celery_ext/transport.py"),
    (kombu_redis.QoS, "restore_visible", "celery_ext/transport.py"),
    (virtual.Transport, "_deliver", "celery_ext/transport.py"),
    (Connection, "resolve_aliases", "celery_ext/transport.py"),
    (AMQP, "Connection", "celery_ext/celery_app.py"),
    (Celery, "amqp_cls", "celery_ext/celery_app.py"),
    (RedisBackend, "_store_result", "celery_ext/backend.py"),
    (RedisBackend, "_get_result_meta", "celery_ext/backend.py"),
    (RedisBackend, "_MAX_STR_VALUE_SIZE", "celery_ext/backend.py"),
    (RedisBackend, "task_keyprefix", "celery_ext/backend.py"),
    (ResultConsumer, "_reconnect_pubsub", "celery_ext/backend.py"),
    (ResultConsumer, "_locked", "celery_ext/backend.py"),
    (SentinelBackend, "_get_sentinel_instance", "celery_ext/backend.py"),
    (EventDispatcher, "_publish", "celery_ext/event_dispatcher.py"),
    (Task, "_get_exec_options", "celery_ext/task.py"),
    (Task, "Request", "celery_ext/task.py, request.py"),
    (Request, "on_failure", "celery_ext/request.py"),
    (Request, "_already_revoked", "celery_ext/request.py"),
    (Request, "_already_cancelled", "celery_ext/request.py"),
    (Request, "acknowledge", "celery_ext/request.py"),
    (Request, "acknowledged", "celery_ext/request.py"),
    (Request, "_request_dict", "celery_ext/request.py"),
    (AMQP, "as_task_v2", "celery_ext/sending.py"),
    (AMQP, "argsrepr_maxsize", "celery_ext/sending.py"),
    (AMQP, "kwargsrepr_maxsize", "celery_ext/sending.py"),
    (Router, "route", "celery_ext/sending.py"),
    (signals, "task_sent", "celery_ext/sending.py"),
    (WorkController, "setup_defaults", "celery_ext/queue_worker.py"),
    (Celery, "Worker", "celery_ext/celery_app.py"),
    (ThreadTaskPool, "on_apply", "celery_ext/thread_pool.py"),
    (CeleryConsumer, "ensure_connected", "celery_ext/consumer.py"),
    (SentinelManagedConnection, "connect_check_health", "store/sentinel.py"),
    (SentinelConnectionPool, "get_master_address", "store/sentinel.py"),
    (AsyncSentinelManagedConnection, "connect_check_health", "store/sentinel.py"),
    (AsyncSentinelManagedConnection, "is_connected", "store/sentinel.py"),
    (RedisConnection, "pack_commands", "store/__init__.py"),
    (RedisConnection, "send_packed_command", "store/__init__.py"),
    (RedisConnection, "read_response", "store/__init__.py, store/replication.py"),
]

#: (module, name, the file of ours that relies on it)
MODULE_NAMES = [
    ("celery.backends.base", "_is_request_ignore_result", "celery_ext/backend.py"),
    ("celery.app.task", "extract_exec_options", "celery_ext/task.py"),
    ("celery.worker.state", "active_requests", "celery_ext/worker_state.py"),
    ("celery.worker.state", "should_terminate", "celery_ext/request.py"),
    ("celery.worker.state", "successful_requests", "celery_ext/request.py"),
    ("celery.concurrency", "get_implementation", "celery_ext/queue_worker.py"),
]

#: What celery_ext/sending.py hands Celery's message builder, by name.
BUILDER_PARAMETERS = (
    "countdown", "eta", "group_id", "group_index", "expires", "retries", "chord", "callbacks",
    "errbacks", "reply_to", "time_limit", "soft_time_limit", "create_sent_event", "root_id",
    "parent_id", "shadow", "chain", "origin", "ignore_result", "argsrepr", "kwargsrepr",
    "stamped_headers", "replaced_task_nesting",
)  # fmt: skip


def _missing(what: str, ours: str) -> str:
    return (
        f"{what} is gone in the installed Celery/kombu: meetingtasks/{ours} relies on it. "
        "Read that file's docstring and port it before upgrading."
    )


@pytest.mark.parametrize(("owner", "name", "ours"), CLASS_NAMES)
def test_class_names(owner: object, name: str, ours: str) -> None:
    assert hasattr(owner, name), _missing(f"{getattr(owner, '__name__', owner)}.{name}", ours)


@pytest.mark.parametrize(("module", "name", "ours"), MODULE_NAMES)
def test_module_names(module: str, name: str, ours: str) -> None:
    assert hasattr(importlib.import_module(module), name), _missing(f"{module}.{name}", ours)


def test_the_message_builder_takes_what_the_send_path_passes() -> None:
    accepted = inspect.signature(AMQP.as_task_v2).parameters
    absent = [name for name in BUILDER_PARAMETERS if name not in accepted]
    assert not absent, _missing(f"AMQP.as_task_v2's parameters {absent}", "celery_ext/sending.py")


def test_the_worker_hands_its_pool_what_queue_worker_and_thread_pool_read() -> None:
    accepted = inspect.signature(WorkController.setup_defaults).parameters
    absent = [name for name in ("pool", "pool_cls", "concurrency") if name not in accepted]
    assert not absent, _missing(f"WorkController.setup_defaults's {absent}", "queue_worker.py")
    # The task's limits reach the pool's on_apply as these keywords.
    source = inspect.getsource(Request.execute_using_pool)
    assert "soft_timeout=" in source and "timeout=" in source, _missing(
        "Request.execute_using_pool's soft_timeout/timeout", "celery_ext/thread_pool.py"
    )


def test_instance_names_of_a_live_channel_and_dispatcher(app) -> None:
    """Set in constructors, so looked up on real objects."""
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        for name in (
            "_queue_cycle",
            "_in_poll",
            "_fanout_queues",
            "priority_steps",
            "active_queues",
        ):
            assert hasattr(channel, name), _missing(f"Channel().{name}", "celery_ext/transport.py")
        assert hasattr(channel.qos, "_delivered"), _missing("QoS()._delivered", "transport.py")
        assert hasattr(connection.transport, "_deliver")
        dispatcher = app.events.Dispatcher(connection, enabled=False)
        assert hasattr(dispatcher, "_outbound_buffer"), _missing(
            "EventDispatcher()._outbound_buffer", "celery_ext/event_dispatcher.py"
        )
    consumer = app.backend.result_consumer
    for name in ("subscribed_to", "_decode_result"):
        assert hasattr(consumer, name), _missing(f"ResultConsumer().{name}", "backend.py")
    assert hasattr(app.amqp.router, "routes"), _missing("Router().routes", "celery_ext/sending.py")
    assert hasattr(app, "thread_oid"), _missing("Celery.thread_oid", "celery_ext/sending.py")
    assert hasattr(app.tasks["system.echo"], "__header__"), _missing(
        "a task's __header__ (its signature check)", "policies/submission.py"
    )


@pytest.mark.parametrize("package", ["celery", "kombu"])
def test_the_pinned_minor_version_is_the_one_installed(package: str) -> None:
    """pyproject.toml allows only the minor version these names were checked against."""
    installed = importlib.metadata.version(package)
    pin = re.search(rf'"{package}(?:\[\w+\])?>=([\d.]+),<([\d.]+)"', PYPROJECT.read_text())
    assert pin, f"pyproject.toml must pin {package} to one minor version (>=X.Y,<X.Y+1)"
    low, high = pin.groups()
    assert low.split(".")[:2] == installed.split(".")[:2], (
        f"{package} {installed} is installed, pyproject.toml allows {low} to <{high}"
    )


def test_kombu_reconnects_with_the_pauses_the_worker_passes() -> None:
    from meetingtasks.celery_ext.consumer import RECONNECT

    accepted = inspect.signature(Connection._ensure_connection).parameters
    absent = [name for name in RECONNECT if name not in accepted]
    assert not absent, _missing(f"Connection.ensure_connection's {absent}", "consumer.py")
    source = inspect.getsource(CeleryConsumer.ensure_connected)
    assert "conn.ensure_connection(" in source, _missing(
        "Consumer.ensure_connected calling conn.ensure_connection", "celery_ext/consumer.py"
    )


def test_redis_py_instance_names_of_a_live_pool_and_connection(redis) -> None:
    """What ``store/__init__.py`` opens its script connections with, and the socket the
    subscriber thread polls (``store/subscriber.py``, ``store/sentinel.py``)."""
    from meetingtasks.store import get_redis

    pool = get_redis().connection_pool
    assert isinstance(pool.connection_kwargs, dict), _missing(
        "ConnectionPool.connection_kwargs", "store/__init__.py"
    )
    connection = pool.connection_class(**pool.connection_kwargs)
    try:
        connection.connect()
        assert connection._sock is not None, _missing("Connection._sock", "store/subscriber.py")
    finally:
        connection.disconnect()


def test_uvicorn_names_the_direct_send_relies_on() -> None:
    """gateway/ws_protocol.py subclasses uvicorn's wsproto protocol and reads these."""
    import asyncio

    import uvicorn
    from uvicorn.protocols.websockets.wsproto_impl import WSProtocol
    from uvicorn.server import ServerState

    assert hasattr(WSProtocol, "handle_connect"), _missing("WSProtocol.handle_connect", "ws")
    assert "self.scope" in inspect.getsource(WSProtocol.handle_connect), _missing(
        "WSProtocol.handle_connect building self.scope", "gateway/ws_protocol.py"
    )
    config = uvicorn.Config(lambda *_: None, ws="wsproto")
    config.load()
    loop = asyncio.new_event_loop()
    try:
        protocol = WSProtocol(config, ServerState(), {}, _loop=loop)
    finally:
        loop.close()
    for name in ("transport", "handshake_complete", "close_sent"):
        assert hasattr(protocol, name), _missing(f"WSProtocol().{name}", "gateway/ws_protocol.py")
