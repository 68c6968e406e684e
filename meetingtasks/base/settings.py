"""Every setting of meetingtasks, one documented default each, overridable by environment.

Each field reads ``MEETINGTASKS_<NAME>`` (``MEETINGTASKS_REDIS_URL`` …). Celery's own
settings live in ``celery_ext/celeryconfig.py`` and are derived from these.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from meetingtasks.base.channels import validate_channel
from meetingtasks.errors import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parents[2]


#: Default pool processes per CPU. Measured on 2 CPUs (no-op tasks, bench/): 1,207 tasks/s
#: with one process per CPU, 2,045/s with four, 1,720/s with eight.
PROCESSES_PER_CPU = 4


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEETINGTASKS_", frozen=True)

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Broker, result backend and events. redis://, rediss:// (TLS) or "
        "sentinel:// URLs; a password or ACL user goes in the URL.",
    )
    redis_sentinel_master: str = Field(
        "mymaster",
        min_length=1,
        description="With a sentinel:// URL: the name the sentinels monitor the primary "
        "by (their 'sentinel monitor NAME ...').",
    )
    redis_sentinel_password: str | None = Field(
        None,
        description="With a sentinel:// URL: the sentinels' own password, when they have "
        "one (the servers' goes in the URL).",
    )
    min_replicas: int = Field(
        0,
        ge=0,
        description="Replicas a send's enqueue and a task's final status must reach (Redis "
        "WAIT) before they count; one not confirmed in time raises NotReplicated. 0: "
        "Redis's asynchronous replication, which a failover may outrun.",
    )
    replica_wait: float = Field(
        5.0,
        gt=0,
        description="Seconds a write waits for MEETINGTASKS_MIN_REPLICAS to confirm it, "
        "long enough to ride out a failover (the old primary back as a replica).",
    )
    redis_max_connections: int = Field(
        256,
        ge=1,
        description="Connections a process's client opens to Redis at most; a thread that "
        "finds them all busy waits for one (up to 20 s). Lua scripts have their own, one per "
        "script running at that moment.",
    )
    namespace: str = Field(
        "mt",
        pattern=r"^[A-Za-z0-9_.-]{1,32}$",
        description="Prefix of every Redis key and channel of this deployment, so several "
        "deployments can share one Redis without seeing each other's tasks or events.",
    )
    routes_dir: Path = Field(
        REPO_ROOT / "routes",
        description="Folder of the routing table: one <queue>.toml file per service queue.",
    )
    visibility_timeout: int = Field(
        3600,
        gt=0,
        description="Seconds before a message taken by a worker that died unacknowledged is "
        "delivered again. Must exceed the longest task timeout (checked at start).",
    )
    timeout_grace: float = Field(
        5.0,
        ge=0,
        description="Seconds between a task's soft time limit (an exception inside the task) "
        "and its hard limit (the worker process running it is killed).",
    )
    retry_backoff_base: float = Field(
        1.0, gt=0, description="Seconds of the first retry delay; each retry doubles it."
    )
    retry_backoff_max: float = Field(
        600.0, gt=0, description="Upper bound of one retry delay, in seconds."
    )
    priority_aging: float = Field(
        60.0,
        ge=0,
        description="Seconds a queued task may wait at one priority level before it is moved "
        "up one level, so LOW work is never starved by constant CRITICAL load. 0 turns aging "
        "off (strict priority).",
    )
    scheduler_interval: float = Field(
        0.25,
        gt=0,
        description="Seconds between two sweeps of the scheduler for due delayed tasks: the "
        "most a delayed task runs late, besides queueing.",
    )
    embedded_scheduler: bool = Field(
        True,
        description="Run the scheduler loops (due delays and retries, recovery of dead "
        "workers' messages, priority aging, the timeout monitor) inside every worker's main "
        "process, their sweeps spread over the workers online. Off: run `meetingtasks "
        "scheduler` yourself, or delays and retries never fire.",
    )
    heartbeat_ttl: float = Field(
        15.0,
        gt=1,
        description="Seconds after a worker's last heartbeat before it counts as dead and "
        "the other workers (or a scheduler) give the messages it held back to their queues.",
    )
    cancel_ttl: int = Field(
        7 * 24 * 3600,
        gt=0,
        description="Seconds a cancellation is remembered: a cancelled task still queued "
        "that long is refused whenever a worker takes it.",
    )
    status_ttl: int = Field(
        24 * 3600,
        gt=0,
        description="Seconds the status of a task not over yet (queued, running, retrying) "
        "stays readable after its last change.",
    )
    retention_unwatched: int = Field(
        60,
        gt=0,
        description="Seconds a finished task's record is kept when nobody awaits it: no "
        "dispatcher waiting, no client session, its result not kept (ignore_result).",
    )
    retention_result: int = Field(
        3600,
        gt=0,
        description="Seconds a finished task's record and result are kept for whoever may "
        "still read them: a dispatcher's callback or wait, AsyncResult.get().",
    )
    retention_failed: int = Field(
        7 * 24 * 3600,
        gt=0,
        description="Seconds the record of a task that failed or timed out is kept (its dead "
        "letter stays until purged).",
    )
    idempotency_window: int = Field(
        3600,
        gt=0,
        description="Seconds an idempotency key keeps returning the first task submitted with it.",
    )
    max_payload_bytes: int = Field(
        1024 * 1024,
        gt=0,
        description="Largest task payload (JSON arguments), in bytes; larger is refused.",
    )
    llm_nodes: str = Field(
        "tcp://127.0.0.1:5560",
        description="Comma-separated inference nodes: tcp://HOST:PORT (ZMQ, our nodes) or "
        "tcp+json://HOST:PORT (newline JSON, an Edge-LLM-Infra/StackFlow unit manager).",
    )
    llm_model: str = Field("echo", description="Model the AI tasks ask the nodes for.")
    llm_unit: str = Field("llm", description="Node unit of the text tasks (chat, summary…).")
    llm_asr_unit: str = Field(
        "llm", description="Node unit of ai.speech_recognition (StackFlow: asr or whisper)."
    )
    llm_read_timeout: float = Field(
        20.0, gt=0, description="Longest silence accepted from a node, model loading included."
    )
    worker_concurrency: int | None = Field(
        None,
        ge=1,
        description="Pool processes per worker; default: PROCESSES_PER_CPU per CPU (tasks mostly "
        "wait on AI nodes and Redis, and one fetch takes a message for every idle process).",
    )
    task_events: Literal["listened", "always"] = Field(
        "listened",
        description="When Celery's task events (for Flower, `celery events`) are published: "
        "'listened', while someone is subscribed (checked at each publish; a monitor that "
        "starts sees them within a second), or 'always'.",
    )
    trace_exporter: Literal["off", "otlp", "file"] = Field(
        "off",
        description="OpenTelemetry traces: 'off'; 'otlp', to an OTLP/HTTP collector (the "
        "SDK's OTEL_EXPORTER_OTLP_ENDPOINT, default http://localhost:4318); 'file', one "
        "JSON line per span in MEETINGTASKS_TRACE_FILE.",
    )
    trace_file: Path | None = Field(
        None, description="With MEETINGTASKS_TRACE_EXPORTER=file: where spans are appended."
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="'json': one JSON object per log line, with the task's id, type, "
        "queue, priority, attempt, worker, session, meeting and trace ids as fields.",
    )
    max_worker_lost: int = Field(
        3,
        ge=1,
        description="Runs of one task whose pool process died under it (an exit, a signal, "
        "the OOM killer) while the worker lived: at this many the task fails with WorkerLost "
        "and goes to the dead letters instead of running again.",
    )
    max_memory_per_child: int = Field(
        512 * 1024,
        ge=0,
        description="KiB of resident memory a prefork pool process may keep after a task: "
        "above it the process is replaced before its next task (Celery's "
        "worker_max_memory_per_child), so a leaking task cannot grow it without bound. 0: "
        "no ceiling.",
    )
    event_durable_channels: Annotated[tuple[str, ...], NoDecode] = Field(
        ("ai.*",),
        description="Comma-separated glob patterns of the event channels delivered through "
        "Redis Streams (durable: a service that was down gets what it missed); every other "
        "channel is fire-and-forget Pub/Sub. Empty: none. Default: the AI task events.",
    )
    event_stream_maxlen: int = Field(
        100_000,
        ge=1,
        description="About how many events each durable channel's stream keeps: a consumer "
        "group down for longer than this many events misses the oldest.",
    )

    secret: SecretStr | None = Field(
        None,
        min_length=32,
        description="Key signing client tokens (JWT HS256), at least 32 characters. Unset: a "
        "random key generated at first use and kept in Redis, shared by every gateway and "
        "`meetingtasks token` of the deployment; set it yourself in production.",
    )
    gateway_max_frame_bytes: int = Field(
        256 * 1024,
        ge=1024,
        description="Largest client frame the gateway reads, in bytes: a larger one is answered "
        "with an error frame; one over 4 times this closes the connection (code 1009).",
    )
    gateway_max_payload_bytes: int = Field(
        128 * 1024,
        ge=64,
        description="Largest task payload (the submit frame's data) a client may send, in bytes; "
        "MEETINGTASKS_MAX_PAYLOAD_BYTES applies too.",
    )
    gateway_max_depth: int = Field(
        32, ge=2, description="Deepest nesting of lists and objects in a client's task data."
    )
    gateway_max_tasks: int = Field(
        50, ge=1, description="Tasks of one client session that may be unfinished at once."
    )
    gateway_submit_rate: float = Field(
        50.0, gt=0, description="Submits per second one client session may sustain."
    )
    gateway_submit_burst: int = Field(
        100, ge=1, description="Submits one client session may send at once, above the rate."
    )
    gateway_idle_timeout: float = Field(
        1800.0,
        gt=0,
        description="Seconds a client session with no connection and no activity is kept: then "
        "it expires, with its record of submitted tasks.",
    )
    gateway_auth_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a client without ?token= has to send its auth frame.",
    )
    gateway_max_token_lifetime: float = Field(
        24 * 3600.0,
        gt=0,
        description="Longest lifetime (exp - iat) of a client token the gateway accepts, in "
        "seconds; a longer-lived one is refused, as is one issued in the future.",
    )
    gateway_token_refresh_lead: float = Field(
        30.0,
        gt=0,
        description="Seconds before a connected client's token expires that the gateway asks "
        "it for a new one (a token_expiring frame; at most half the token's lifetime). At "
        "expiry without one, the connection closes (4401 token_expired).",
    )
    gateway_allowed_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Comma-separated origins (scheme://host[:port]) whose pages may open a "
        "WebSocket; '*' for any. Empty: the gateway's own origin and loopback pages only. "
        "Clients that send no Origin (not browsers) are not concerned.",
    )
    gateway_max_connections_per_user: int = Field(
        20, ge=1, description="WebSocket connections one user may hold on one gateway process."
    )
    gateway_max_connections_per_address: int = Field(
        200,
        ge=1,
        description="WebSocket connections one client address may hold on one gateway process.",
    )
    gateway_max_connections: int = Field(
        0,
        ge=0,
        description="WebSocket connections one gateway process holds; past them a new one is "
        "closed with 1013 gateway_full (try again later). 0: as many as the process's open-file "
        "limit allows, less a reserve for Redis connections and files.",
    )
    gateway_max_sessions_per_user: int = Field(
        10, ge=1, description="Client sessions one user may have open on one gateway process."
    )
    gateway_user_submit_rate: float = Field(
        100.0,
        gt=0,
        description="Submits per second one user may sustain on one gateway process, over "
        "all its sessions and POST /tasks.",
    )
    gateway_user_submit_burst: int = Field(
        200, ge=1, description="Submits one user may send at once, above its rate."
    )
    gateway_operator_token: SecretStr | None = Field(
        None,
        min_length=16,
        description="Bearer token GET /stats and /metrics ask for. Unset: they answer only a "
        "gateway bound to loopback.",
    )
    gateway_outbox_frames: int = Field(
        1000,
        ge=10,
        description="Frames waiting for a client that does not read before the gateway closes "
        "its connection (code 4429), where frames go through ASGI (close frames, or another "
        "server than the gateway's own).",
    )
    gateway_max_unsent_bytes: int = Field(
        1 << 20,
        ge=1 << 16,
        description="Bytes of frames written for one client that its socket has not taken "
        "(it stopped reading) before the gateway cuts it off (code 4429 too_slow; the client "
        "resumes its session). Besides the kernel's socket buffer.",
    )
    gateway_workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Gateway processes sharing the port (SO_REUSEPORT); each holds its own "
        "connections, and sessions resume on any of them.",
    )

    @property
    def pool_processes(self) -> int:
        """Pool processes of a worker started without ``-c``."""
        return self.worker_concurrency or PROCESSES_PER_CPU * (os.cpu_count() or 1)

    @field_validator("gateway_allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        """``"https://a.example, https://b.example"`` from the environment."""
        if isinstance(value, str):
            value = tuple(part.strip().rstrip("/") for part in value.split(",") if part.strip())
        return value

    @field_validator("event_durable_channels", mode="before")
    @classmethod
    def _split_channels(cls, value: object) -> object:
        """``"ai.*, billing"`` from the environment; each pattern checked as the bus would."""
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        for pattern in value if isinstance(value, tuple | list) else ():
            validate_channel(pattern, allow_pattern=True)
        return value

    @model_validator(mode="after")
    def _backoff_bounds(self) -> Settings:
        if self.retry_backoff_max < self.retry_backoff_base:
            raise ValueError("retry_backoff_max must not be smaller than retry_backoff_base")
        return self

    @model_validator(mode="after")
    def _trace_file_given(self) -> Settings:
        if self.trace_exporter == "file" and self.trace_file is None:
            raise ValueError("MEETINGTASKS_TRACE_EXPORTER=file needs MEETINGTASKS_TRACE_FILE")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigurationError(
            f"bad MEETINGTASKS_* environment setting: {exc}. "
            "See the configuration table in docs/operations.md."
        ) from exc


def default(name: str) -> Any:
    """A setting's default, for values built without the environment (a test's gateway), so
    each default is written once, here."""
    return Settings.model_fields[name].default
