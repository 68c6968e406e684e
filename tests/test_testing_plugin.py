"""The pytest plugin, used as a service team would: its own conftest.py, its own tasks
module and tests, in a fresh pytest run of their own."""

from __future__ import annotations

import pytest

CONFTEST = 'pytest_plugins = ["meetingtasks.testing"]\n'

BILLING_TASKS = """
from meetingtasks import app
from meetingtasks.errors import Permanent


@app.task(name="billing.charge")
def charge(amount: int) -> str:
    if amount < 0:
        raise Permanent("a charge cannot be negative")
    return f"charged {amount}"
"""

TEST_BILLING = """
import pytest

from billing_tasks import charge
from meetingtasks.dead_letter_queue import DeadLetterQueue
from meetingtasks.errors import InvalidPayload, Permanent


def test_a_charge_runs_in_a_worker(meetingtasks_worker):
    assert charge.delay(5).get(timeout=30) == "charged 5"


def test_a_refused_charge_lands_in_the_dead_letter_queue(meetingtasks_worker):
    with pytest.raises(Permanent):
        charge.delay(-1).get(timeout=30)
    assert [letter.type for letter in DeadLetterQueue().list()] == ["billing.charge"]


def test_bad_input_is_refused_before_anything_is_queued(meetingtasks_redis):
    with pytest.raises(InvalidPayload):
        charge.delay(object())
    assert meetingtasks_redis.dbsize() == 0


def test_a_worker_process_runs_it_too(meetingtasks_worker_process):
    meetingtasks_worker_process(["default"], include=["billing_tasks"])
    assert charge.delay(7).get(timeout=60) == "charged 7"


def test_the_run_has_a_redis_of_its_own(meetingtasks_redis_server, meetingtasks_app):
    assert meetingtasks_app.conf.broker_url == meetingtasks_redis_server.url
    assert meetingtasks_redis_server.port != 6379
"""


#: A service team's tests as Celery's documentation writes them ("Testing with Celery":
#: the celery_app and celery_worker fixtures, celery_config, the celery mark), unchanged.
TEST_CELERY_FIXTURES = """
import pytest

from billing_tasks import charge


@pytest.fixture(scope="session")
def celery_config():
    return {"broker_url": "memory://", "result_backend": "cache+memory://",
            "task_acks_late": True}


def test_a_task_defined_in_the_test_runs(celery_app, celery_worker):
    @celery_app.task(name="billing.refund")
    def refund(amount):
        return f"refunded {amount}"

    celery_worker.reload()
    assert refund.delay(3).get(timeout=30) == "refunded 3"
    assert charge.delay(4).get(timeout=30) == "charged 4"


def test_it_is_meetingtasks_underneath(celery_app, meetingtasks_redis_server, meetingtasks_redis):
    assert type(celery_app).__name__ == "MeetingTasksApp"
    assert celery_app.conf.broker_url == meetingtasks_redis_server.url  # not memory://
    assert celery_app.conf.task_acks_late is True  # the rest of celery_config applies
    charge.delay(1)
    assert any(key.startswith("mttest:") for key in meetingtasks_redis.keys())


@pytest.mark.celery(result_expires=123)
def test_the_celery_mark_applies_for_its_test(celery_app):
    assert celery_app.conf.result_expires == 123


def test_and_only_for_it(celery_app):
    assert celery_app.conf.result_expires != 123
"""

TEST_SESSION_WORKER = """
from billing_tasks import charge


def test_a_session_worker_runs_it(celery_session_app, celery_session_worker):
    assert charge.delay(9).get(timeout=30) == "charged 9"
"""


@pytest.mark.slow
def test_a_test_written_for_celerys_own_fixtures_runs_unchanged(
    pytester: pytest.Pytester,
) -> None:
    """pytest-celery's plugin brings Celery's fixtures; meetingtasks.testing answers
    them with our app on the private Redis."""
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        billing_tasks=BILLING_TASKS,
        test_celery_fixtures=TEST_CELERY_FIXTURES,
        test_session_worker=TEST_SESSION_WORKER,
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(passed=5)


@pytest.mark.slow
def test_a_service_team_tests_its_own_tasks_with_the_plugin(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(billing_tasks=BILLING_TASKS, test_billing=TEST_BILLING)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(passed=5)


def test_the_plugin_refuses_to_run_on_settings_read_too_early(pytester: pytest.Pytester) -> None:
    """A conftest that reads meetingtasks' settings first would send to the wrong Redis."""
    pytester.makeconftest(
        "from meetingtasks.base.settings import get_settings\nget_settings()\n" + CONFTEST
    )
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*read its settings before meetingtasks.testing*"])
