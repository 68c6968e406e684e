"""Producers without our package (docs/wire.md): plain Celery in a process that never
imports meetingtasks, and celery-node from npm, send to our real workers through a queue's
inbox; their tasks run, they read the results, and a cancel, a delay and a priority are
honoured."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from datetime import datetime
from typing import Any

import pytest

from meetingtasks.base.keys import get_keys
from meetingtasks.base.priority import Priority
from meetingtasks.runtime import cluster_stats
from meetingtasks.store import malformed
from meetingtasks.store import status as status_store
from tests.support.waiting import wait_until
from tests.support.workers import REPO
from tests.worker_tasks import read_journal, sleep

NODE_PRODUCER = REPO / "tests" / "js" / "foreign_producer.cjs"

#: A plain Celery service, configured as docs/wire.md says, in a process of its own.
PLAIN = """
import json, sys, time
from celery import Celery
url, prefix, scenario = sys.argv[1], sys.argv[2], sys.argv[3]
app = Celery("service", broker=url, backend=url)
app.conf.broker_transport_options = {"global_keyprefix": prefix, "priority_steps": [0]}
app.conf.result_backend_transport_options = {"global_keyprefix": prefix}
out = {}
if scenario == "result":
    result = app.send_task("system.echo", kwargs={"value": 42}, queue="default:inbox")
    out["result"] = result.get(timeout=30)
elif scenario == "eta":
    result = app.send_task("test.record", ("later", "plain-eta"), queue="user:inbox",
                           countdown=2, priority=6)
    out["id"], out["sent"] = result.id, time.time()
    out["result"] = result.get(timeout=30)
elif scenario == "priority":
    out["ids"] = [app.send_task("test.record", (label, "plain-order"), queue="user:inbox",
                                priority=priority).id
                  for label, priority in (("low-1", 9), ("low-2", 9), ("critical", 0))]
elif scenario == "revoke":
    result = app.send_task("test.record", ("revoked", "plain-revoke"), queue="user:inbox",
                           countdown=3)
    result.revoke()
    time.sleep(5)
    out["id"], out["state"] = result.id, result.state
elif scenario == "failure":
    result = app.send_task("test.boom", queue="user:inbox")
    try:
        result.get(timeout=30)
    except Exception as exc:
        out["error"] = type(exc).__name__ + ": " + str(exc)
