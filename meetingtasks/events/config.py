"""Settings of the EventBus (the rules for channel names are ``base/channels.py``).

A channel's delivery mode is a property of the channel, not of one call: publishers and
subscribers read it from the same ``durable_channels`` list, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from fnmatch import fnmatchcase

from redis.backoff import EqualJitterBackoff

from meetingtasks.base.channels import validate_channel, validate_name
from meetingtasks.base.settings import get_settings
from meetingtasks.errors import ConfigurationError, InvalidEvent
from meetingtasks.events.envelope import DEFAULT_MAX_EVENT_BYTES


class DeliveryMode(StrEnum):
    PUBSUB = "pubsub"  # Redis Pub/Sub: fast; a subscriber that is down misses events
    DURABLE = "durable"  # Redis Streams + consumer groups: a group gets what it missed


@dataclass(frozen=True)
class EventBusConfig:
    """Every knob of one EventBus, each with a default that suits a service process."""

    #: Redis to use; None means ``MEETINGTASKS_REDIS_URL``.
    redis_url: str | None = None
    #: Glob patterns of channels delivered through Redis Streams; every other channel
    #: is fire-and-forget Pub/Sub. Default: ``MEETINGTASKS_EVENT_DURABLE_CHANNELS``, so
    #: every process of a deployment agrees.
    durable_channels: tuple[str, ...] = field(
        default_factory=lambda: get_settings().event_durable_channels
    )
    #: Consumer group used by durable subscriptions that name none (usually the service).
    group: str | None = None
    #: Threads running handlers.
    workers: int = 8
    #: Events handed to handlers and not finished yet; readers wait beyond this, so a
    #: slow handler slows reading instead of growing memory.
    max_in_flight: int = 1000
    #: Largest encoded event accepted by publish (and from the wire).
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    #: Approximate cap on entries kept per stream (XADD MAXLEN ~): a group down for
    #: longer than this many events misses the oldest ones. Default:
    #: ``MEETINGTASKS_EVENT_STREAM_MAXLEN``.
    stream_maxlen: int = field(default_factory=lambda: get_settings().event_stream_maxlen)
    #: Entries asked for per XREADGROUP / XAUTOCLAIM call.
    read_count: int = 100
    #: Seconds a stream reader blocks waiting for events before it looks at stop().
    poll_interval: float = 1.0
    #: Seconds an entry may stay delivered-but-unacknowledged before another consumer of
    #: the group takes it over (its consumer died). Must exceed the slowest handler.
    claim_idle: float = 60.0
    #: Seconds between two scans for such stuck entries.
    claim_interval: float = 5.0
    #: Deliveries of one entry after which it is acknowledged and counted dead (a poison
    #: event whose handler fails every time must not loop forever).
    max_deliveries: int = 5
    #: Where a newly created group starts: "$" (events published from now on) or "0"
    #: (everything the stream still holds).
    group_start: str = "$"
    #: Reconnect backoff after Redis went away, seconds: the first pause is between half
    #: and all of reconnect_initial, each next one doubles, up to reconnect_max.
    reconnect_initial: float = 0.1
    reconnect_max: float = 5.0
    #: Seconds of silence on the Pub/Sub connection before it is pinged; no answer within
    #: as long again means the connection is dead (half-open sockets never error).
    health_check_interval: float = 15.0
    #: Socket read timeout; must exceed poll_interval (stream reads block that long).
    socket_timeout: float = 10.0
    #: Seconds start() and subscribe() wait for subscriptions to be live before returning
    #: anyway (the bus keeps trying in the background).
    start_timeout: float = 5.0

    def __post_init__(self) -> None:
        if isinstance(self.durable_channels, str):
            raise ConfigurationError(
                "durable_channels is a tuple of channel patterns, e.g. ('ai.*',), not a string"
            )
        for pattern in self.durable_channels:
            try:
                validate_channel(pattern, allow_pattern=True)
            except InvalidEvent as exc:
                raise ConfigurationError(f"durable_channels: {exc}") from None
        if self.group is not None:
            validate_name("consumer group", self.group)
        positive = ("workers", "max_in_flight", "max_event_bytes", "stream_maxlen",
                    "read_count", "max_deliveries")  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigurationError(f"EventBusConfig.{name} must be at least 1")
        if min(self.poll_interval, self.claim_idle, self.claim_interval,
               self.reconnect_initial, self.health_check_interval) <= 0:  # fmt: skip
            raise ConfigurationError("EventBusConfig intervals and timeouts must be positive")
        if self.reconnect_max < self.reconnect_initial:
            raise ConfigurationError("reconnect_max must not be smaller than reconnect_initial")
        if self.socket_timeout <= self.poll_interval:
            raise ConfigurationError("socket_timeout must exceed poll_interval")

    def reconnect_backoff(self) -> EqualJitterBackoff:
        """The pauses of the bus's readers between attempts to reach Redis again."""
        return EqualJitterBackoff(cap=self.reconnect_max, base=self.reconnect_initial)

    def mode_of(self, channel: str) -> DeliveryMode:
        """How events of this channel travel."""
        if any(fnmatchcase(channel, pattern) for pattern in self.durable_channels):
            return DeliveryMode.DURABLE
        return DeliveryMode.PUBSUB
