"""The ai queue's own pool: `celery worker -Q ai` holds hundreds of tasks in flight with
no flag, other queues keep prefork, and -P / -c on the command line still win."""

from __future__ import annotations

import pytest

from meetingtasks.celery_ext.queue_worker import given
from meetingtasks.errors import ConfigurationError
from meetingtasks.policies.routing import RouteTable, WorkerDefaults, get_route_table
from tests.worker_tasks import own_io, rendezvous

IN_FLIGHT = 200
#: Tasks that do Redis I/O of their own (issue: the ai pool slowed them down).
OWN_IO = 2_000


def test_the_ai_queue_holds_hundreds_of_tasks_at_once_with_no_pool_flag(
    app, redis, start_worker
) -> None:
    worker = start_worker(["ai"], pool=None, concurrency=None)
    results = [rendezvous.delay("mttest:arrived", IN_FLIGHT) for _ in range(IN_FLIGHT)]

    # Each run waits for all the others: they meet only if all run at once.
    assert [r.get(timeout=120) for r in results] == [IN_FLIGHT] * IN_FLIGHT
    assert "concurrency: 500 (thread_pool)" in worker.log()


def test_tasks_doing_their_own_redis_io_all_run_in_the_ai_pool_on_one_backend(
    app, redis, start_worker
) -> None:
    start_worker(["ai"], pool=None, concurrency=None)
    results = [own_io.delay(n, "mttest:own-io") for n in range(OWN_IO)]

    backends = {r.get(timeout=180) for r in results}
    assert int(redis.get("mttest:own-io")) == OWN_IO
    assert all(redis.exists(f"mttest:own-io:{n}") for n in (0, OWN_IO // 2, OWN_IO - 1))
    # Hundreds of threads ran them, and all stored their results through one backend:
    # Celery makes one per thread unless result_backend_thread_safe says otherwise.
    assert len(backends) == 1


def test_other_queues_keep_prefork_and_command_line_flags_win(app, start_worker) -> None:
    meeting = start_worker(["meeting"], pool=None, concurrency=None)
    flagged = start_worker(["ai"], pool="solo", concurrency=None)

    assert "(prefork)" in meeting.log()
    assert "(solo)" in flagged.log()


def test_queues_that_ask_for_different_pools_get_the_default_one(app, start_worker) -> None:
    worker = start_worker(["ai", "meeting"], pool=None, concurrency=None)
    assert "(prefork)" in worker.log()
    assert "ask for different pools" in worker.log()


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["worker", "-Q", "ai"], False),
        (["worker", "-P", "threads"], True),
        (["worker", "-Pthreads"], True),
        (["worker", "--pool=solo"], True),
        (["worker", "--pool", "solo"], True),
        (["worker", "--pool-restarts"], False),
        (["worker", "--", "-P"], False),
    ],
)
def test_a_pool_flag_is_seen_in_every_spelling(argv: list[str], named: bool) -> None:
    assert given(("-P", "--pool"), argv) is named


def test_the_routes_declare_the_ai_pool_and_refuse_a_bad_one(tmp_path) -> None:
    assert get_route_table().workers["ai"] == WorkerDefaults(pool="threads", concurrency=500)
    table = RouteTable(["default", "ai"], workers={"ai": WorkerDefaults(pool="threads")})
    assert table.worker_for(["ai"]) == WorkerDefaults(pool="threads")
    assert table.worker_for(["default"]) is None

    (tmp_path / "default.toml").write_text('[worker]\npool = "gevent"\n')
    with pytest.raises(ConfigurationError, match=r"default.toml: bad \[worker\] table"):
        RouteTable.load(tmp_path)
