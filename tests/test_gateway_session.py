"""A client session's limits and frame ordering, without sockets or Redis."""

from __future__ import annotations

import json

from meetingtasks.gateway import protocol as p
from meetingtasks.gateway.session import Session, TokenBucket


def session(max_tasks: int = 3, rate: float = 1.0, burst: int = 2) -> Session:
    return Session("s1", "u1", max_tasks, rate, burst, now=0.0)


def frame(op: str, task_id: str) -> tuple[str, str, str]:
    return json.dumps({"op": op, "task_id": task_id}), task_id, op


def test_the_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.5) and not bucket.take(0.5)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]


def test_submits_over_the_rate_are_refused_until_tokens_come_back() -> None:
    s = session(max_tasks=10, rate=1.0, burst=2)
    assert s.admit(0.0) is None and s.admit(0.0) is None
    code, message = s.admit(0.0)  # type: ignore[misc]
    assert code == p.RATE_LIMITED and "1 submits a second" in message
    assert s.admit(1.0) is None


def test_unfinished_tasks_are_capped_and_a_refusal_for_it_costs_no_token() -> None:
    s = session(max_tasks=2, rate=1.0, burst=5)
    for task_id in ("t1", "t2"):
        assert s.admit(0.0) is None
        assert s.submitted(task_id) == []
    assert s.admit(0.0)[0] == p.TOO_MANY_TASKS  # type: ignore[index]
    assert s.bucket.tokens == 3
    assert s.route(*frame("result", "t1"))
    assert s.admit(0.0) is None


def test_a_refused_submit_frees_its_slot() -> None:
    s = session(max_tasks=1)
    assert s.admit(0.0) is None
    assert s.full
    s.submitted(None)
    assert not s.full and not s.active


def test_frames_of_a_task_wait_for_its_accepted() -> None:
    s = session()
    assert s.admit(0.0) is None  # a submit in flight; its task's frames race ahead
    early = [frame("delta", "t9"), frame("result", "t9")]
    assert [s.route(*f) for f in early] == [False, False]
    released = s.submitted("t9")
    assert released == [early[0][0], early[1][0]]
    assert "t9" not in s.active  # the released result ended it


def test_frames_of_known_tasks_or_with_nothing_in_flight_go_at_once() -> None:
    s = session()
    s.admit(0.0)
    s.submitted("t1")
    s.admit(0.0)  # another submit in flight
    assert s.route(*frame("delta", "t1"))
    s.submitted("t2")
    assert s.route(*frame("result", "t-from-before-a-resume"))


def test_forget_drops_tasks_whose_end_was_missed() -> None:
    s = session(max_tasks=2)
    for task_id in ("t1", "t2"):
        s.admit(0.0)
        s.submitted(task_id)
    s.forget(["t1"])
    assert s.active == {"t2"} and not s.full
