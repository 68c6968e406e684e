"""Redis at its ``maxmemory``: a send is refused whole with ``RedisFull``, every task
accepted before still runs (workers keep draining), and sending works again after."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from meetingtasks.base.keys import get_keys
from meetingtasks.base.status import TaskStatus
from meetingtasks.dispatch import TaskDispatcher, TaskRequest
from meetingtasks.errors import ConfigurationError, RedisFull
from meetingtasks.metrics import render_metrics
from meetingtasks.policies.recovery import Heartbeat
from meetingtasks.run.embedded_redis import free_port
from meetingtasks.runtime import cluster_stats
from meetingtasks.store.memory import UNSAFE_POLICIES, check_eviction_policy, family_of
from tests.support.gateways import Client, GatewayProcess, token
from tests.support.waiting import wait_until
from tests.worker_tasks import add

ROOM = 2 * 1024 * 1024


@pytest.fixture(autouse=True)
def unlimited_after(redis):
    yield
    redis.config_set("maxmemory", 0)
    redis.config_set("maxmemory-policy", "noeviction")


def leave_two_megabytes(redis) -> None:
    """Redis with 2 MB of room left, and no eviction."""
    redis.config_set("maxmemory-policy", "noeviction")
    redis.config_set("maxmemory", redis.info("memory")["used_memory"] + ROOM)


def test_a_full_redis_refuses_a_send_whole_and_loses_nothing_accepted(
    app, redis, start_worker
) -> None:
    keys = get_keys()
    worker = start_worker(["default"], concurrency=2)
    add.apply_async((0, 0)).get(timeout=60)  # consuming
    assert worker.process is not None
    os.killpg(worker.process.pid, signal.SIGSTOP)  # paused while the senders fill Redis
    leave_two_megabytes(redis)
    accepted: list[str] = []
    refused: RedisFull | None = None
    for n in range(100_000):
        try:
            add.apply_async((n, 1), task_id=f"full-{n}")
        except RedisFull as exc:
            refused = exc
            break
        accepted.append(f"full-{n}")
    assert refused is not None, "2 MB of room took 100,000 sends"
    assert "maxmemory" in str(refused) and accepted
    refused_id = f"full-{len(accepted)}"
    assert not redis.exists(keys.status(refused_id))  # nothing of it was written
    with pytest.raises(RedisFull):  # still full: refused again, not half-written
        add.apply_async((0, 0), task_id="full-again")
    assert not redis.exists(keys.status("full-again"))

    os.killpg(worker.process.pid, signal.SIGCONT)
    dispatcher = TaskDispatcher()

    def all_done() -> list:
        records = dispatcher.statuses(accepted)
        return records if all(r is not None and r.done for r in records) else []

    records = wait_until(all_done, "every accepted task to run", timeout=120)
    assert [r.result for r in records] == [n + 1 for n in range(len(accepted))]

    assert add.apply_async((2, 3)).get(timeout=60) == 5  # drained: sends go in again


def test_a_worker_started_while_redis_is_full_still_drains_it(app, redis, start_worker) -> None:
    """Redis refuses a MULTI and a binding's SADD at maxmemory: the worker starting
    then reads without transactions and does without the binding, instead of dying."""
    dispatcher = TaskDispatcher()
    sent = [r.task_id for r in dispatcher.dispatch_batch([TaskRequest(type="system.noop")] * 50)]
    redis.config_set("maxmemory-policy", "noeviction")
    redis.config_set("maxmemory", 1)  # every write that grows memory is refused
    with pytest.raises(RedisFull):
        add.apply_async((1, 1))
    worker = start_worker(["default"])
    records = wait_until(
        lambda: (found := dispatcher.statuses(sent)) and all(r and r.done for r in found) and found,
        "the queued tasks to run",
    )
    assert {r.status for r in records if r} == {TaskStatus.COMPLETED}
    assert worker.process is not None and worker.process.poll() is None
    assert "maxmemory" in worker.log()
    redis.config_set("maxmemory", 0)
    assert add.apply_async((2, 2)).get(timeout=60) == 4  # and it consumes as ever


def test_a_heartbeat_still_goes_in_while_redis_is_full(app, redis) -> None:
    """A worker draining a full Redis must not look dead to the recoverers."""
    keys = get_keys()
    heartbeat = Heartbeat(15, lambda: "full/1", keys)
    redis.config_set("maxmemory-policy", "noeviction")
    redis.config_set("maxmemory", 1)  # every write that grows memory is refused
    with pytest.raises(RedisFull):
        add.apply_async((1, 1))
    heartbeat.beat()
    assert redis.zscore(keys.consumers(), "full/1") > time.time()
    assert heartbeat.live == 1


@pytest.mark.parametrize("policy", UNSAFE_POLICIES)
def test_a_redis_that_may_evict_queues_is_refused_at_start(
    redis, start_worker, policy: str
) -> None:
    redis.config_set("maxmemory-policy", policy)
    with pytest.raises(ConfigurationError, match=f"maxmemory-policy is {policy}"):
        check_eviction_policy()
    with pytest.raises(ConfigurationError, match="noeviction"):  # the worker exits, saying so
        start_worker(["default"])
    redis.config_set("maxmemory-policy", "volatile-lru")  # evicts only keys with a TTL
    assert check_eviction_policy() == "volatile-lru"


def test_a_batch_refused_part_way_says_which_tasks_went_in(app, redis) -> None:
    """A batch goes out in several script calls, each whole or not at all."""
    keys = get_keys()
    leave_two_megabytes(redis)
    requests = [TaskRequest(type="system.noop", payload={}) for _ in range(6_000)]
    with pytest.raises(RedisFull) as refused:
        TaskDispatcher().dispatch_batch(requests)
    accepted, left_out = refused.value.accepted, refused.value.refused
    assert accepted and left_out
    assert len(accepted) + len(left_out) == len(requests)
    assert len(set(accepted) | set(left_out)) == len(requests)  # each said once
    assert all(redis.exists(keys.status(i)) for i in accepted)
    assert not any(redis.exists(keys.status(i)) for i in left_out)
    lists = set(redis.scan_iter(f"{keys.queue('default', 0)}*")) - {keys.doorbell("default")}
    assert sum(redis.llen(k) for k in lists) == len(accepted)


def test_a_client_submit_to_a_full_redis_is_answered_unavailable(
    app, redis, tmp_path: Path
) -> None:
    gateway = GatewayProcess(tmp_path / "gateway.log")
    try:
        client = Client(gateway.ws_url(token("alice")))
        redis.config_set("maxmemory-policy", "noeviction")
        redis.config_set("maxmemory", 1)
        frame = {"op": "submit", "request_id": "full", "type": "echo", "data": {"value": 1}}
        answer = client.request(frame)
        assert (answer["op"], answer["code"]) == ("error", "unavailable")
        assert "full" in answer["message"]
        redis.config_set("maxmemory", 0)
        assert client.request({**frame, "request_id": "room"})["op"] == "accepted"
    finally:
        gateway.stop()


def test_memory_is_visible_in_stats_and_metrics(app, redis) -> None:
    keys = get_keys()
    TaskDispatcher().dispatch_batch([TaskRequest(type="system.noop") for _ in range(30)])
    memory = cluster_stats()["memory"]
    assert memory["used_bytes"] == pytest.approx(redis.info("memory")["used_memory"], rel=0.5)
    assert memory["families"]["status"]["keys"] == 30
    status_bytes = redis.memory_usage(next(redis.scan_iter(f"{keys.status_prefix()}*")))
    assert memory["families"]["status"]["bytes_per_key"] == pytest.approx(status_bytes, rel=0.2)
    assert memory["bytes_per_task"] == pytest.approx(status_bytes, rel=0.2)  # one record
    assert family_of(keys.queue("default", 3), keys.namespace) == "default"
    group_key = app.backend.get_key_for_group("abc").decode()
    assert family_of(group_key, keys.namespace) == "celery-taskset-meta"

    text = render_metrics().decode()
    assert 'meetingtasks_redis_keys{family="status"} 30.0' in text
    assert "meetingtasks_redis_used_memory_bytes " in text
    assert "meetingtasks_task_kept_bytes " in text


def test_a_worker_started_before_redis_waits_for_it_instead_of_failing(start_worker) -> None:
    """The policy check needs Redis; a worker that starts first (a compose stack coming
    up) goes on to Celery's own connection retries."""
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    worker = start_worker(["default"], wait=False, env={"MEETINGTASKS_REDIS_URL": nobody})
    wait_until(lambda: "maxmemory-policy at start" in worker.log(), "the warning")
    assert worker.process is not None and worker.process.poll() is None
