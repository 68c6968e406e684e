"""meetingtasks beside other Celery apps: importing, installing or using it changes
nothing for them (their transport, configuration, queues and workers stay Celery's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from kombu.transport import TRANSPORT_ALIASES

from meetingtasks.base.keys import get_keys
from tests.support.plain_celery_app import plain, whoami
from tests.support.waiting import wait_until
from tests.support.workers import REPO
from tests.worker_tasks import record

#: Prints kombu's tables of URL schemes as a process that never imported meetingtasks
#: has them.
KOMBU_TABLES = """
import json
from kombu import Connection
from kombu.transport import TRANSPORT_ALIASES
print(json.dumps([dict(TRANSPORT_ALIASES), dict(Connection.resolve_aliases)]))
"""

#: The issue's twelve lines: another Celery app of the process sends after one
#: meetingtasks send. Prints whether kombu's tables changed.
SEND_BESIDE_US = """
import json
from celery import Celery
from kombu import Connection
from kombu.transport import TRANSPORT_ALIASES

before = [dict(TRANSPORT_ALIASES), dict(Connection.resolve_aliases)]
legacy = Celery("legacy", broker={url!r})

@legacy.task(name="legacy.job")
def job():
    pass

from meetingtasks import app
app.send_task("system.noop")
job.delay()
after = [dict(TRANSPORT_ALIASES), dict(Connection.resolve_aliases)]
print(json.dumps({{"tables_unchanged": before == after}}))
"""

#: Celery's default app and a shared task, in a process that imported and used
#: meetingtasks, from the repository's own directory.
DEFAULT_APP = """
import importlib.util, json
from meetingtasks import app
app.send_task("system.noop")
from celery import current_app, shared_task

@shared_task(name="shared.job")
def job():
    pass

conf = current_app.conf
print(json.dumps({
    "current_app": current_app.main,
    "broker_url": conf.broker_url,
    "broker_transport": conf.broker_transport,
    "default_queue": conf.task_default_queue,
    "task_queues": conf.task_queues,
    "imports": list(conf.imports),
    "shared_task_app": job.app.main,
    "celeryconfig_importable": importlib.util.find_spec("celeryconfig") is not None,
}))
"""


def python(code: str, cwd: Path = REPO, **env: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_another_apps_task_goes_to_its_own_queue_after_one_of_ours(app, redis) -> None:
    """Sending one meetingtasks task once rewrote kombu's scheme table: every other
    Celery app of the process then published under our prefix, and its workers never
    saw those tasks."""
    url = redis.connection_pool.connection_kwargs
    broker = f"redis://{url['host']}:{url['port']}/0"
    printed = python(SEND_BESIDE_US.format(url=broker))

    assert printed["tables_unchanged"]
    assert redis.llen("celery") == 1  # kombu's own list of the legacy app's queue
    message = json.loads(redis.lindex("celery", 0))
    assert message["headers"]["task"] == "legacy.job"
    assert not redis.exists(get_keys().queue("celery", 0))
    assert not redis.exists(get_keys().doorbell("celery"))
    assert redis.llen(get_keys().queue("default", 6)) == 1  # ours, where ours go


def test_kombu_tables_are_kombus_own_in_a_process_that_uses_us(app, redis) -> None:
    record.delay("sent")  # this process imported meetingtasks and sent with it
    assert [dict(TRANSPORT_ALIASES), dict(Connection.resolve_aliases)] == python(KOMBU_TABLES)


def test_celerys_default_app_keeps_its_own_configuration(app, redis) -> None:
    """No top-level ``celeryconfig`` module is installed or lies in the repository: the
    default app, and a shared task used before any app is set, read nothing of ours."""
    printed = python(DEFAULT_APP)
    assert printed == {
        "current_app": "default",
        "broker_url": None,
        "broker_transport": None,
        "default_queue": "celery",
        "task_queues": None,
        "imports": [],
        "shared_task_app": "default",
        "celeryconfig_importable": False,
    }


@pytest.fixture
def plain_worker(redis, tmp_path) -> Any:
    """A plain Celery worker of ``tests/support/plain_celery_app.py`` on the test's Redis."""
    url = redis.connection_pool.connection_kwargs
    broker = f"redis://{url['host']}:{url['port']}/0"
    log = tmp_path / "plain-worker.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.support.plain_celery_app", "worker",
             "-c", "1", "-P", "prefork", "--without-gossip", "--without-mingle", "-l", "INFO"],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "PLAIN_CELERY_REDIS": broker},
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    wait_until(lambda: " ready." in log.read_text(errors="replace"), "the plain worker")
    yield broker, process
    process.kill()
    process.wait()


def test_a_plain_app_and_ours_each_run_on_their_own_worker(
    app, redis, start_worker, plain_worker
) -> None:
    """Sends interleaved from one process that imported both apps: every task runs on
    its own app's worker, the plain one never touched by meetingtasks."""
    broker, process = plain_worker
    plain.conf.update(broker_url=broker, result_backend=broker)
    start_worker(["user", "default"])

    theirs, ours = [], []
    for i in range(10):
        theirs.append(whoami.delay(f"plain-{i}"))
        ours.append(record.apply_async((f"ours-{i}", "coexist"), queue="user"))

    assert [r.get(timeout=30) for r in ours] == [f"ours-{i}" for i in range(10)]
    ran = [r.get(timeout=30) for r in theirs]
    assert [r["label"] for r in ran] == [f"plain-{i}" for i in range(10)]
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    assert {str(r["pid"]) for r in ran} <= set(children)
    assert not any(r["meetingtasks_imported"] for r in ran)
    assert [dict(TRANSPORT_ALIASES), dict(Connection.resolve_aliases)] == python(KOMBU_TABLES)
