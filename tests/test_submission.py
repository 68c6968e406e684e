"""Every submission is checked before anything is queued; idempotency keys dedupe."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from meetingtasks.base.keys import get_keys
from meetingtasks.base.priority import Priority
from meetingtasks.base.settings import get_settings
from meetingtasks.errors import InvalidOption, InvalidPayload, UnknownTaskType, ValidationError
from meetingtasks.scheduler import TaskScheduler

NORMAL_DEFAULT = get_keys().queue("default", Priority.NORMAL)


@pytest.mark.parametrize(
    ("kwargs", "options", "error", "match"),
    [
        ({"value": object()}, {}, InvalidPayload, "not JSON-serialisable"),
        ({"value": "x" * (1024 * 1024)}, {}, InvalidPayload, "over the 1048576-byte limit"),
        ({"unknown": 1}, {}, InvalidPayload, "does not fit task system.echo"),
        ({"value": "half \udc80 a pair"}, {}, InvalidPayload, "lone UTF-16 surrogate"),
        ({"value": {"k": ["\ud83d"]}}, {}, InvalidPayload, "lone UTF-16 surrogate"),
        ({}, {"countdown": -5}, InvalidOption, "countdown"),
        ({}, {"countdown": "soon"}, InvalidOption, "countdown"),
        ({}, {"eta": "next tuesday"}, InvalidOption, "eta must be"),
        ({}, {"countdown": 400 * 24 * 3600}, InvalidOption, "one year at most"),
        ({}, {"expires": -1}, InvalidOption, "expires"),
        ({}, {"max_retries": -1}, InvalidOption, "max_retries"),
        ({}, {"max_retries": 1.5}, InvalidOption, "max_retries"),
        ({}, {"timeout": float("nan")}, InvalidOption, "timeout"),
        ({}, {"idempotency_key": ""}, InvalidOption, "idempotency_key"),
        ({}, {"idempotency_key": "k" * 201}, InvalidOption, "idempotency_key"),
        ({}, {"priority": "asap"}, ValidationError, "bad priority"),
        ({}, {"priority": 42}, ValidationError, "bad priority"),
        ({}, {"queue": "nowhere"}, InvalidOption, "unknown queue 'nowhere'"),
        ({}, {"expires": "tomorrow"}, InvalidOption, "expires must be"),
    ],
)
def test_bad_submissions_are_refused_and_nothing_is_queued(
    app, redis, kwargs: dict, options: dict, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        app.send_task("system.echo", kwargs=kwargs, **options)
    assert redis.dbsize() == 0


def test_args_and_payload_must_have_the_right_shape(app, redis) -> None:
    with pytest.raises(InvalidPayload, match="must be a JSON object"):
        app.send_task("system.echo", kwargs=["value"])
    with pytest.raises(InvalidPayload, match="must be a list"):
        app.send_task("system.echo", args="abc")
    with pytest.raises(InvalidPayload, match="does not fit"):
        app.tasks["system.echo"].delay(1, 2, 3)
    assert redis.dbsize() == 0


def test_text_outside_ascii_and_escaped_pairs_are_accepted(app, redis) -> None:
    app.send_task("system.echo", kwargs={"value": "café 😀 \\ud800 as plain text"})
    assert redis.llen(NORMAL_DEFAULT) == 1


def test_the_payload_limit_is_a_setting() -> None:
    assert get_settings().max_payload_bytes == 1024 * 1024


def test_a_datetime_eta_and_a_countdown_are_both_accepted(app, redis) -> None:
    eta = datetime.now(UTC) + timedelta(hours=2)
    app.send_task("system.echo", kwargs={"value": 1}, eta=eta)
    app.send_task("system.echo", kwargs={"value": 2}, eta=eta.isoformat())
    app.send_task("system.echo", kwargs={"value": 3}, countdown=60)
    assert TaskScheduler().pending() == 3


def test_the_same_idempotency_key_returns_the_first_task(app, redis) -> None:
    scheduler = TaskScheduler()
    first = scheduler.submit("system.echo", {"value": 1}, idempotency_key="order-42")
    again = scheduler.submit("system.echo", {"value": 2}, idempotency_key="order-42")
    other = scheduler.submit("system.echo", {"value": 3}, idempotency_key="order-43")

    assert again == first
    assert other != first
    assert redis.llen(NORMAL_DEFAULT) == 2


def test_concurrent_submissions_with_one_key_queue_one_task(app, redis) -> None:
    ids: list[str] = []
    start = threading.Barrier(8)

    def submit() -> None:
        start.wait()
        ids.append(TaskScheduler().submit("system.noop", idempotency_key="burst"))

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(set(ids)) == 1
    assert redis.llen(NORMAL_DEFAULT) == 1


def test_a_key_is_released_when_sending_fails(app, redis) -> None:
    with pytest.raises(UnknownTaskType):  # refused by the router, after the key was claimed
        app.send_task("system.nonexistent", idempotency_key="retry-me")
    good = app.send_task("system.echo", kwargs={"value": 1}, idempotency_key="retry-me")
    assert redis.get(get_keys().idempotency("retry-me")) == good.id


def test_every_way_of_sending_refuses_bad_input_before_queueing(app, redis) -> None:
    """delay(), apply_async() and dispatch() share the checks of send_task."""
    from meetingtasks.dispatch import TaskDispatcher, TaskRequest
    from tests.worker_tasks import record

    with pytest.raises(InvalidPayload, match="not JSON-serialisable"):
        record.delay(object())
    with pytest.raises(InvalidOption, match="unknown queue"):
        record.apply_async(("x",), queue="nowhere")
    with pytest.raises(ValidationError, match="bad priority"):
        record.apply_async(("x",), priority="whenever")
    with pytest.raises(InvalidPayload, match="not JSON-serialisable"):
        TaskDispatcher().dispatch(TaskRequest(type="system.echo", payload={"value": {1, 2}}))
    assert redis.dbsize() == 0
