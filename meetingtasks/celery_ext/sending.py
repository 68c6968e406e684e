"""The one send path: every task message of the app is built and queued here.

``task.delay()``, ``apply_async()``, ``app.send_task()``, canvas (chain, group, chord),
``self.retry``, dead-letter requeues and ``TaskDispatcher.dispatch`` all end in
``send``, which does what Celery's ``send_task`` does, in its order:

1. the payload and our per-message options are checked (``submission.py``): bad input
   raises a ``ValidationError`` and nothing is queued;
2. Celery's router picks the queue (routes/, ``queue=``, ``task_routes``);
3. Celery's own builder makes the message (``app.amqp.create_task_message``: the
   headers, body and task-sent event fields Celery always sends);
4. the publish signals fire (a ``before_task_publish`` handler may still add headers);
5. one enqueue script call puts the message, its first status and the task-sent event
   (``store/queueing.py``), or the delay store takes it when it is not yet due.

Why not Celery's publish: per message, kombu's Producer declares the queue again,
wraps the publish in its retry machinery and sends the task-sent event through a
second producer, and every ``app.conf`` read walks layered dictionaries; together that
cost more than everything else a send does. What kombu's virtual transport makes of a
message (its envelope) is fixed, so it is built here (``envelopes.envelope``);
``tests/test_sending.py`` compares the result with Celery's own path, field by field.

A message for a non-direct exchange, or one to compress, goes through Celery's own
``send_task`` instead (it still reaches Redis through our transport, with its status).

Celery 5.7 names relied on (``tests/test_private_api.py`` checks each):
``AMQP.as_task_v2`` and the parameters it is called with, ``AMQP.argsrepr_maxsize`` and
``kwargsrepr_maxsize``, ``Router.routes`` and ``Router.route``, ``Celery.thread_oid``,
and the ``task_sent`` signal (deprecated).
"""

from __future__ import annotations

import functools
import inspect
import os
import time
from typing import Any, NamedTuple

from celery import Celery, signals
from celery.app.amqp import AMQP
from celery.app.base import Celery as CeleryBase
from celery.exceptions import QueueNotFound
from celery.utils.nodenames import anon_nodename
from celery.utils.saferepr import saferepr
from celery.utils.time import utcoffset
from kombu import Queue
from kombu.common import Broadcast
from kombu.entity import maybe_delivery_mode
from kombu.utils.functional import maybe_evaluate, maybe_list
from kombu.utils.json import dumps

from meetingtasks.base import headers as h
from meetingtasks.base import ids, tracing
from meetingtasks.base.keys import get_keys
from meetingtasks.base.priority import Priority
from meetingtasks.base.settings import get_settings
from meetingtasks.celery_ext import envelopes, task_tracing
from meetingtasks.errors import InvalidOption
from meetingtasks.policies import submission, tracking
from meetingtasks.policies.routing import get_route_table
from meetingtasks.store import queueing


class Sent(NamedTuple):
    task_id: str
    ignore_result: bool | None


#: Options Celery's ``send_task``, its message builder, ``send_task_message`` and kombu's
#: ``Producer.publish`` take by name; whatever else a caller passes becomes a message
#: property, as it does in Celery.
_CONSUMED = frozenset(inspect.signature(CeleryBase.send_task).parameters) | frozenset(
    inspect.signature(AMQP.as_task_v2).parameters
) | {
    "callbacks", "errbacks", "headers", "queue", "exchange", "routing_key", "retry",
    "retry_policy", "serializer", "delivery_mode", "compression", "declare",
    "exchange_type", "timeout", "confirm_timeout", "event_dispatcher", "mandatory",
    "immediate", "content_type", "content_encoding", "priority", "expiration",
}  # fmt: skip


