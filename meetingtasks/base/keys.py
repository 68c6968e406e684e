"""Every Redis key and channel name of meetingtasks, in one place.

All names start with the deployment namespace (``MEETINGTASKS_NAMESPACE``, default
``mt``) followed by ``:``; nothing else in the code builds a key. Kombu and Celery's
result backend get the same prefix through their ``global_keyprefix`` option, so a
queue's Redis lists are ``{ns}:{queue}`` and ``{ns}:{queue}:{step}``.

Lua scripts receive their keys from here as KEYS, with one exception: ``fetch.lua``
learns a task's id only when it pops the message, so it gets the status and tombstone
families' prefixes (``status_prefix``, ``cancelled_prefix``) and appends the id, as
asynq's dequeue script does. Declaring those keys would cost the hottest path a second
round trip per fetch (pop, then mark), and a window where a popped task shows
``queued``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from meetingtasks.base.priority import Priority
from meetingtasks.base.settings import get_settings

#: Separator kombu puts between a queue name and its priority step.
PRIORITY_SEP = ":"

#: Names our own key families and kombu's bookkeeping use; no queue may take one.
RESERVED_NAMES = frozenset(
    {
        "unacked", "unacked_index", "unacked_mutex", "held", "celery", "celeryev",
        "delayed", "dlq", "cancelled", "idempotency", "scheduler", "roster",
        "streams", "presence", "signal", "events", "stream", "session", "status", "deadlines",
        "taskstats", "notify", "consumers", "gateway", "malformed", "routes",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Keys:
    namespace: str

    @property
    def prefix(self) -> str:
        """What kombu and the result backend put in front of their own keys."""
        return f"{self.namespace}:"

    # -- kombu's queue lists ------------------------------------------------------------

    def queue(self, queue: str, priority: Priority | int = Priority.CRITICAL) -> str:
        """LIST: the messages of one queue at one priority step (LPUSH in, BRPOP out)."""
        step = int(priority)
        suffix = f"{PRIORITY_SEP}{step}" if step else ""
        return f"{self.prefix}{queue}{suffix}"

    def inbox(self, queue: str) -> str:
        """LIST: task messages of producers without our package (docs/wire.md), LPUSHed;
        workers move each to ``landing`` (BLMOVE) and adopt it onto the queue."""
        return f"{self.prefix}{queue}{PRIORITY_SEP}inbox"

    def landing(self, queue: str) -> str:
        """LIST: inbox messages a worker moved out and has not adopted yet (every worker
        sweeps what one that died left)."""
        return f"{self.prefix}{queue}{PRIORITY_SEP}landing"

    def doorbell(self, queue: str) -> str:
        """LIST: a token per message put on a queue; idle consumers block on it (BRPOP)
        and then take the message itself atomically (``store/lua/fetch.lua``)."""
        return f"{self.prefix}{queue}{PRIORITY_SEP}bell"

    def held(self, queue: str, consumer: str) -> str:
        """HASH: delivery tag -> raw message of ``queue`` that one consumer (a worker's
        broker connection) took and has not acknowledged; the recovery of a consumer
        whose heartbeat lapsed gives its messages back (``store/held.py``)."""
        return f"{self.held_prefix()}{queue}:{consumer}"

    def held_prefix(self) -> str:
        """What ``held(queue, consumer)`` puts before the queue name."""
        return f"{self.prefix}held:"

    def unacked(self) -> str:
        """HASH: kombu's own unacknowledged messages (a channel that is not one of our
        workers' consumers; ours hold theirs in ``held``)."""
        return f"{self.prefix}unacked"

    def malformed(self) -> str:
        """LIST: raw messages found on a queue that are not kombu JSON messages at all,
        set aside by the fetch step (newest first, bounded) so they cannot stall a worker."""
        return f"{self.prefix}malformed"

    def consumers(self) -> str:
        """ZSET: id of each worker's current consumer, scored by when its heartbeat
        lapses (unix time): who is online, and whose held messages to give back."""
        return f"{self.prefix}consumers"

    # -- durable delays, cancellation, dead letters, idempotency -------------------------

    def delayed(self) -> str:
        """ZSET: task id scored by the unix time it is due."""
        return f"{self.prefix}delayed"

    def delayed_messages(self) -> str:
        """HASH: task id -> JSON [queue list key, kombu message, status key, doorbell key]
        of a delayed task (``lua/enqueue.lua`` writes it, ``lua/move_due.lua`` reads it)."""
        return f"{self.prefix}delayed:messages"

    def cancelled(self, task_id: str) -> str:
        """STRING with TTL: present when a task was cancelled (survives every restart)."""
        return self.cancelled_prefix() + task_id

    def cancelled_prefix(self) -> str:
        """What ``cancelled(id)`` puts before the id, for fetch.lua (see the module doc)."""
        return f"{self.prefix}cancelled:"

    def dlq(self) -> str:
        """ZSET: task id of each dead letter, scored by the time it failed for good."""
        return f"{self.prefix}dlq"

    def dlq_entries(self) -> str:
        """HASH: task id -> JSON dead letter (type, payload, options, error, traceback…)."""
        return f"{self.prefix}dlq:entries"

    def idempotency(self, key: str) -> str:
        """STRING with TTL: the task id first submitted under an idempotency key."""
        return f"{self.prefix}idempotency:{key}"

    def scheduler_stats(self) -> str:
        """HASH: counters of the scheduler loops (moved, promoted, recovered…)."""
        return f"{self.prefix}scheduler:stats"

    def routes(self) -> str:
        """HASH: task type -> JSON route registered at run time (``register_route``), seen
        by every process of the deployment."""
        return f"{self.prefix}routes"

    def routes_version(self) -> str:
        """STRING: a counter raised by every run-time route registration, so a process
        knows cheaply when to read ``routes`` again."""
        return f"{self.prefix}routes:version"

    # -- task status, for the dispatcher and the gateway ---------------------------------

    def status(self, task_id: str) -> str:
        """HASH: a task's status, ids (type, session, user, meeting…) and times."""
        return self.status_prefix() + task_id

    def status_prefix(self) -> str:
        """What ``status(id)`` puts before the id, for fetch.lua (see the module doc)."""
        return f"{self.prefix}status:"

    def deadlines(self) -> str:
        """ZSET: id of each running task with a timeout, scored by when it must be over."""
        return f"{self.prefix}deadlines"

    def task_stats(self) -> str:
        """HASH: cluster-wide counters: dispatched/completed/failed/… in all, by type and
        by priority (fields ``event``, ``type:{type}:{event}``, ``priority:{p}:{event}``)."""
        return f"{self.prefix}taskstats"

    def notify_channel(self, dispatcher_id: str) -> str:
        """PUBSUB channel: end states of the tasks one dispatcher waits on."""
        return f"{self.prefix}notify:{dispatcher_id}"

    # -- meeting state kept by the service tasks ----------------------------------------

    def participants(self, meeting_id: str) -> str:
        """SET: user ids currently in a meeting."""
        return f"{self.prefix}roster:{meeting_id}"

    def streams(self, meeting_id: str) -> str:
        """HASH: stream id -> JSON description of each live media stream of a meeting."""
        return f"{self.prefix}streams:{meeting_id}"

    def presence(self, user_id: str) -> str:
        """STRING with TTL: a user's presence status."""
        return f"{self.prefix}presence:{user_id}"

    # -- events (meetingtasks.events) ---------------------------------------------------

    def event_channel(self, channel: str) -> str:
        """PUBSUB channel (or PSUBSCRIBE pattern): fire-and-forget events of one channel."""
        return f"{self.prefix}events:{channel}"

    def event_stream(self, channel: str) -> str:
        """STREAM: durable events of one channel, read by consumer groups."""
        return f"{self.prefix}stream:{channel}"

    def session_channel(self, session_id: str) -> str:
        """PUBSUB channel: frames for one client session (deltas, progress, results)."""
        return f"{self.prefix}session:{session_id}"

    def user_channel(self, user_id: str) -> str:
        """PUBSUB channel: signaling messages addressed to one user."""
        return f"{self.prefix}signal:{user_id}"

    # -- client gateway (meetingtasks.gateway) -------------------------------------------

    def gateway_session(self, session_id: str) -> str:
        """HASH with TTL: one client session (user id, creation time). It expires
        ``MEETINGTASKS_GATEWAY_IDLE_TIMEOUT`` after its last connection and activity."""
        return f"{self.prefix}gateway:session:{session_id}"

    def gateway_session_tasks(self, session_id: str) -> str:
        """ZSET with TTL: ids of the tasks a client session submitted, scored by the
        submit time (the newest kept), so a client that reconnects can fetch them."""
        return f"{self.prefix}gateway:tasks:{session_id}"

    def gateway_secret(self) -> str:
        """STRING: the key signing client tokens when ``MEETINGTASKS_SECRET`` is unset,
        generated by the first process of the deployment that needs one."""
        return f"{self.prefix}gateway:secret"


@cache
def get_keys() -> Keys:
    """The key names of this process's deployment namespace (settings are read once)."""
    return Keys(get_settings().namespace)