out["meetingtasks_imported"] = sorted(m for m in sys.modules if m.split(".")[0] == "meetingtasks")
print(json.dumps(out))
"""


def _url(redis: Any) -> str:
    return f"redis://127.0.0.1:{redis.connection_pool.connection_kwargs['port']}/0"


def plain(redis: Any, scenario: str) -> dict[str, Any]:
    """Run the plain Celery service's ``scenario``; what it printed."""
    done = subprocess.run(
        [sys.executable, "-c", PLAIN, _url(redis), get_keys().prefix, scenario],
        cwd="/", capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("MEETINGTASKS_")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out.pop("meetingtasks_imported") == []
    return out


def node(redis: Any, scenario: str, *args: str) -> dict[str, Any]:
    """Run the celery-node producer's ``scenario``; what it printed."""
    done = subprocess.run(
        ["node", str(NODE_PRODUCER), _url(redis), get_keys().prefix, scenario, *args],
        cwd=NODE_PRODUCER.parent, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


PRODUCERS = {"plain Celery": plain, "celery-node": node}


@pytest.fixture
def workers(start_worker) -> Any:
    return start_worker(["default", "user"], concurrency=1)


def test_plain_celery_sends_to_our_worker_and_reads_the_result(app, redis, workers) -> None:
    assert plain(redis, "result") == {"result": 42}


def test_celery_node_sends_to_our_worker_and_reads_the_result(app, redis, workers) -> None:
    assert node(redis, "result", "hello") == {"result": "hello"}


@pytest.mark.parametrize("producer", PRODUCERS)
def test_a_foreign_task_gets_a_record_like_ours_and_its_delay_is_honoured(
    app, redis, workers, producer: str
) -> None:
    out = PRODUCERS[producer](redis, "eta")
    assert out["result"] == "later"
    record = status_store.read(get_keys(), [out["id"]])[0]
    assert record.fields["status"] == "completed" and record.fields["type"] == "test.record"
    assert record.fields["queue"] == "user" and record.fields["priority"] == str(
        int(Priority.NORMAL)
    )
    [run] = read_journal(f"{'plain' if producer == 'plain Celery' else 'node'}-eta")
    eta = out["sent"] + 2 if "sent" in out else _iso(out["eta"])
    assert run["at"] >= eta - 0.05  # not before its eta (clocks of one machine)


@pytest.mark.parametrize("producer", PRODUCERS)
def test_a_foreign_priority_is_honoured(app, redis, workers, producer: str) -> None:
    """The only pool process is busy while the producer sends two LOW tasks and then a
    CRITICAL one; once they are adopted onto our lists, the CRITICAL one runs first."""
    journal = f"{'plain' if producer == 'plain Celery' else 'node'}-order"
    busy = sleep.apply_async((2.0, "busy"), queue="user")
    wait_until(lambda: read_journal("busy"), "the pool process to be busy")
    keys = get_keys()
    PRODUCERS[producer](redis, "priority")
    wait_until(
        lambda: (
            redis.llen(keys.queue("user", Priority.CRITICAL)) == 1
            and redis.llen(keys.queue("user", Priority.LOW)) == 2
        ),
        "the three to be adopted onto our priority lists",
    )
    assert busy.get(timeout=30) == "slept"
    wait_until(lambda: len(read_journal(journal)) == 3, "the three to run")
    assert [e["label"] for e in read_journal(journal)] == ["critical", "low-1", "low-2"]


def test_plain_celerys_revoke_cancels_a_delayed_task(app, redis, workers) -> None:
    out = plain(redis, "revoke")
    assert out["state"] == "REVOKED"
    assert status_store.read(get_keys(), [out["id"]])[0].fields["status"] == "cancelled"
    assert not read_journal("plain-revoke")


def test_a_tombstone_cancels_a_delayed_task_from_any_language(app, redis, workers) -> None:
    out = node(redis, "cancel")
    wait_until(
        lambda: status_store.read(get_keys(), [out["id"]])[0].get("status") == "cancelled",
        "the cancelled task to be dropped when due",
    )
    assert not read_journal("node-cancel")


def test_a_foreign_failure_reaches_its_producer_and_the_dead_letters(app, redis, workers) -> None:
    out = plain(redis, "failure")
    assert "boom" in out["error"]


def test_a_message_no_worker_can_run_is_set_aside_from_the_inbox(app, redis, workers) -> None:
    keys = get_keys()
    task_id = str(uuid.uuid4())
    body = base64.b64encode(b'{"not": "[args, kwargs, embed]"}').decode()
    message = {"body": body, "content-type": "application/json", "content-encoding": "utf-8",
               "headers": {"task": "system.echo", "id": task_id},
               "properties": {"body_encoding": "base64", "delivery_tag": "t-1"}}  # fmt: skip
    redis.lpush(keys.inbox("default"), json.dumps(message))
    redis.lpush(keys.inbox("default"), b"\xff not even json")
    wait_until(lambda: malformed.count(keys) == 2, "both to be set aside")
    reasons = " | ".join(entry.reason for entry in malformed.entries(keys))
    assert "[args, kwargs, embed]" in reasons and "UTF-8" in reasons
    assert status_store.read(keys, [task_id])[0].fields["status"] == "failed"
    assert not redis.llen(keys.landing("default"))
    assert plain(redis, "result") == {"result": 42}  # the worker goes on


def test_a_message_a_dead_worker_moved_out_is_adopted_by_the_next(app, redis, start_worker) -> None:
    """What a worker moved onto the landing list and never adopted (it died right then)
    is swept by the next worker's forwarder."""
    keys = get_keys()
    envelope = _plain_envelope("system.echo", {"value": "swept"})
    redis.lpush(keys.landing("default"), json.dumps(envelope))
    start_worker(["default"])
    wait_until(
        lambda: (
            status_store.read(keys, [envelope["headers"]["id"]])[0].get("status") == "completed"
        ),
        "the swept task to run",
    )
    assert not redis.llen(keys.landing("default"))


def test_stats_show_messages_a_misconfigured_producer_left_where_nobody_reads(app, redis) -> None:
    keys = get_keys()
    envelope = json.dumps(_plain_envelope("system.echo", {"value": 1}))
    redis.lpush("default", envelope)  # no key prefix
    redis.lpush(f"{keys.inbox('user')}\x06\x163", envelope)  # priority_steps not [0]
    assert cluster_stats()["unconsumed"] == {"default": 1, f"{keys.inbox('user')}\x06\x163": 1}


def _plain_envelope(task: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A protocol-2 message as plain Celery's kombu puts it on Redis."""
    task_id = str(uuid.uuid4())
    body = base64.b64encode(json.dumps([[], kwargs, {}]).encode()).decode()
    return {"body": body, "content-type": "application/json", "content-encoding": "utf-8",
            "headers": {"lang": "py", "task": task, "id": task_id, "root_id": task_id,
                        "parent_id": None, "group": None, "retries": 0,
                        "timelimit": [None, None], "eta": None, "expires": None},
            "properties": {"correlation_id": task_id, "reply_to": "", "delivery_mode": 2,
                           "delivery_info": {"exchange": "", "routing_key": "default"},
                           "priority": 0, "body_encoding": "base64",
                           "delivery_tag": str(uuid.uuid4())}}  # fmt: skip


def _iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