class _Sender:
    """What a send reads from the app, read once per process: ``app.conf`` lookups and
    cached properties cost microseconds each, as much as building the message."""

    def __init__(self, app: Celery) -> None:
        # The task modules, so that their arguments are checked and their route
        # defaults applied (a worker imported them already).
        app.loader.import_default_modules()
        conf = app.conf
        # Celery's apply_async reads this setting on every send, walking each layer of
        # its configuration (celeryconfig's layer by getattr, each miss an exception):
        # 7 us, a tenth of a whole send. Copied to the top layer, where the lookup finds
        # it first; setting it later (tests do) writes there too.
        conf.task_always_eager = bool(conf.task_always_eager)
        self.app = app
        self.build = app.amqp.create_task_message
        self.router = app.amqp.router
        routes = [maybe_evaluate(route) for route in self.router.routes]
        #: The one route function of ``task_routes``, when it is one (see ``route``).
        self.single_route = (
            routes[0]
            if len(routes) == 1 and callable(routes[0]) and not hasattr(routes[0], "route_for_task")
            else None
        )
        self.queues = app.amqp.queues
        self.default_queue = app.amqp.default_queue
        self.sent_event = bool(conf.task_send_sent_event)
        self.default_priority = Priority.parse(conf.task_default_priority or 0)
        self.default_delivery_mode = maybe_delivery_mode(conf.task_default_delivery_mode)
        self.inherit_parent_priority = bool(conf.task_inherit_parent_priority)
        self.retry_policy = dict(conf.task_publish_retry_policy)
        self.repr_levels = conf.task_repr_maxlevels
        self.args_size = app.amqp.argsrepr_maxsize
        self.kwargs_size = app.amqp.kwargsrepr_maxsize
        self.encode_sent = functools.partial(envelopes.sent_event_messages, app)
        # Our settings, read once here too: the checks' limits, how long a record lives.
        settings = get_settings()
        self.limits = submission.Limits.from_settings(settings)
        self.status_ttl = settings.status_ttl
        self.idempotency_window = settings.idempotency_window

    def send(self, name: str, args: Any, kwargs: Any, options: dict[str, Any]) -> Sent:
        app = self.app
        task = options.pop("task_type", None)
        if task is None:
            # A plain send_task takes the defaults of the task (its route) as Celery
            # does; apply_async merged them already.
            task = app.tasks.get(name)
            defaults = (
                task._get_exec_options() if task is not None
                else _route_defaults(name, self.limits.timeout_grace)
            )  # fmt: skip
            options = {**defaults, **options}
        payload = submission.check_payload(task, name, args, kwargs, self.limits)
        submission.apply_options(options, self.limits)
        task_id = options.pop("task_id", None) or ids.uuid4()
        options = self.route(options, options.pop("route_name", None) or name, payload, task)
        if _not_ours(options):
            CeleryBase.send_task(
                app, name, payload.args, payload.kwargs, task_id=task_id, task_type=task,
                add_to_parent=False, **options,
            )  # fmt: skip
            return Sent(task_id, options.get("ignore_result"))

        expires = options.get("expires")
        if expires is not None:
            options["expiration"] = max(_seconds_until(app, expires), 0)
        if not options.get("root_id") or not options.get("parent_id"):
            parent = app.current_worker_task
            if parent:
                request = parent.request
                options["root_id"] = options.get("root_id") or request.root_id or request.id
                options["parent_id"] = options.get("parent_id") or request.id
                if self.inherit_parent_priority:
                    options.setdefault("priority", request.delivery_info.get("priority"))
        # What Celery's send_task hands its message builder (by name: the rest of the
        # options would make it build a dictionary of extras on every call).
        stamped = options.get("stamped_headers")
        headers, properties, body, sent_event = self.build(
            task_id, name, payload.args, payload.kwargs,
            countdown=options.get("countdown"), eta=options.get("eta"),
            group_id=options.get("group_id"), group_index=options.get("group_index"),
            expires=expires, retries=options.get("retries", 0), chord=options.get("chord"),
            callbacks=maybe_list(options.get("link")),
            errbacks=maybe_list(options.get("link_error")),
            reply_to=options.get("reply_to") or app.thread_oid,
            time_limit=options.get("time_limit"), soft_time_limit=options.get("soft_time_limit"),
            create_sent_event=self.sent_event, root_id=options.get("root_id"),
            parent_id=options.get("parent_id"), shadow=options.get("shadow"),
            chain=options.get("chain"), origin=_process.nodename,
            ignore_result=options.get("ignore_result"),
            argsrepr=options.get("argsrepr")
            or fast_saferepr(payload.args, self.args_size, self.repr_levels),
            kwargsrepr=options.get("kwargsrepr")
            or fast_saferepr(payload.kwargs, self.kwargs_size, self.repr_levels),
            stamped_headers=stamped,
            replaced_task_nesting=options.get("replaced_task_nesting", 0),
            **({stamp: options[stamp] for stamp in stamped} if stamped else {}),
        )  # fmt: skip
        self.publish(name, payload, headers, properties, body, sent_event, options)
        return Sent(task_id, options.get("ignore_result"))

    def route(
        self, options: dict[str, Any], name: str, payload: submission.Payload, task: Any
    ) -> dict[str, Any]:
        """Where the message goes, as Celery's router decides: the first route of
        ``task_routes`` that answers (ours: routes/ and an explicit ``queue=``), else the
        default queue, with the caller's options over the route's.

        While ``task_routes`` is one function (ours, as configured), that is done here:
        the router's generic machinery and its ``app.conf`` read cost as much as building
        the message. Any other ``task_routes`` go through Celery's router.
        """
        if self.single_route is None:
            asked = options.get("queue")
            try:
                return dict(self.router.route(options, name, payload.args, payload.kwargs, task))
            except QueueNotFound as exc:
                raise self.unknown_queue(asked if asked is not None else f"({exc})") from exc
        queue = options.pop("queue", None)
        if queue:
            options["queue"] = self.queue(queue)
        found = self.single_route(name, payload.args, payload.kwargs, options, task=task)
        if found is None:
            if "queue" in options:
                return options
            found = {"queue": self.default_queue}
        else:
            found = {"queue": found} if isinstance(found, str) else dict(found)
            if found.get("queue"):
                found["queue"] = self.queue(found["queue"])
        found.update((key, value) for key, value in options.items() if value is not None)
        return found

    def queue(self, queue: Any) -> Queue:
        """A declared queue by name (or as given); unknown ones are refused."""
        if isinstance(queue, Queue):
            return queue
        try:
            return self.queues[queue]
        except KeyError:
            raise self.unknown_queue(repr(queue)) from None

    def unknown_queue(self, what: str) -> InvalidOption:
        declared = ", ".join(sorted(self.queues))
        return InvalidOption(f"unknown queue {what}: declare it in routes/ (queues: {declared})")

    def publish(
        self,
        name: str,
        payload: submission.Payload,
        headers: dict[str, Any],
        properties: dict[str, Any],
        body: tuple[Any, ...],
        sent_event: dict[str, Any] | None,
        options: dict[str, Any],
    ) -> None:
        """What Celery's ``send_task_message`` and kombu's ``Producer.publish`` do with a
        built message, down to the transport's envelope; then one enqueue."""
        extra_headers = options.get("headers")
        if extra_headers:
            headers.update(extra_headers)
        if not tracking.watched(headers):
            headers[h.UNTRACKED] = 1
        queue = options.get("queue") or self.default_queue
        if isinstance(queue, str):
            queue = self.queues[queue]
        routing_key = options.get("routing_key") or queue.name
        extra = options.keys() - _CONSUMED
        if extra:
            extra.difference_update(options.get("stamped_headers") or ())
            properties.update((key, options[key]) for key in extra)
        if signals.before_task_publish.receivers:
            signals.before_task_publish.send(
                sender=name, body=body, exchange="", routing_key=routing_key, declare=[queue],
                headers=headers, properties=properties, retry_policy=dict(self.retry_policy),
            )  # fmt: skip
        mode = options.get("delivery_mode") or queue.exchange.delivery_mode
        properties["delivery_mode"] = maybe_delivery_mode(mode or self.default_delivery_mode)
        expiration = options.get("expiration")
        if expiration is not None:
            properties["expiration"] = str(int(expiration * 1000))
        properties["delivery_info"] = {"exchange": "", "routing_key": routing_key}
        priority = options.get("priority")
        step = int(self.default_priority if priority is None else Priority.parse(priority))
        properties["priority"] = step
        if tracing.active():
            task_tracing.annotate_send(queue.name, step, headers)
        message = envelopes.envelope(_body_json(payload, body), headers, properties)
        event = None
        if sent_event is not None:  # what Celery's EventDispatcher.publish makes of it
            event = {
                "hostname": _process.nodename, "utcoffset": utcoffset(), "pid": _process.pid,
                "clock": self.app.clock.forward(), **sent_event, "queue": queue.name,
                "exchange": "", "routing_key": routing_key, "timestamp": time.time(),
                "type": "task-sent",
            }  # fmt: skip
        queueing.put_task(
            get_keys(), queue.name, step, message, self.status_ttl, event, self.encode_sent
        )
        if signals.after_task_publish.receivers:
            signals.after_task_publish.send(
                sender=name, body=body, headers=headers, exchange="", routing_key=routing_key
            )
        if signals.task_sent.receivers:  # deprecated, and still sent by Celery 5
            signals.task_sent.send(
                sender=name, task_id=headers["id"], task=name, args=body[0], kwargs=body[1],
                eta=headers["eta"], taskset=headers["group"],
            )  # fmt: skip


