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
from meetingtasks.dlq import DeadLetterQueue
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
