"""The one send path queues what Celery's own ``send_task`` queues, field by field.

Each case runs one user-level call (``delay``, ``apply_async``, ``send_task``, canvas,
``TaskDispatcher.dispatch``) twice: through our path, then through Celery's own
``send_task`` (kombu's Producer, Celery's ``send_task_message`` and event dispatcher)
with our checks applied first. Both land in the same Redis, and the messages found
there (on the queue lists or in the delay store) and the task-sent events published
must be the same but for what differs between any two sends (ids, clocks, times).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery import Celery, chain, chord, group, signals
from celery.utils.saferepr import saferepr
from hypothesis import given, settings
from hypothesis import strategies as st

from meetingtasks.base.keys import get_keys
from meetingtasks.base.priority import Priority
from meetingtasks.celery_ext import sending
from meetingtasks.celery_ext.sending import fast_saferepr
from meetingtasks.dispatch import TaskDispatcher, TaskRequest
from meetingtasks.policies import submission
from meetingtasks.policies.routing import get_route_table
from tests.support.messages import decoded, published
from tests.worker_tasks import record

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
#: Floats that are times of the send (our headers; the event's clock and timestamp).
PER_SEND_NUMBERS = {"mt_enqueued_at", "mt_due_at", "timestamp", "clock"}
#: kombu's ``expiration`` property: milliseconds left until ``expires``, counted at the
#: send, so two sends a few milliseconds apart differ in it.
MILLISECONDS_LEFT = "expiration"


def celerys_send_task(self: Celery, name: str, args: Any = None, kwargs: Any = None, **options):
    """Celery's own send_task, after the checks and option translation ours applies."""
    submission.apply_options(options, sending.limits(self))
    return Celery.send_task(self, name, args, kwargs, **options)


