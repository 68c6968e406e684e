"""The gateway's settings, as one value a server is built from (tests build their own)."""

from __future__ import annotations

from dataclasses import dataclass, field

from meetingtasks.base.settings import default, get_settings
from meetingtasks.gateway.protocol import Limits


@dataclass(frozen=True)
class GatewayConfig:
    """Defaults are the settings' defaults; ``from_settings`` reads the environment."""

    redis_url: str = default("redis_url")
    limits: Limits = field(default_factory=Limits)
    max_tasks: int = default("gateway_max_tasks")
    submit_rate: float = default("gateway_submit_rate")
    submit_burst: int = default("gateway_submit_burst")
    idle_timeout: float = default("gateway_idle_timeout")
    auth_timeout: float = default("gateway_auth_timeout")
    outbox_frames: int = default("gateway_outbox_frames")
    max_unsent_bytes: int = default("gateway_max_unsent_bytes")
    max_token_lifetime: float = default("gateway_max_token_lifetime")
    token_refresh_lead: float = default("gateway_token_refresh_lead")
    #: Origins whose pages may connect; empty: this gateway's own and loopback ones.
    allowed_origins: tuple[str, ...] = default("gateway_allowed_origins")
    #: Connections of this process (0: ``guard.connection_cap`` sets it from the
    #: open-file limit when the app is built).
    max_connections: int = default("gateway_max_connections")
    max_connections_per_user: int = default("gateway_max_connections_per_user")
    max_connections_per_address: int = default("gateway_max_connections_per_address")
    max_sessions_per_user: int = default("gateway_max_sessions_per_user")
    user_submit_rate: float = default("gateway_user_submit_rate")
    user_submit_burst: int = default("gateway_user_submit_burst")
    operator_token: str | None = None
    #: Whether this process listens beyond loopback (``serve`` says): then /stats and
    #: /metrics want the operator token, and a secret must be set.
    public: bool = False
    #: Threads that run the blocking dispatcher and Celery calls.
    dispatch_threads: int = 8

    @property
    def hard_frame_bytes(self) -> int:
        """Frames over this close the connection (1009): the server will not even buffer
        them. Between the limit and this, a frame is read and refused with an error."""
        return 4 * self.limits.max_frame_bytes

    @classmethod
    def from_settings(cls, public: bool = False) -> GatewayConfig:
        s = get_settings()
        return cls(
            public=public,
            redis_url=s.redis_url,
            limits=Limits(
                s.gateway_max_frame_bytes, s.gateway_max_payload_bytes, s.gateway_max_depth
            ),
            max_tasks=s.gateway_max_tasks,
            submit_rate=s.gateway_submit_rate,
            submit_burst=s.gateway_submit_burst,
            idle_timeout=s.gateway_idle_timeout,
            auth_timeout=s.gateway_auth_timeout,
            outbox_frames=s.gateway_outbox_frames,
            max_unsent_bytes=s.gateway_max_unsent_bytes,
            max_token_lifetime=s.gateway_max_token_lifetime,
            token_refresh_lead=s.gateway_token_refresh_lead,
            allowed_origins=s.gateway_allowed_origins,
            max_connections=s.gateway_max_connections,
            max_connections_per_user=s.gateway_max_connections_per_user,
            max_connections_per_address=s.gateway_max_connections_per_address,
            max_sessions_per_user=s.gateway_max_sessions_per_user,
            user_submit_rate=s.gateway_user_submit_rate,
            user_submit_burst=s.gateway_user_submit_burst,
            operator_token=(
                s.gateway_operator_token.get_secret_value() if s.gateway_operator_token else None
            ),
        )

    def client_limits(self) -> dict[str, float]:
        """The limits a client is told in its ``session`` frame."""
        return {
            "max_frame_bytes": self.limits.max_frame_bytes,
            "max_payload_bytes": self.limits.max_payload_bytes,
            "max_tasks": self.max_tasks,
            "submit_rate": self.submit_rate,
            "submit_burst": self.submit_burst,
            "idle_timeout": self.idle_timeout,
        }