@functools.cache
def _sender(app: Celery) -> _Sender:
    return _Sender(app)


def limits(app: Celery) -> submission.Limits:
    """The submission limits the send path of ``app`` checks."""
    return _sender(app).limits


def idempotency_window(app: Celery) -> int:
    """Seconds an ``idempotency_key`` keeps naming its first task."""
    return _sender(app).idempotency_window


def send(app: Celery, name: str, args: Any, kwargs: Any, options: dict[str, Any]) -> Sent:
    """Send task ``name``: Celery's ``send_task`` semantics, our checks, one round trip.

    ``options`` are ``apply_async``'s (Celery's and ours: ``timeout``, ``max_retries``);
    the caller handles ``idempotency_key``, ``result_cls`` and ``add_to_parent``.
    """
    return _sender(app).send(name, args, kwargs, options)


def _route_defaults(name: str, grace: float) -> dict[str, Any]:
    """The exec options of a routed type no task of this process implements."""
    route = get_route_table().find(name)
    if route is None:
        return {}
    return {
        "priority": int(route.priority),
        "soft_time_limit": route.timeout,
        "time_limit": submission.hard_limit(route.timeout, grace),
        "expires": route.expires,
        "retention": route.retention,
    }


def _not_ours(options: dict[str, Any]) -> bool:
    """Whether Celery must publish this one itself: an explicit exchange, a queue bound to
    a non-direct exchange (kombu resolves their bindings), or compression."""
    if options.get("exchange") or options.get("compression"):
        return True
    queue = options.get("queue")
    exchange = getattr(queue, "exchange", None)
    return isinstance(queue, Broadcast) or (exchange is not None and exchange.type != "direct")


