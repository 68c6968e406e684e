"""What the gateway checks of a client beyond its token, without I/O: the page's origin,
and the limits per user and per address that hold on the WebSocket and HTTP paths alike.

- **Origin.** A browser says which page opens a WebSocket (``Origin``). Tokens are not
  cookies, so another site's page cannot borrow a user's; still, only the pages of
  ``MEETINGTASKS_GATEWAY_ALLOWED_ORIGINS`` (by default the gateway's own origin and
  loopback pages) may connect. A client that sends no Origin (not a browser) is not
  concerned.
- **Limits** (per gateway process): connections per user and per address, sessions per
  user, and a submit rate per user over all its sessions and ``POST /tasks``. Each
  refusal has its code (``too_many_connections``, ``too_many_sessions``,
  ``rate_limited``), and ``/metrics`` counts them (``refusals``, ``errors``).
- **Connections of the process** (``connection_cap``): every client holds a descriptor.
  A process that ran out of them could not accept, nor reach Redis, nor open a file;
  asyncio retries its accept every second and logs each failure. So the gateway stops
  short of its open-file limit and closes the clients past it with 1013 ``gateway_full``
  (try again later): the JS client retries, and a deployment adds processes
  (``--workers``) or gateways.
"""

from __future__ import annotations

import ipaddress
import logging
import resource
from collections import Counter
from collections.abc import Iterable
from urllib.parse import urlsplit

from meetingtasks.gateway import protocol as p
from meetingtasks.gateway.session import TokenBucket

#: Submit rate budgets kept before the rested ones are forgotten.
BUCKETS_KEPT = 10_000
#: Descriptors a gateway process keeps beside its clients' (Redis connections, the
#: listening socket, the event loop's, log files), as a share of its open-file limit.
RESERVED_FILES_SHARE, RESERVED_FILES_MIN, RESERVED_FILES_MAX = 1 / 16, 64, 1024

log = logging.getLogger(__name__)


def connection_cap(configured: int) -> int:
    """The connections this process may hold: ``configured`` (0: no wish) within its
    open-file limit, less the reserve."""
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if files == resource.RLIM_INFINITY:
        return configured or 1_000_000
    reserve = int(min(RESERVED_FILES_MAX, max(RESERVED_FILES_MIN, files * RESERVED_FILES_SHARE)))
    ceiling = max(1, files - reserve)
    if configured > ceiling:
        log.warning(
            "MEETINGTASKS_GATEWAY_MAX_CONNECTIONS=%d is more than this process's open-file "
            "limit allows (%d, ulimit -n %d): holding at most %d",
            configured, ceiling, files, ceiling,
        )  # fmt: skip
    return min(configured, ceiling) if configured else ceiling


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine only."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def origin_allowed(origin: str | None, own_host: str | None, allowed: Iterable[str]) -> bool:
    """Whether a page of ``origin`` may connect to the gateway reached as ``own_host``
    (the request's Host); ``allowed`` empty means its own origin and loopback pages."""
    if origin is None:
        return True
    origin = origin.rstrip("/")
    allowed = tuple(allowed)
    if allowed:
        return "*" in allowed or origin in allowed
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if is_loopback(parts.hostname):
        return True
    return own_host is not None and parts.netloc == own_host


class ClientLimits:
    """Who holds what on this gateway process, and the refusals of what is over."""

    def __init__(
        self,
        per_user: int,
        per_address: int,
        sessions_per_user: int,
        rate: float,
        burst: int,
    ) -> None:
        self.per_user, self.per_address = per_user, per_address
        self.sessions_per_user = sessions_per_user
        self.rate, self.burst = rate, burst
        self.users: Counter[str] = Counter()
        self.addresses: Counter[str] = Counter()
        self._buckets: dict[str, TokenBucket] = {}

    def connect(self, user_id: str, address: str | None) -> tuple[str, str] | None:
        """Count a new connection, or say why it is refused (code, message)."""
        if self.users[user_id] >= self.per_user:
            return (
                p.TOO_MANY_CONNECTIONS,
                f"you hold {self.per_user} connections to this gateway, its limit: close one "
                "(MEETINGTASKS_GATEWAY_MAX_CONNECTIONS_PER_USER)",
            )
        if address is not None and self.addresses[address] >= self.per_address:
            return (
                p.TOO_MANY_CONNECTIONS,
                f"your address holds {self.per_address} connections to this gateway, its "
                "limit (MEETINGTASKS_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS)",
            )
        self.users[user_id] += 1
        if address is not None:
            self.addresses[address] += 1
        return None

    def disconnect(self, user_id: str, address: str | None) -> None:
        self.users[user_id] -= 1
        if self.users[user_id] <= 0:
            del self.users[user_id]
            self._buckets.pop(user_id, None)
        if address is not None:
            self.addresses[address] -= 1
            if self.addresses[address] <= 0:
                del self.addresses[address]

    def new_session(self, open_sessions: int) -> tuple[str, str] | None:
        """Whether a user with ``open_sessions`` here may open one more."""
        if open_sessions >= self.sessions_per_user:
            return (
                p.TOO_MANY_SESSIONS,
                f"you have {self.sessions_per_user} sessions open on this gateway, its "
                "limit: resume one with ?session=<id>",
            )
        return None

    def submit(self, user_id: str, now: float) -> tuple[str, str] | None:
        """Whether ``user_id`` may submit now (takes a token of its rate), else why not."""
        bucket = self._buckets.get(user_id)
        if bucket is None:
            if len(self._buckets) >= BUCKETS_KEPT:
                self._drop_rested(now)
            bucket = self._buckets[user_id] = TokenBucket(self.rate, self.burst, now)
        if bucket.take(now):
            return None
        return (
            p.RATE_LIMITED,
            f"over {self.rate:g} submits a second for your user (bursts of {self.burst}), "
            "over all your sessions: slow down and send it again",
        )

    def _drop_rested(self, now: float) -> None:
        """Forget the buckets that filled up again (their users went quiet): a user with
        no connection (POST /tasks alone) must not be remembered forever."""
        for user_id in [u for u, b in self._buckets.items() if b.full(now)]:
            del self._buckets[user_id]
