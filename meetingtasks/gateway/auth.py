"""Client tokens: who a client is and which meetings it may act in, signed by us.

A token is a JWT (HS256) with the user id (``sub``), the allowed meeting ids
(``meetings``), its issue and expiry times and our audience, so a JWT minted for some
other purpose with the same key is not accepted. Services mint them (``mint_token``,
``meetingtasks token``); the gateway checks one on every connection (``verify``) and
tells a refused client why, with one of the ``token_*`` codes of ``protocol``.

The key is ``MEETINGTASKS_SECRET``. Left unset, it is a random key generated once per
deployment and kept in Redis (``keys.gateway_secret``): every gateway and token minter
of the deployment shares it, and no known default key exists. Anyone who can read that
Redis can mint tokens, but they could already run any task; set the secret yourself in
production, so it can be rotated and kept apart.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import jwt
from redis.exceptions import RedisError

from meetingtasks.base.keys import get_keys
from meetingtasks.base.settings import get_settings
from meetingtasks.errors import AuthError, ConfigurationError, InvalidEvent, InvalidOption
from meetingtasks.events import meeting_channel
from meetingtasks.gateway import protocol as p
from meetingtasks.store import get_redis

ALGORITHM = "HS256"
AUDIENCE = "meetingtasks"
#: Seconds of clock difference between the minting host and the gateway tolerated.
LEEWAY = 5.0
MAX_MEETINGS = 1000


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified token: the user and the meetings it grants, until ``expires_at``."""

    user_id: str
    meetings: frozenset[str]
    expires_at: float

    def allows(self, meeting_id: str) -> bool:
        return meeting_id in self.meetings

    def expired(self, now: float) -> bool:
        return now >= self.expires_at


def mint_token(
    user_id: str,
    meetings: Iterable[str] = (),
    ttl: float = 3600,
    *,
    secret: str | None = None,
    now: float | None = None,
) -> str:
    """A token for ``user_id`` in ``meetings``, valid ``ttl`` seconds from ``now``."""
    meetings = sorted(set(meetings))
    problem = _claims_problem(user_id, meetings)
    if problem:
        raise InvalidOption(problem)
    if ttl <= 0:
        raise InvalidOption(f"ttl must be a positive number of seconds, not {ttl}")
    issued = time.time() if now is None else now
    claims = {
        "sub": user_id,
        "meetings": meetings,
        "iat": int(issued),
        "exp": int(issued + ttl),
        "aud": AUDIENCE,
    }
    return jwt.encode(claims, secret or get_secret(), algorithm=ALGORITHM)


def verify(
    token: str | None,
    *,
    secret: str | None = None,
    now: float | None = None,
    max_lifetime: float | None = None,
) -> Principal:
    """The principal of a valid token; AuthError with a ``token_*`` code otherwise.

    A token issued in the future (beyond LEEWAY of clock difference) is refused, and so is
    one that lives longer than ``max_lifetime`` seconds (``exp - iat``), when given."""
    if not token:
        raise AuthError(
            p.TOKEN_MISSING,
            "no token: connect with ?token=<token> or send "
            '{"op": "auth", "token": <token>} first (mint one with `meetingtasks token`)',
        )
    if len(token) > p.MAX_TOKEN:
        raise AuthError(p.TOKEN_MALFORMED, f"token is over {p.MAX_TOKEN} characters")
    try:
        claims = jwt.decode(
            token,
            secret or get_secret(),
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            leeway=LEEWAY,
            options={"require": ["sub", "exp", "iat", "aud"], "verify_exp": False},
        )
    except jwt.InvalidSignatureError:
        raise AuthError(
            p.TOKEN_BAD_SIGNATURE,
            "token signature does not match: it was not minted with this deployment's secret",
        ) from None
    except jwt.ImmatureSignatureError:
        raise AuthError(
            p.TOKEN_NOT_YET_VALID,
            "token is issued in the future (iat): check the minting host's clock",
        ) from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(p.TOKEN_MALFORMED, f"token is malformed: {exc}") from None
    expires_at, issued_at = claims["exp"], claims["iat"]
    if not isinstance(expires_at, int | float) or not isinstance(issued_at, int | float):
        raise AuthError(p.TOKEN_MALFORMED, "token is malformed: exp or iat is not a number")
    if max_lifetime is not None and expires_at - issued_at > max_lifetime:
        raise AuthError(
            p.TOKEN_TOO_LONG_LIVED,
            f"token lives {expires_at - issued_at:.0f}s, over the "
            f"{max_lifetime:.0f}s MEETINGTASKS_GATEWAY_MAX_TOKEN_LIFETIME: mint a shorter one "
            "and refresh it",
        )
    meetings = claims.get("meetings", [])
    problem = _claims_problem(claims["sub"], meetings)
    if problem:
        raise AuthError(p.TOKEN_MALFORMED, f"token is malformed: {problem}")
    principal = Principal(claims["sub"], frozenset(meetings), float(expires_at))
    if principal.expired(time.time() if now is None else now):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(expires_at))
        raise AuthError(p.TOKEN_EXPIRED, f"token expired at {stamp}: mint a new one")
    return principal


def _claims_problem(user_id: object, meetings: object) -> str | None:
    if not isinstance(user_id, str) or not 0 < len(user_id) <= p.MAX_ID:
        return f"user id must be a non-empty string of at most {p.MAX_ID} characters"
    if not isinstance(meetings, list) or len(meetings) > MAX_MEETINGS:
        return f"meetings must be a list of at most {MAX_MEETINGS} meeting ids"
    for meeting_id in meetings:
        try:
            if not isinstance(meeting_id, str) or len(meeting_id) > p.MAX_ID:
                raise InvalidEvent("not a short string")
            meeting_channel(meeting_id)
        except InvalidEvent:
            return f"meeting id {str(meeting_id)[:40]!r} is not valid"
    return None


@lru_cache(maxsize=1)
def get_secret() -> str:
    """``MEETINGTASKS_SECRET``, else the deployment's generated key (made if absent)."""
    configured = get_settings().secret
    if configured is not None:
        return configured.get_secret_value()
    key = get_keys().gateway_secret()
    try:
        get_redis().set(key, secrets.token_urlsafe(48), nx=True)
        return str(get_redis().get(key))
    except RedisError as exc:
        raise ConfigurationError(
            f"MEETINGTASKS_SECRET is unset and the Redis that keeps the generated one is "
            f"unreachable ({exc}): start Redis, or set MEETINGTASKS_SECRET"
        ) from exc
