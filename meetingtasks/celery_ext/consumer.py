"""The worker's consumer: back on the broker within a second of its return.

Celery's consumer reconnects through kombu's ``Connection.ensure_connection`` with
kombu's default pauses: 2 s, then 4 s, 6 s … So after a Redis failover (the new
primary is named 2 to 3 s after the old one died, here) a worker waited another 2 to
4 s before it took tasks again, and longer after each further attempt. Ours pauses
``RECONNECT`` says: at once, then a quarter second later, then every half second, so
tasks flow again within about a second of the promotion, or of a restarted Redis
answering.

Celery 5.7 names relied on (``tests/test_private_api.py`` checks them):
``celery.worker.consumer.Consumer.ensure_connected``, which calls
``conn.ensure_connection(errback, max_retries, callback=...)``; kombu's
``Connection.ensure_connection`` takes ``interval_start``, ``interval_step`` and
``interval_max``. The ``worker_consumer`` setting (``celeryconfig.py``) selects this class.
"""

from __future__ import annotations

import functools
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

#: kombu's reconnect pauses, in seconds: the first retry at once, then a quarter second
#: more each time, never more than half a second.
RECONNECT = {"interval_start": 0.0, "interval_step": 0.25, "interval_max": 0.5}


class Consumer(CeleryConsumer):
    def ensure_connected(self, conn: Any) -> Any:
        conn.ensure_connection = functools.partial(conn.ensure_connection, **RECONNECT)
        try:
            return super().ensure_connected(conn)
        finally:
            del conn.ensure_connection  # the method of its class again
