"""meetingtasks: the distributed task and event system of a video-meeting platform.

``from meetingtasks import app, Priority`` is all a service needs to define and send
tasks; the rest of the public API is imported from its own module. The layers, top to
bottom, are in ``docs/architecture.md``.

Importing the package reads no setting: the first send or a worker's start does, so a
test can point it at a private Redis first (``meetingtasks.testing``).
"""

from meetingtasks.app import app
from meetingtasks.base.priority import Priority

__all__ = ["Priority", "app"]