def normalized(value: Any, times: list[float]) -> Any:
    """``value`` with ids as <uuid> and times as <time> (their values added to ``times``)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in PER_SEND_NUMBERS and isinstance(item, int | float):
                times.append(float(item))
                out[key] = "<time>"
            elif key == MILLISECONDS_LEFT and isinstance(item, str) and item.isdigit():
                times.append(int(item) / 1000)  # seconds, compared as times are
                out[key] = "<ms left>"
            else:
                out[key] = normalized(item, times)
        return out
    if isinstance(value, list | tuple):
        return [normalized(item, times) for item in value]
    if isinstance(value, str):
        if ISO_TIME.match(value):
            times.append(datetime.fromisoformat(value).timestamp())
            return "<time>"
        return UUID.sub("<uuid>", value)
    return value


def take_messages(redis) -> list[dict]:
    """Every message on a queue list or in the delay store, oldest first; removed."""
    keys = get_keys()
    found = []
    for queue in get_route_table().queues:
        for priority in Priority:
            list_key = keys.queue(queue, priority)
            found += [decoded(raw) for raw in reversed(redis.lrange(list_key, 0, -1))]
            redis.delete(list_key)
    for entry in redis.hvals(keys.delayed_messages()):
        found.append(decoded(json.loads(entry)[1]))
    redis.delete(keys.delayed(), keys.delayed_messages())
    return found


def sent_and_published(redis, send: Callable[[], Any]) -> tuple[list[dict], list[dict]]:
    """What ``send()`` queued, and the task-sent events it published (grouped unpacked)."""
    events = []
    for envelope in published(redis, send, "task.*"):
        body = envelope["body"]
        events += body if isinstance(body, list) else [body]
    return take_messages(redis), events


def both_ways(app, redis, monkeypatch, send: Callable[[], Any]) -> tuple[Any, Any]:
    ours = sent_and_published(redis, send)
    with monkeypatch.context() as patch:
        patch.setattr(type(app), "send_task", celerys_send_task)
        celerys = sent_and_published(redis, send)
    return ours, celerys


def assert_same(ours: Any, celerys: Any) -> None:
    our_times: list[float] = []
    celery_times: list[float] = []
    assert normalized(ours, our_times) == normalized(celerys, celery_times)
    # Each time was taken at its own send: a few seconds apart at most.
    assert our_times == pytest.approx(celery_times, abs=5)


SCENARIOS: dict[str, Callable[[], Any]] = {
    "delay": lambda: record.delay("x"),
    "apply_async with Celery's options": lambda: record.apply_async(
        ("x",),
        {"sleep": 0.0},
        queue="media",
        priority=5,
        headers={"trace": "t-1"},
        task_id="caller-id-1",
        expires=600,
        link=record.s("next"),
        link_error=record.si("failed", "errors"),
        ignore_result=True,
        shadow="shown",
        time_limit=10,
        soft_time_limit=5,
    ),
    "send_task with ours": lambda: record.app.send_task(
        "ai.summarize", kwargs={"text": "t"}, timeout=30, max_retries=2, priority="critical"
    ),
    "countdown": lambda: record.apply_async(("later",), countdown=30),
    "eta and expires as datetimes": lambda: record.apply_async(
        ("x",),
        eta=datetime.now(UTC) + timedelta(hours=2),
        expires=datetime.now(UTC) + timedelta(hours=3),
    ),
    "arguments saferepr shortens": lambda: record.apply_async(
        ('it\'s "quoted"\n', "j" * 2000), {"sleep": 0.0}
    ),
    "chain": lambda: chain(record.s("a"), record.s("b"), record.s("c")).apply_async(),
    "group": lambda: group(record.s("a"), record.s("b", "g")).apply_async(),
    "chord": lambda: chord([record.s("a"), record.s("b")], record.s("done")).apply_async(),
    "dispatch": lambda: TaskDispatcher().dispatch(
        TaskRequest(
            type="ai.llm_chat",
            payload={"prompt": "hi"},
            priority="high",
            timeout=30,
            max_retries=2,
            session_id="s1",
            request_id="r1",
            user_id="u1",
        )
    ),
}


@pytest.mark.parametrize("send", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_the_message_and_event_are_the_ones_celery_sends(app, redis, monkeypatch, send) -> None:
    (our_messages, our_events), (celery_messages, celery_events) = both_ways(
        app, redis, monkeypatch, send
    )
    assert our_messages, "nothing was queued"
    assert len(our_events) == len(our_messages)
    assert_same(our_messages, celery_messages)
    assert_same(our_events, celery_events)


def test_what_the_comparison_sees(app, redis, monkeypatch) -> None:
    """The comparison is not blind: a difference in any field is caught."""
    (ours, _), (celerys, _) = both_ways(app, redis, monkeypatch, SCENARIOS["delay"])
    celerys[0]["headers"]["argsrepr"] = "('y',)"
    with pytest.raises(AssertionError):
        assert_same(ours, celerys)
    celerys[0]["headers"]["argsrepr"] = ours[0]["headers"]["argsrepr"]
    celerys[0]["properties"]["priority"] = 0
    with pytest.raises(AssertionError):
        assert_same(ours, celerys)


def test_a_message_carries_what_its_options_asked_for(app, redis) -> None:
    """The fields themselves, beyond agreeing with Celery."""
    record.apply_async(
        ("x",), queue="media", priority=5, headers={"trace": "t-1"}, task_id="caller-id-2",
        expires=600, link=record.s("next"), ignore_result=True, time_limit=10, soft_time_limit=5,
    )  # fmt: skip
    [message] = take_messages(redis)
    headers, properties = message["headers"], message["properties"]
    assert headers["id"] == "caller-id-2" and headers["trace"] == "t-1"
    assert headers["timelimit"] == [10, 5] and headers["ignore_result"] is True
    assert properties["priority"] == Priority.HIGH  # 5 lands with HIGH
    assert properties["delivery_info"] == {"exchange": "", "routing_key": "media"}
    assert 590_000 <= int(properties["expiration"]) <= 600_000
    assert message["body"][2]["callbacks"][0]["args"] == ["next"]


def test_publish_signals_fire_and_a_header_added_before_publish_is_sent(app, redis) -> None:
    seen: dict[str, Any] = {}

    def before(sender: str, headers: dict, routing_key: str, **_: Any) -> None:
        headers["added_by_signal"] = "yes"
        seen["before"] = (sender, routing_key)

    def after(sender: str, headers: dict, **_: Any) -> None:
        seen["after"] = (sender, headers["id"])

    def sent(sender: str, task_id: str, args: list, **_: Any) -> None:
        seen["sent"] = (sender, task_id, list(args))

    signals.before_task_publish.connect(before)
    signals.after_task_publish.connect(after)
    signals.task_sent.connect(sent)
    try:
        result = record.apply_async(("x",), queue="media")
    finally:
        signals.before_task_publish.disconnect(before)
        signals.after_task_publish.disconnect(after)
        signals.task_sent.disconnect(sent)
    [message] = take_messages(redis)
    assert message["headers"]["added_by_signal"] == "yes"
    assert seen == {
        "before": ("test.record", "media"),
        "after": ("test.record", result.id),
        "sent": ("test.record", result.id, ["x"]),
    }


def test_a_batch_of_sends_is_one_script_call_with_its_events_grouped(app, redis) -> None:
    """Sends inside ``queueing.batch()`` (what dispatch_batch uses) share one enqueue."""
    from meetingtasks.store import queueing

    redis.config_resetstat()
    for i in range(3):
        record.delay(str(i))
    take_messages(redis)
    single = redis.info("commandstats")["cmdstat_evalsha"]["calls"]
    redis.config_resetstat()

    def batched() -> None:
        with queueing.batch():
            for i in range(3):
                record.delay(str(i))

    messages, grouped = sent_and_published(redis, batched)
    assert redis.info("commandstats")["cmdstat_evalsha"]["calls"] == 1 < single
    assert [m["body"][0] for m in messages] == [["0"], ["1"], ["2"]]
    assert [e["uuid"] for e in grouped] == [m["headers"]["id"] for m in messages]


# -- argsrepr --------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.tuples(json_values, json_values) | st.dictionaries(st.text(max_size=8), json_values))
def test_fast_saferepr_is_celerys_saferepr(value: Any) -> None:
    for maxsize, levels in ((1024, 3), (40, 3), (1024, 1)):
        assert fast_saferepr(value, maxsize, levels) == saferepr(value, maxsize, maxlevels=levels)
