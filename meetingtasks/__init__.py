"""meetingtasks: the distributed task and event system of a video-meeting platform.

``from meetingtasks import app, Priority`` is all a service needs to define and send
tasks; the rest of the public API is imported from its own module. The layers, top to
bottom, are in ``docs/architecture.md``.

Importing the package assembles the app: the Celery app and its settings
(``meetingtasks.app``), the service tasks (registered in every process, so senders can
check arguments and apply route defaults), and what every worker process adds to
Celery's (``meetingtasks.run.worker``).
"""

from meetingtasks.app import app
from meetingtasks.base.priority import Priority

app.loader.import_default_modules()

import meetingtasks.run.worker  # noqa: E402,F401  (connects the worker signals)

__all__ = ["Priority", "app"]
