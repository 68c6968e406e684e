"""Redis behind Sentinel, on a real topology (a primary, a replica, three sentinels):
our clients, the CLI, workers and senders follow a failover."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from meetingtasks.base.keys import get_keys
from meetingtasks.base.priority import PRIORITY_STEPS
from meetingtasks.celery_ext.transport import (
    BrokerConnection,
    SentinelTransport,
    Transport,
    transport_for,
)
from meetingtasks.errors import ConfigurationError
from meetingtasks.run.embedded_redis import free_port
from meetingtasks.store import sentinel
from tests.support.cli import meetingtasks_cli
from tests.support.gateways import Client, GatewayProcess, token
from tests.support.held import held_now
from tests.support.sentinels import SentinelTopology
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(300)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[SentinelTopology]:
    started = SentinelTopology(tmp_path)
    yield started
    started.stop()


def test_sentinel_urls_read_as_kombu_and_celery_write_them() -> None:
    target = sentinel.SentinelTarget.parse(
        "sentinel://:s3cret@10.0.0.1:26379/2;sentinel://10.0.0.2;sentinel://10.0.0.3:26380"
    )
    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("10.0.0.3", 26380))
    assert target.server_options() == {"db": 2, "password": "s3cret"}
    for bad in ("redis://h:1", "sentinel://", "sentinel://h:x", "sentinel://h:1/db"):
        with pytest.raises(ConfigurationError, match=r"sentinel|database"):
            sentinel.SentinelTarget.parse(bad)


def retrying_client(url: str) -> redis.Redis:
    """Our client's retry budget (store.get_redis): about ten seconds."""
    return sentinel.primary_client(
        url,
        blocking=True,
        decode_responses=True,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=15),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


def test_a_reconnect_asks_the_sentinels_where_the_primary_is(
    topology: SentinelTopology,
) -> None:
    """redis-py reconnects a dropped connection through connect_check_health(), which
    keeps the old address (#3874): ours asks the sentinels there too."""
    client = retrying_client(topology.url)
    connection = client.connection_pool.get_connection()
    assert isinstance(connection, sentinel.PrimaryConnection)
    old = connection.port
    connection.disconnect()
    topology.wait_for_promotion(topology.kill_primary())
    connection.connect_check_health(check_health=False)  # the path send_command takes
    assert connection.port != old
    connection.send_command("PING")
    assert connection.read_response() == "PONG"
    client.connection_pool.release(connection)


def test_a_replicated_write_survives_a_failover_and_the_client_rides_it_out(
    topology: SentinelTopology,
) -> None:
    """What WAIT confirmed on the replica is there after the promotion, and a command sent
    during the failover waits it out inside the client's retries instead of raising."""
    client = retrying_client(topology.url)
    client.set("before", "1")
    assert client.wait(1, 2000) == 1
    old = topology.kill_primary()
    assert client.incr("after") == 1
    assert client.connection_pool.get_master_address()[1] != old
    assert client.get("before") == "1"


def test_a_connection_that_fails_over_to_the_next_url_keeps_our_transport() -> None:
    """kombu takes a connection's transport from the next URL's scheme when it fails over
    (one URL per sentinel): unless the app's connection class keeps ours, a worker
    fetched with kombu's BRPOP from its first failover on, and lost the message taken at
    a kill."""
    for urls, ours in [("sentinel://127.0.0.1:1;sentinel://127.0.0.1:2", SentinelTransport),
                       ("redis://127.0.0.1:1;redis://127.0.0.1:2", Transport)]:  # fmt: skip
        connection = BrokerConnection(urls, transport=transport_for(urls))
        assert type(connection.transport) is ours
        connection.maybe_switch_next()
        assert connection.port == 2
        assert type(connection.transport) is ours
        assert connection.as_uri().startswith(urls.split(":")[0])  # shown by its scheme


