"""A plain Celery app that knows nothing of meetingtasks: the other Celery app of a
service, or another team's. ``PLAIN_CELERY_REDIS`` names its Redis (broker and results).

Its worker (``celery -A tests.support.plain_celery_app worker``) never imports
meetingtasks; ``tests/test_coexistence.py`` checks that.
"""

from __future__ import annotations

import os
import sys

from celery import Celery

url = os.environ.get("PLAIN_CELERY_REDIS", "redis://127.0.0.1:6379/0")
plain = Celery("plain", broker=url, backend=url, set_as_current=False)
plain.conf.broker_connection_retry_on_startup = True


@plain.task(name="plain.whoami")
def whoami(label: str) -> dict[str, object]:
    """Which worker ran it, and whether that process ever imported meetingtasks."""
    return {
        "label": label,
        "pid": os.getpid(),
        "meetingtasks_imported": any(name.startswith("meetingtasks") for name in sys.modules),
    }
