"""What Celery's worker is running now, from its worker state.

Private names of Celery 5.7 relied on (``tests/test_private_api.py`` checks each):
``celery.worker.state.active_requests``, and a request's ``message.delivery_tag``.
"""

from __future__ import annotations

from celery.worker.state import active_requests


def running_delivery_tags() -> set[str]:
    """Delivery tags of the messages of the tasks this worker runs now."""
    return {request.message.delivery_tag for request in list(active_requests)}
