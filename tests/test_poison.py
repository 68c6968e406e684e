"""Poison: no message a producer puts on a queue stops a worker or the recovery sweep, and
a task that kills its pool process is quarantined instead of rerun forever.

Each case pushes one hostile message straight onto a queue list (with its doorbell token,
as a producer of ours would), then 20 good tasks, against a real `-c 2` worker: the worker
lives, the good tasks run, the bad message is on the malformed list with its reason and
its raw bytes, its status is final, and a ``task.malformed`` event went out.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis import Redis

from meetingtasks.base.keys import get_keys
from meetingtasks.base.priority import Priority
from meetingtasks.dead_letter_queue import DeadLetterQueue
from meetingtasks.store import malformed
from meetingtasks.store import status as status_store
from tests.support.cli import meetingtasks_cli
from tests.support.waiting import wait_until
from tests.worker_tasks import crash, leak, read_journal, record, sleep

GOOD = 20


def genuine(redis: Redis, label: str = "bad") -> dict[str, Any]:
    """A real message of ours, taken back off its queue (its status record stays)."""
    record.apply_async((label, "poison"), queue="user")
    return json.loads(redis.rpop(get_keys().queue("user", Priority.NORMAL)))


def push(redis: Redis, raw: bytes | str) -> None:
    """Put ``raw`` on the user queue as a producer would, with its doorbell token."""
    redis.lpush(get_keys().queue("user", Priority.NORMAL), raw)
    redis.lpush(get_keys().doorbell("user"), 1)


def encoded_body(payload: Any) -> str:
    return base64.b64encode(json.dumps(payload).encode()).decode()


def _with(message: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> bytes:
    change(message)
    return json.dumps(message).encode()


def _bad_base64(m: dict[str, Any]) -> None:
    m["body"] = "!!!this is not base64!!!"


def _wrong_body_shape(m: dict[str, Any]) -> None:
    m["body"] = encoded_body({"args": [1]})


def _failing_type_tag(m: dict[str, Any]) -> None:
    m["headers"]["when"] = {"__type__": "datetime", "__value__": "not-a-date"}


def _tag_object(m: dict[str, Any]) -> None:
    m["properties"]["delivery_tag"] = {"not": "a string"}


def _info_number(m: dict[str, Any]) -> None:
    m["properties"]["delivery_info"] = 5


def _id_object(m: dict[str, Any]) -> None:
    m["headers"]["id"] = {"not": "a string"}


def _body_not_json(m: dict[str, Any]) -> None:
    m["body"] = base64.b64encode(b"not json at all").decode()


def _pickle(m: dict[str, Any]) -> None:
    m["content-type"] = "application/x-python-serialize"
    m["content-encoding"] = "binary"


def _argument_kombu_cannot_decode(m: dict[str, Any]) -> None:
    m["body"] = encoded_body([[{"__type__": "datetime", "__value__": "never"}], {}, {}])


def _invalid_utf8(message: dict[str, Any]) -> bytes:
    message["headers"]["note"] = "PLACEHOLDER"
    return json.dumps(message).encode().replace(b"PLACEHOLDER", b"\xff\xfe")


def _beyond_a_double(message: dict[str, Any]) -> bytes:
    message["headers"]["note"] = "PLACEHOLDER"
    return json.dumps(message).encode().replace(b'"PLACEHOLDER"', b"1e400")


#: (case, the raw message from a genuine one, reason expected, whether its id is readable)
CASES = [
    ("body not base64", lambda m: _with(m, _bad_base64), "not base64", True),
    ("body not [args, kwargs, embed]", lambda m: _with(m, _wrong_body_shape),
     "[args, kwargs, embed]", True),
    ("failing kombu type tag", lambda m: _with(m, _failing_type_tag), "kombu", True),
    ("invalid UTF-8", _invalid_utf8, "not UTF-8", True),
    ("number beyond a double", _beyond_a_double, "infinity", True),
    ("delivery_tag an object", lambda m: _with(m, _tag_object),
     "delivery_tag is not a string", True),
    ("delivery_info a number", lambda m: _with(m, _info_number),
     "delivery_info is not an object", True),
    ("headers.id an object", lambda m: _with(m, _id_object), "headers.id is not a string", False),
    ("body not JSON", lambda m: _with(m, _body_not_json), "does not decode", True),
    ("pickle content type", lambda m: _with(m, _pickle), "content type refused", True),
    ("argument kombu cannot decode", lambda m: _with(m, _argument_kombu_cannot_decode),
     "does not decode", True),
]  # fmt: skip


@pytest.fixture
def events(redis: Redis) -> Iterator[list[dict[str, Any]]]:
    """The ``task.malformed`` events published while the test runs."""
    seen: list[dict[str, Any]] = []
    pubsub = redis.pubsub()
    pubsub.subscribe(get_keys().event_channel("tasks"))
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.2)
            if message and message["type"] == "message":
                seen.append(json.loads(message["data"]))

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    yield seen
    stop.set()
    thread.join(5)
    pubsub.close()


def set_aside(redis_server) -> list[malformed.MalformedEntry]:
    return malformed.entries(get_keys(), 100)


def good_tasks_run(worker) -> None:
    results = [record.apply_async((f"good-{i}", "poison"), queue="user") for i in range(GOOD)]
    assert [r.get(timeout=60) for r in results] == [f"good-{i}" for i in range(GOOD)]
    assert worker.process.poll() is None, worker.log()


@pytest.mark.parametrize(("case", "make", "reason", "has_id"), CASES, ids=[c[0] for c in CASES])
def test_a_message_that_cannot_run_is_set_aside_and_the_worker_goes_on(
    app, redis, redis_server, start_worker, events, case, make, reason, has_id
) -> None:
    message = genuine(redis)
    task_id = message["headers"]["id"]
    raw = make(message)
    push(redis, raw)
    worker = start_worker(["user"], concurrency=2)

    good_tasks_run(worker)
    [entry] = set_aside(redis_server)
    assert reason in entry.reason, entry
    assert entry.raw == raw
    assert "Unrecoverable error" not in worker.log()
    labels = [e["label"] for e in read_journal("poison")]
    assert sorted(labels) == sorted(f"good-{i}" for i in range(GOOD))  # the bad one never ran
    status = status_store.read(get_keys(), [task_id])[0]
    if has_id:
        assert entry.task_id == task_id
        assert status.fields["status"] == "failed"
        assert reason in status.fields["error"]
    wait_until(lambda: events, "the task.malformed event")
    assert events[0]["type"] == "task.malformed"
    assert reason in events[0]["payload"]["reason"]
    # A second worker on the same queue is not stopped by it either.
    second = start_worker(["user"], concurrency=2)
    good_tasks_run(second)


def test_one_bad_message_in_a_batch_does_not_hold_the_good_ones(
    app, redis, redis_server, start_worker
) -> None:
    """Fetched in one step with 2 good tasks, a message the fetch script cannot hold is
    set aside and the good ones run at once (not when the worker stops)."""
    good = [record.apply_async((f"batch-{i}", "batch"), queue="user") for i in range(2)]
    queue = get_keys().queue("user", Priority.NORMAL)
    raws = [redis.rpop(queue) for _ in range(2)]
    bad = _with(genuine(redis), _tag_object)
    for raw in [raws[0], bad, raws[1]]:
        push(redis, raw)
    worker = start_worker(["user"], concurrency=4)
    assert sorted(r.get(timeout=30) for r in good) == ["batch-0", "batch-1"]
    assert [e.raw for e in set_aside(redis_server)] == [bad]
    assert worker.process.poll() is None


def test_a_dead_workers_unreadable_held_message_does_not_stall_recovery(
    app, redis, redis_server, start_worker
) -> None:
    """A worker killed while it held two good tasks and two unreadable messages: the
    survivor gives the good ones back, sets the bad ones aside, and its sweeps go on."""
    keys = get_keys()
    held = {}
    for i in range(2):
        result = record.apply_async((f"held-{i}", "held"), queue="user")
        raw = redis.rpop(keys.queue("user", Priority.NORMAL))
        held[json.loads(raw)["properties"]["delivery_tag"]] = (raw.encode(), result)
    bad_utf8 = _invalid_utf8(genuine(redis))
    huge = _beyond_a_double(genuine(redis))
    binary = Redis.from_url(redis_server.url)
    entries = {tag: raw for tag, (raw, _) in held.items()}
    entries |= {"bad-utf8": bad_utf8, "bad-number": huge}
    for tag, raw in entries.items():
        binary.hset(keys.held("user", "dead-worker/1"), tag, raw)
    binary.zadd(keys.consumers(), {"dead-worker/1": time.time() - 60})  # its heartbeat lapsed

    worker = start_worker(["user"])
    assert sorted(r.get(timeout=60) for _, r in held.values()) == ["held-0", "held-1"]
    wait_until(lambda: len(set_aside(redis_server)) == 2, "the unreadable ones set aside")
    assert {e.reason.split(" ")[0] for e in set_aside(redis_server)} == {"held"}
    wait_until(lambda: not binary.exists(keys.held("user", "dead-worker/1")), "nothing left held")
    time.sleep(2)  # a few more sweeps
    assert "step failed" not in worker.log()


@pytest.mark.parametrize("how", ["exit", "segfault", "oom"])
def test_a_task_that_kills_its_pool_process_is_dead_lettered_after_three_runs(
    app, redis, start_worker, how
) -> None:
    worker = start_worker(["user"], concurrency=2)
    result = crash.apply_async((how, f"crash-{how}"), queue="user")
    task_id = result.id

    def final() -> dict[str, str] | None:
        record_ = status_store.read(get_keys(), [task_id])[0]
        return record_ if record_.get("status") == "failed" else None

    ended = wait_until(final, "the task to fail for good", timeout=90)
    assert "WorkerLost" in ended.fields["error"] and "3 times" in ended.fields["error"]
    assert ("exitcode 1" if how == "exit" else "signal") in ended.fields["error"]
    assert ended.fields["worker_lost"] == "3"
    assert len(read_journal(f"crash-{how}")) == 3
    assert [letter.task_id for letter in DeadLetterQueue().list(10)] == [task_id]
    time.sleep(3)
    assert len(read_journal(f"crash-{how}")) == 3  # not run a fourth time
    assert worker.process.poll() is None
    assert record.apply_async(("after", "after-crash"), queue="user").get(timeout=30) == "after"


def test_a_memory_error_is_the_tasks_failure_not_the_workers(app, redis, start_worker) -> None:
    worker = start_worker(["user"], concurrency=2)
    running = sleep.apply_async((2.0, "beside"), queue="user")
    result = crash.apply_async(("memory_error", "oom-error"), queue="user")

    with pytest.raises(MemoryError):
        result.get(timeout=30)
    status = status_store.read(get_keys(), [result.id])[0]
    assert status.fields["status"] == "failed" and "MemoryError" in status.fields["error"]
    assert running.get(timeout=30) == "slept"  # the other task was not disturbed
    assert worker.process.poll() is None
    assert record.apply_async(("after", "after-memory"), queue="user").get(timeout=30) == "after"
    assert result.id in [letter.task_id for letter in DeadLetterQueue().list(10)]


def test_sigterm_to_the_whole_process_group_lets_running_tasks_finish(
    app, redis, start_worker
) -> None:
    worker = start_worker(["user"], concurrency=4)
    results = [sleep.apply_async((3.0, "group-term"), queue="user") for _ in range(4)]
    wait_until(
        lambda: sum(e["event"] == "started" for e in read_journal("group-term")) == 4,
        "the four tasks to start",
    )
    os.killpg(worker.process.pid, signal.SIGTERM)  # systemd's KillMode=control-group, say
    assert worker.process.wait(60) == 0, worker.log()

    events = [e["event"] for e in read_journal("group-term")]
    assert events.count("started") == 4 and events.count("finished") == 4, events
    assert [r.get(timeout=10) for r in results] == ["slept"] * 4
    assert redis.llen(get_keys().queue("user", Priority.NORMAL)) == 0  # nothing to rerun


def test_a_leaking_task_recycles_its_pool_process_by_default(app, redis, start_worker) -> None:
    """The default ceiling (MEETINGTASKS_MAX_MEMORY_PER_CHILD, 512 MiB) replaces a pool
    process that keeps growing, before its next task."""
    start_worker(["user"], concurrency=1)
    for _ in range(6):
        leak.apply_async((150, "leak"), queue="user").get(timeout=60)
    runs = read_journal("leak")
    assert len({run["pid"] for run in runs}) > 1, runs
    assert max(run["rss_kib"] for run in runs) < (512 + 2 * 150) * 1024


def test_people_see_what_was_set_aside_in_the_cli_stats_and_metrics(app, redis) -> None:
    from meetingtasks.runtime import cluster_stats

    url = f"redis://127.0.0.1:{redis.connection_pool.connection_kwargs['port']}/0"
    poison_raw = b'{"not": "a task", "bytes": "\xff"}'
    reason = "the message has no properties object"
    malformed.set_aside(get_keys(), poison_raw, reason, "queue user")
    assert cluster_stats()["malformed"] == 1

    listed = meetingtasks_cli(
        "malformed", "list", "--json", redis_url=url, MEETINGTASKS_NAMESPACE="mttest"
    )
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)
    assert entry["reason"] == reason
    assert entry["source"] == "queue user" and entry["raw_encoding"].startswith("latin-1")
    purged = meetingtasks_cli(
        "malformed", "purge", "--yes", redis_url=url, MEETINGTASKS_NAMESPACE="mttest"
    )
    assert purged.returncode == 0 and "purged 1" in purged.stdout
    assert cluster_stats()["malformed"] == 0
