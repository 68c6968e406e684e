"""meetingtasks: the distributed task and event system of a video-meeting platform.

``from meetingtasks import app, Priority`` is all a service needs to define and send
tasks; the rest of the public API is imported from its own module.
"""

from meetingtasks.app import app
from meetingtasks.priority import Priority

__all__ = ["Priority", "app"]
