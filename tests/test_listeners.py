"""Task monitoring events go out only while someone listens (store/listeners.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from meetingtasks.store.listeners import ListenerGate
from tests.support.workers import REPO

#: Sends tasks in a process with the default setting; prints the task-sent events heard.
SENDER = """
import json, sys, time
import redis
from meetingtasks.base.keys import get_keys
from tests.worker_tasks import record
client = redis.Redis.from_url(sys.argv[1])
pubsub = client.pubsub()
record.delay("unheard")  # nobody listens: quiet for a second
pubsub.psubscribe(get_keys().prefix + "/0.celeryev/task.*")
pubsub.get_message(timeout=1)
record.delay("quiet")  # within the quiet second: not published
time.sleep(1.2)
record.delay("probe")  # the next one is published again, and heard
record.delay("heard")
seen = 0
deadline = time.monotonic() + 3
while time.monotonic() < deadline:
    message = pubsub.get_message(timeout=0.2)
    seen += bool(message and message["type"] == "pmessage")
print(json.dumps(seen))
"""


def test_the_gate_closes_for_a_while_after_an_event_nobody_heard() -> None:
    gate = ListenerGate(quiet=0.2, always=False)
    assert gate.open()
    gate.heard(0)
    assert not gate.open()
    time.sleep(0.25)
    assert gate.open()
    gate.heard(2)
    assert gate.open()


def test_a_sender_publishes_task_events_only_while_someone_listens(app, redis) -> None:
    port = redis.connection_pool.connection_kwargs["port"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "MEETINGTASKS_TASK_EVENTS": "listened"}
    done = subprocess.run(
        [sys.executable, "-c", SENDER, f"redis://127.0.0.1:{port}/0"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == 2  # "probe" and "heard" only


def test_a_task_event_nobody_would_hear_is_not_even_built(app, monkeypatch) -> None:
    from meetingtasks.store import listeners

    gate = ListenerGate(quiet=60, always=False)
    monkeypatch.setattr(listeners, "task_events", gate)
    with app.connection_for_write() as connection:
        dispatcher = app.events.Dispatcher(
            connection, enabled=True, buffer_group=["task"], buffer_limit=1000
        )
        clock = dispatcher.clock.value
        gate.heard(0)  # closed: nobody heard the last one
        dispatcher.send("task-succeeded", uuid="t1")
        assert not dispatcher._group_buffer["task"] and dispatcher.clock.value == clock
        gate.heard(1)  # open again
        dispatcher.send("task-succeeded", uuid="t2")
        assert [e["uuid"] for e in dispatcher._group_buffer["task"]] == ["t2"]
        dispatcher._group_buffer["task"].clear()
        dispatcher.close()