#: The third element of the body when there are no callbacks, errbacks, chain or chord.
_NO_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_NO_EMBED_JSON = dumps(_NO_EMBED)


def _body_json(payload: submission.Payload, body: tuple[Any, ...]) -> bytes:
    """The body as kombu's JSON serializer writes it: ``[args, kwargs, embed]``, reusing
    the text ``check_payload`` already encoded the arguments to."""
    embed = body[2]
    embed_json = _NO_EMBED_JSON if embed == _NO_EMBED else dumps(embed)
    return f"{payload.json[:-1]}, {embed_json}]".encode()


def _seconds_until(app: Celery, expires: Any) -> float:
    """Celery's message TTL from ``expires`` (seconds, a datetime or an ISO string)."""
    if isinstance(expires, int | float):
        return float(expires)
    when = submission.parse_datetime(expires, "expires")
    return (when - app.now()).total_seconds()


class _Process:
    """This process's id and Celery's name for it (``gen<pid>@<host>``), kept current
    across forks instead of asked on every send."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.nodename = anon_nodename()


_process = _Process()


def _forked() -> None:
    global _process
    _process = _Process()


os.register_at_fork(after_in_child=_forked)


# -- argsrepr ---------------------------------------------------------------------------

_PLAIN_SCALARS = (int, float, bool, type(None))


def fast_saferepr(value: Any, maxsize: int, maxlevels: int) -> str:
    """Celery's ``saferepr(value, maxsize, maxlevels)``, shown by Flower and the logs.

    saferepr walks the value token by token (25 us for a small dict here, as much as
    the rest of a send); for the usual arguments (plain JSON values of printable ASCII,
    shallow and short) it equals ``repr``, which is checked first and used then.
    """
    text = repr(value)
    if not value or (len(text) < maxsize and _plain(value, maxlevels, 0)):
        return text
    return saferepr(value, maxsize, maxlevels=maxlevels)


def _plain(value: Any, maxlevels: int, level: int) -> bool:
    """Whether saferepr renders ``value`` (at nesting ``level``) exactly as repr does."""
    kind = type(value)
    if kind is str:
        return value.isascii() and value.isprintable() and "'" not in value and "\\" not in value
    if kind in _PLAIN_SCALARS:
        return True
    if kind is tuple or kind is list or kind is dict:
        if maxlevels and level >= maxlevels:  # saferepr shows it as "[...]"
            return False
        items = value.items() if kind is dict else ((None, v) for v in value)
        return all(
            (k is None or _plain(k, maxlevels, level + 1)) and _plain(v, maxlevels, level + 1)
            for k, v in items
        )
    return False
