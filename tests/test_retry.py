"""Retries: only retryable failures, growing jittered backoff, bounded attempts."""

from __future__ import annotations

import pytest
from celery.result import AsyncResult

from meetingtasks.base.settings import Settings
from meetingtasks.errors import Permanent, Retryable
from meetingtasks.policies.retry import RETRYABLE_ERRORS, retry_delay
from tests.worker_tasks import flaky, read_journal

BASE = 0.2  # seconds: the workers of this module back off from 0.2 s
SAMPLES = 500  # delays drawn per check: the jitter spreads them over the whole range


@pytest.mark.parametrize("retries", range(8))
def test_backoff_stays_within_half_and_whole_of_the_exponential_bound(retries: int) -> None:
    settings = Settings(retry_backoff_base=1.0, retry_backoff_max=60.0)
    bound = min(60.0, 1.0 * 2**retries)
    delays = [retry_delay(retries, settings) for _ in range(SAMPLES)]
    assert all(bound / 2 <= delay <= bound for delay in delays)
    assert min(delays) < bound * 0.6 and max(delays) > bound * 0.9  # jittered, not fixed


@pytest.mark.parametrize("retries", [40, 5000])  # 2**5000 would overflow a float
def test_backoff_is_capped(retries: int) -> None:
    settings = Settings(retry_backoff_base=1.0, retry_backoff_max=30.0)
    assert all(15.0 <= retry_delay(retries, settings) <= 30.0 for _ in range(SAMPLES))


def test_only_transient_failures_are_retryable() -> None:
    """What the task base retries (celery_ext/task.py catches RETRYABLE_ERRORS)."""
    for transient in (Retryable("node down"), ConnectionError(), TimeoutError()):
        assert isinstance(transient, RETRYABLE_ERRORS)
    for lasting in (Permanent("bad input"), ValueError("bug")):
        assert not isinstance(lasting, RETRYABLE_ERRORS)


@pytest.fixture
def worker(start_worker):
    return start_worker(["user"], env={"MEETINGTASKS_RETRY_BACKOFF_BASE": str(BASE)})


def attempts(result: AsyncResult, journal_name: str) -> list[dict]:
    result.get(timeout=60, propagate=False)
    return read_journal(journal_name)


def test_retryable_failure_is_retried_with_growing_backoff(app, worker) -> None:
    result = flaky.delay("flaky", fail_times=3)
    seen = attempts(result, "flaky")

    assert result.get(timeout=1) == 3
    assert [entry["retries"] for entry in seen] == [0, 1, 2, 3]
    for n in range(1, len(seen)):
        # Attempt n was scheduled when attempt n-1 failed, retry_delay(n-1) later.
        waited = seen[n]["at"] - seen[n - 1]["at"]
        assert waited >= BASE * 2 ** (n - 1) / 2, f"retry {n} came after {waited:.3f}s only"


def test_retries_stop_at_the_routes_max_retries(app, worker) -> None:
    result = flaky.delay("exhaust", fail_times=100)
    seen = attempts(result, "exhaust")

    assert result.state == "FAILURE"
    assert isinstance(result.result, Retryable)
    assert [entry["retries"] for entry in seen] == [0, 1, 2, 3, 4]  # routes: max_retries = 4


def test_a_message_can_lower_its_retry_budget(app, worker) -> None:
    result = flaky.apply_async(("budget",), {"fail_times": 100}, max_retries=1)
    seen = attempts(result, "budget")

    assert result.state == "FAILURE"
    assert [entry["retries"] for entry in seen] == [0, 1]


def test_permanent_failure_is_not_retried(app, worker) -> None:
    result = flaky.delay("permanent", fail_times=100, permanent=True)
    seen = attempts(result, "permanent")

    assert result.state == "FAILURE"
    assert isinstance(result.result, Permanent)
    assert len(seen) == 1


def test_unexpected_error_is_not_retried(app, worker) -> None:
    result = flaky.delay("bug", fail_times="not a number")  # TypeError in the handler
    seen = attempts(result, "bug")

    assert result.state == "FAILURE"
    assert len(seen) == 1