def test_stats_and_dispatch_work_on_a_sentinel_url_across_a_failover(
    topology: SentinelTopology, start_worker
) -> None:
    """The worker consumes through our transport after the failover too: only a consumer
    of a later generation (our channels take one on each connection) is left."""
    start_worker(["default"], env={"MEETINGTASKS_REDIS_URL": topology.url})
    for round_ in range(2):
        stats = meetingtasks_cli("stats", "--json", redis_url=topology.url, timeout=60)
        assert stats.returncode == 0, stats.stderr
        assert json.loads(stats.stdout)["workers"]["online"] == 1
        sent = meetingtasks_cli(
            "dispatch",
            "system.echo",
            "--data",
            '{"value": 7}',
            "--wait",
            redis_url=topology.url,
            timeout=60,
        )
        assert sent.returncode == 0, sent.stderr
        assert "completed" in sent.stdout and "7" in sent.stdout
        roster = retrying_client(topology.url).zrange(get_keys().consumers(), 0, -1)
        generations = {int(consumer.rsplit("/", 1)[1]) for consumer in roster}
        assert generations == {1} if round_ == 0 else min(generations) > 1, roster
        if round_ == 0:
            topology.wait_for_promotion(topology.kill_primary())


def test_a_service_keeps_its_subscription_callback_and_delay_across_a_failover(
    topology: SentinelTopology, start_worker
) -> None:
    """What a service set up before a failover works after it: its event bus subscription
    gets events, a task it sent with a delay due during the failover runs (the worker's
    own due-task loop queues it), and the dispatcher's callback for that task fires."""
    env = {"MEETINGTASKS_REDIS_URL": topology.url}
    start_worker(["default", "meeting"], env=env)
    with subprocess.Popen(
        [sys.executable, "-m", "tests.support.failover_probe", "m-failover", "2"],
        cwd=REPO, env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as probe:  # fmt: skip
        assert probe.stdout is not None and probe.stdin is not None
        try:
            assert probe.stdout.readline().strip() == "ready"
            topology.wait_for_promotion(topology.kill_primary())
            probe.stdin.write("go\n")
            probe.stdin.flush()
            report = json.loads(probe.stdout.readline())
            assert probe.wait(30) == 0
        finally:
            if probe.poll() is None:
                probe.kill()
    assert report["event"] is not None, report
    assert report["event"]["type"] == "meeting.user_joined"
    assert report["delayed"] == {"status": "completed", "result": "delayed"}


def test_a_write_no_replica_confirms_raises_instead_of_counting(
    topology: SentinelTopology,
) -> None:
    env = {"MEETINGTASKS_MIN_REPLICAS": "1", "MEETINGTASKS_REPLICA_WAIT": "1"}
    sent = meetingtasks_cli("dispatch", "system.noop", **env, redis_url=topology.url, timeout=60)
    assert sent.returncode == 0, sent.stderr
    topology.kill_replicas()
    refused = meetingtasks_cli("dispatch", "system.noop", **env, redis_url=topology.url, timeout=60)
    assert refused.returncode != 0
    assert "0 of the 1 replicas" in refused.stdout + refused.stderr
    plain = meetingtasks_cli(
        "dispatch", "system.noop", redis_url=topology.url, timeout=60
    )  # the setting off: accepted
    assert plain.returncode == 0, plain.stderr


@pytest.mark.parametrize("replicated", [True, False], ids=["min-replicas-1", "async"])
def test_tasks_keep_flowing_through_three_failovers(
    topology: SentinelTopology, start_worker, tmp_path: Path, replicated: bool
) -> None:
    """5,000 tasks sent at 500/s while the primary is killed three times (each time
    restarted as a replica): what was accepted, lost and run twice, and the seconds from
    each promotion until tasks ran again, with MEETINGTASKS_MIN_REPLICAS=1 and without
    (printed). With the setting on, no accepted task is lost; a lost one is shown with
    where its message was found and what the worker logged of it."""
    # Records kept long enough to be counted after the run.
    env = {"MEETINGTASKS_REDIS_URL": topology.url, "MEETINGTASKS_RETENTION_UNWATCHED": "900"}
    if replicated:
        env["MEETINGTASKS_MIN_REPLICAS"] = "1"
    start_worker(["default"], env=env)
    report_path = tmp_path / "load.json"
    load = subprocess.Popen(
        [sys.executable, "-m", "tests.support.failover_load", str(SENT), "500", str(report_path)],
        cwd=REPO, env={**os.environ, **env, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    promotions: list[float] = []
    resumed: list[float] = []
    client = retrying_client(topology.url)
    try:
        time.sleep(1.0)
        for _ in range(3):
            old = topology.kill_primary()
            topology.wait_for_promotion(old)
            promotions.append(time.time())
            topology.restart_as_replica(old)
            resumed.append(_resumed_after(client, promotions[-1]))  # then the next failover
        assert load.wait(120) == 0
    finally:
        if load.poll() is None:
            load.kill()
    report = json.loads(report_path.read_text())
    figures = _count(topology, report, resumed)
    print("failover figures:", json.dumps({"replicated": replicated, **figures}))
    sent_at = {task_id: at for _label, task_id, at in report["accepted"]}
    lost = [{"sent_at": sent_at[task_id], "promotions": promotions,
             **_whereabouts(client, task_id, tmp_path / "workers")}
            for task_id in figures["lost_ids"]]  # fmt: skip
    if lost:
        print("lost tasks:", json.dumps(lost))
    assert figures["accepted"] >= 0.99 * SENT, figures
    assert all(seconds < 10 for seconds in figures["resumed_after_promotion_s"]), figures
    if replicated:
        assert figures["lost"] == 0, lost


SENT = 5000
ENDS = {"completed", "failed", "timeout", "cancelled"}
JOURNAL = "mttest:journal:failover"


def _whereabouts(client: redis.Redis, task_id: str, logs: Path) -> dict[str, Any]:
    """Where a lost task's message is on the surviving primary, and what the worker logs
    say of it: what a failure needs to be explained."""
    keys = get_keys()
    queued = [
        step for step in PRIORITY_STEPS
        if any(task_id in entry for entry in client.lrange(keys.queue("default", step), 0, -1))
    ]  # fmt: skip
    held = {key: [tag for tag, entry in entries.items() if task_id in entry]
            for key, entries in held_now(client).items()}  # fmt: skip
    return {
        "id": task_id,
        "record": client.hgetall(keys.status(task_id)),
        "in_queue_lists": queued,
        "held": {key: tags for key, tags in held.items() if tags},
        "delayed": client.hexists(keys.delayed_messages(), task_id),
        "consumers": client.zrange(keys.consumers(), 0, -1, withscores=True),
        "doorbell": client.llen(keys.doorbell("default")),
        "log": [line.strip() for path in logs.glob("*.log")
                for line in path.read_text(errors="replace").splitlines() if task_id in line],
    }  # fmt: skip


def _resumed_after(client: redis.Redis, moment: float, patience: float = 10) -> float:
    """Seconds from ``moment`` (a promotion) until a task ran on the new primary, as seen
    then (its journal entry may go with that primary when it is killed next), or inf."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        recent = [json.loads(entry)["at"] for entry in client.lrange(JOURNAL, -100, -1)]
        if after := [at for at in recent if at > moment]:
            return min(after) - moment
        time.sleep(0.05)
    return float("inf")


def _count(
    topology: SentinelTopology, report: dict[str, Any], resumed: list[float]
) -> dict[str, Any]:
    """What became of the accepted tasks, once each ended or a minute passed: a task is
    lost when its record on the surviving primary says no end (what a task wrote itself
    just before a kill, like its journal entry, may be lost with the primary: only the
    task's own record is the system's word). One that ended otherwise than completed
    (a result write no replica confirmed in time fails it) is counted apart."""
    accepted = {task_id: label for label, task_id, _at in report["accepted"]}
    client = retrying_client(topology.url)
    keys = get_keys()
    deadline = time.monotonic() + 60
    while True:
        pipe = client.pipeline(transaction=False)
        for task_id in accepted:
            pipe.hget(keys.status(task_id), "status")
        statuses = dict(zip(accepted, pipe.execute(), strict=True))
        unfinished = [task_id for task_id, status in statuses.items() if status not in ENDS]
        if not unfinished or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    ran = [json.loads(item) for item in client.lrange(JOURNAL, 0, -1)]
    runs = Counter(entry["label"] for entry in ran)
    return {
        "sent": SENT,
        "accepted": len(accepted),
        "refused": len(report["refused"]),
        "lost": len(unfinished),
        "lost_ids": unfinished,
        "lost_states": dict(Counter(str(statuses[task_id]) for task_id in unfinished)),
        "ended_otherwise": dict(Counter(s for s in statuses.values() if s != "completed")),
        "run_twice": sum(count > 1 for count in runs.values()),
        "journal_entries_missing": len(set(accepted.values()) - set(runs)),
        "resumed_after_promotion_s": [round(seconds, 2) for seconds in resumed],
        "send_seconds": round(report["seconds"], 1),
        "failovers": topology.failovers(),
    }


def test_a_gateway_client_gets_its_result_across_a_failover(
    topology: SentinelTopology, start_worker, tmp_path: Path
) -> None:
    """With MEETINGTASKS_MIN_REPLICAS=1: a submit is accepted once a replica has it (the
    primary is killed right after the accept, before asynchronous replication would
    surely have copied it)."""
    settings = {"redis_url": topology.url, "min_replicas": 1}
    start_worker(["user"], env={f"MEETINGTASKS_{k.upper()}": str(v) for k, v in settings.items()})
    gateway = GatewayProcess(tmp_path / "gateway.log", **settings)
    try:
        client = Client(gateway.ws_url(token("alice")))
        accepted = client.request(
            {"op": "submit", "request_id": "r1", "type": "sleep", "data": {"seconds": 2}}
        )
        assert accepted["op"] == "accepted", accepted
        old = topology.kill_primary()  # the worker may be taking the task at this instant
        topology.wait_for_promotion(old)
        topology.restart_as_replica(old)  # so writes find a replica to confirm them again
        result = client.result("r1", timeout=60)
        assert (result["status"], result["result"]) == ("completed", "slept")
        after = client.request({"op": "submit", "request_id": "r2", "type": "echo",
                                "data": {"value": "after"}})  # fmt: skip
        assert after["op"] == "accepted"
        client.close()
    finally:
        gateway.stop()


def test_flower_follows_a_failover(
    topology: SentinelTopology, start_worker, tmp_path: Path
) -> None:
    """Its broker page (queue lengths) and its worker list, before and after one."""
    env = {"MEETINGTASKS_REDIS_URL": topology.url}
    worker = start_worker(["default"], env=env)
    port = free_port()
    with open(tmp_path / "flower.log", "wb") as log:
        flower = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "meetingtasks", "flower",
             f"--port={port}", "--address=127.0.0.1"],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **env, "FLOWER_UNAUTHENTICATED_API": "true"},
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for round_ in range(2):
            queues = wait_until(
                lambda: _json(f"{url}/api/queues/length"),
                "Flower's broker page",
                ignoring=(httpx.HTTPError,),
                interval=0.25,
            )
            assert "default" in {queue["name"] for queue in queues["active_queues"]}
            workers = wait_until(
                lambda: _json(f"{url}/api/workers?refresh=1"),
                "the worker list",
                ignoring=(httpx.HTTPError,),
                interval=0.25,
            )
            assert worker.name in workers
            if round_ == 0:
                topology.wait_for_promotion(topology.kill_primary())
    finally:
        flower.terminate()
        try:
            flower.wait(30)
        except subprocess.TimeoutExpired:
            # Flower's SIGTERM handler raises SystemExit wherever the signal lands; inside
            # a weakref callback Python ignores it ("Exception ignored in: WeakSet…") and
            # Flower runs on. Its own bug, with or without us: stop it for good.
            flower.kill()
            flower.wait()


def _json(url: str) -> Any:
    """The JSON of a 200 answer, else None (Flower answers 500 while there is no primary)."""
    response = httpx.get(url, timeout=10)
    return response.json() if response.status_code == 200 else None
