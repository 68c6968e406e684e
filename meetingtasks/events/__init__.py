"""Events: between services over Redis (EventBus) and inside one process (LocalEventBus).

EventBus          publish/subscribe across services; per channel either Pub/Sub
                  (fire-and-forget) or Redis Streams (durable, consumer groups)
LocalEventBus     buffered in-process signals with worker threads and drop counting
bridge            forwards chosen EventBus events into a LocalEventBus
Event, EventType  the envelope both carry, and the platform's event types
meeting_channel   the channel of one meeting's events (``meeting.<meeting_id>``)
publisher         this process's publish-only EventBus (service tasks use it)
"""

from meetingtasks.events.bridge import bridge
from meetingtasks.events.bus import EventBus
from meetingtasks.events.channels import meeting_channel
from meetingtasks.events.config import DeliveryMode, EventBusConfig
from meetingtasks.events.delivery import Subscription
from meetingtasks.events.envelope import Event, EventType
from meetingtasks.events.local import LocalEventBus
from meetingtasks.events.publisher import publisher

__all__ = [
    "DeliveryMode",
    "Event",
    "EventBus",
    "EventBusConfig",
    "EventType",
    "LocalEventBus",
    "Subscription",
    "bridge",
    "meeting_channel",
    "publisher",
]
