"""What Celery users rely on, end to end through our send path and a real worker.

Only ``celery worker`` processes run here (no scheduler process): the worker's own
scheduler loops fire delays and retries.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from celery import chain, chord, group, signals

from meetingtasks.base.keys import get_keys
from meetingtasks.base.priority import Priority
from meetingtasks.dispatch import TaskDispatcher
from tests.support.waiting import wait_for_journal, wait_until
from tests.worker_tasks import (
    add,
    boom,
    context,
    flaky,
    read_journal,
    record,
    retry_explicitly,
    spawn,
    total,
)

RESULT_TIMEOUT = 60


@pytest.fixture
def worker(start_worker):
    return start_worker(
        ["default", "media", "user"],
        concurrency=2,
        env={"MEETINGTASKS_RETRY_BACKOFF_BASE": "0.2", "MEETINGTASKS_SCHEDULER_INTERVAL": "0.1"},
    )


def test_countdown_and_eta_run_when_due(app, worker) -> None:
    sent = time.time()
    by_countdown = record.apply_async(("countdown", "due"), countdown=1)
    by_eta = record.apply_async(("eta", "due"), eta=datetime.now(UTC) + timedelta(seconds=1))
    assert TaskDispatcher().status(by_countdown.id).status == "scheduled"

    assert by_countdown.get(timeout=RESULT_TIMEOUT) == "countdown"
    assert by_eta.get(timeout=RESULT_TIMEOUT) == "eta"
    assert all(entry["at"] >= sent + 1 for entry in read_journal("due"))


def test_a_task_past_its_expiry_is_not_run(app, start_worker) -> None:
    expired = record.apply_async(("stale", "expiry"), expires=0.5)
    time.sleep(1)
    start_worker(["default"])
    fresh = record.apply_async(("fresh", "expiry"), expires=60)
    assert fresh.get(timeout=RESULT_TIMEOUT) == "fresh"
    wait_until(lambda: TaskDispatcher().status(expired.id).done, "the expired task to end")
    assert TaskDispatcher().status(expired.id).status == "timeout"
    assert [entry["label"] for entry in read_journal("expiry")] == ["fresh"]


def test_headers_and_a_callers_task_id_reach_the_task(app, worker) -> None:
    result = context.apply_async(headers={"trace": "t-42"}, task_id="caller-chosen-id")
    seen = result.get(timeout=RESULT_TIMEOUT)
    assert result.id == seen["id"] == seen["root_id"] == "caller-chosen-id"
    assert seen["headers"]["trace"] == "t-42"


def test_a_task_sent_from_a_task_has_it_as_parent_and_root(app, worker) -> None:
    parent = spawn.delay()
    child_id = parent.get(timeout=RESULT_TIMEOUT)
    child = app.AsyncResult(child_id).get(timeout=RESULT_TIMEOUT)
    assert child["parent_id"] == child["root_id"] == parent.id


def test_link_and_link_error_run_their_callbacks(app, worker) -> None:
    ok = add.apply_async((2, 3), link=record.s("linked"))  # runs record(5, "linked")
    assert ok.get(timeout=RESULT_TIMEOUT) == 5
    failed = boom.apply_async(link_error=record.si("errback", "linked"))
    with pytest.raises(Exception, match="boom"):
        failed.get(timeout=RESULT_TIMEOUT)
    entries = wait_for_journal("linked", 2)
    assert sorted(str(e["label"]) for e in entries) == ["5", "errback"]


def test_chain_group_and_chord(app, worker) -> None:
    assert (
        chain(add.s(1, 2), add.s(10), add.s(100)).apply_async().get(timeout=RESULT_TIMEOUT) == 113
    )
    assert group(add.s(i, i) for i in range(4)).apply_async().get(timeout=RESULT_TIMEOUT) == [
        0,
        2,
        4,
        6,
    ]
    assert (
        chord((add.s(i, 1) for i in range(3)), total.s()).apply_async().get(timeout=RESULT_TIMEOUT)
        == 6
    )


def test_self_retry_and_retryable_errors_retry_until_done(app, worker) -> None:
    explicit = retry_explicitly.delay("explicit", times=2)
    assert explicit.get(timeout=RESULT_TIMEOUT) == 2
    assert [e["retries"] for e in read_journal("explicit")] == [0, 1, 2]
    transient = flaky.delay("transient", fail_times=2)
    assert transient.get(timeout=RESULT_TIMEOUT) == 2
    assert TaskDispatcher().status(transient.id).attempts == 3


def test_ignore_result_runs_the_task_and_stores_no_result(app, redis, worker) -> None:
    """Nobody watches it (no result, no dispatcher, no session, no time limit): it runs
    and is counted, and leaves nothing in Redis, not even a record."""
    result = record.apply_async(("ignored", "ignore"), ignore_result=True)
    wait_until(lambda: read_journal("ignore"), "the task to run")
    counted = lambda: TaskDispatcher().stats()["by_type"].get("test.record", {})  # noqa: E731
    wait_until(lambda: counted().get("completed") == 1, "its end to be counted")
    assert counted() == {"dispatched": 1, "completed": 1}
    assert TaskDispatcher().status(result.id) is None
    assert redis.get(app.backend.get_key_for_task(result.id)) is None
    assert not redis.exists(get_keys().status(result.id))


def test_routing_by_queue_and_by_the_route_table(app, start_worker) -> None:
    media_only = start_worker(["media"])
    to_media = context.apply_async(queue="media")
    routed = app.send_task("media.stream_stopped", kwargs={"meeting_id": "m", "stream_id": "s1"})
    assert to_media.get(timeout=RESULT_TIMEOUT)["queue"] == "media"
    routed.get(timeout=RESULT_TIMEOUT)
    elsewhere = context.apply_async(queue="user")
    time.sleep(1)
    assert elsewhere.state == "PENDING"  # nobody reads "user"
    media_only.stop()


def test_priority_names_and_numbers_order_a_backlog(app, start_worker) -> None:
    sent = [
        ("low", "low"),
        ("9", 9),
        ("5", 5),
        ("high", "high"),
        ("0", 0),
        ("critical", "critical"),
    ]
    for label, priority in sent:
        record.apply_async((label, "ranked"), queue="media", priority=priority)
    start_worker(["media"])
    entries = wait_for_journal("ranked", len(sent))
    assert [Priority(e["priority"]) for e in entries] == sorted(
        Priority(e["priority"]) for e in entries
    )
    assert {e["label"]: e["priority"] for e in entries} == {
        "critical": 0, "0": 0, "high": 3, "5": 3, "low": 9, "9": 9,
    }  # fmt: skip


def test_a_header_added_by_before_task_publish_reaches_the_task(app, worker) -> None:
    published: list[str] = []

    def before(headers: dict, **_: object) -> None:
        headers["tenant"] = "acme"

    def after(headers: dict, **_: object) -> None:
        published.append(headers["id"])

    signals.before_task_publish.connect(before)
    signals.after_task_publish.connect(after)
    try:
        result = context.delay()
    finally:
        signals.before_task_publish.disconnect(before)
        signals.after_task_publish.disconnect(after)
    assert result.get(timeout=RESULT_TIMEOUT)["headers"]["tenant"] == "acme"
    assert published == [result.id]
