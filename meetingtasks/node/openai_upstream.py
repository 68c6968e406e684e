"""Any OpenAI-compatible inference server behind the node: ``--upstream openai+http://HOST:PORT/v1``.

vLLM (``vllm serve``), llama.cpp's ``llama-server``, Ollama (``/v1``) and llama-cpp-python's
own server (``python -m llama_cpp.server``) all stream ``/v1/chat/completions`` as
server-sent events. This backend forwards each inference there and yields the deltas:

- the work unit's system prompt and the input become ``system`` and ``user`` messages,
  so the server applies its model's own chat template; ``max_token_len`` and
  ``temperature`` from the setup become ``max_tokens`` and ``temperature``;
- at most ``streams`` requests are in flight (the server's parallel slots); a request that
  finds none free for ``queue_timeout`` is refused with -10, which the client retries;
- a reply the node stops reading (the task timed out or was cancelled, its client left)
  closes its HTTP stream, so the server stops generating;
- the server's answers map to the node's error codes: unreachable, overloaded (429, 5xx)
  or silent for ``read_timeout`` is -10 (retried, elsewhere if another node is listed); a
  model it does not serve or a request it refuses (400, 404, 422) is -5, which is not;
  a stream cut short is -10;
- an API key comes from ``MEETINGTASKS_UPSTREAM_API_KEY`` (or ``OPENAI_API_KEY``).

httpx carries the requests and httpx-sse parses the event stream (the ``openai`` extra).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from meetingtasks.errors import ConfigurationError
from meetingtasks.llm.protocol import ErrorCode
from meetingtasks.node.backends import Backend, BackendError, Generation, check_sampling

SCHEMES = ("openai+http://", "openai+https://")
API_KEY_VARIABLES = ("MEETINGTASKS_UPSTREAM_API_KEY", "OPENAI_API_KEY")
MISSING_EXTRA = "the OpenAI upstream needs the openai extra: pip install '.[openai]'"
#: HTTP statuses of a server that may answer later: retried.
BUSY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
#: Statuses that say this request will never be served there (bad model name, options).
REFUSED_STATUSES = frozenset({400, 404, 405, 413, 422})


def is_openai_upstream(url: str) -> bool:
    return url.startswith(SCHEMES)


class OpenAIUpstream(Backend):
    slots: int  # its streams: always a limit

    def __init__(
        self,
        upstream: str,
        *,
        model: str | None = None,
        streams: int = 4,
        connect_timeout: float = 3.0,
        read_timeout: float = 20.0,
        queue_timeout: float = 15.0,
        api_key: str | None = None,
    ) -> None:
        """``model``: the name to ask the server for (default: the work unit's model);
        ``streams``: requests in flight at once; ``read_timeout``: the longest silence
        accepted, the first token's wait included."""
        if not is_openai_upstream(upstream):
            raise ConfigurationError(
                f"--upstream {upstream!r}: an OpenAI-compatible server is reached at "
                "openai+http://HOST:PORT/v1 (or openai+https://)"
            )
        if streams < 1 or min(connect_timeout, read_timeout, queue_timeout) <= 0:
            raise ConfigurationError(
                "the OpenAI upstream needs at least 1 stream and positive timeouts"
            )
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - the extra is missing
            raise ConfigurationError(MISSING_EXTRA) from exc
        self.url = upstream
        self.base_url = upstream.removeprefix("openai+").rstrip("/")
        self.model, self.slots, self.queue_timeout = model, streams, queue_timeout
        key = api_key or next((os.environ[v] for v in API_KEY_VARIABLES if os.environ.get(v)), "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=streams, max_keepalive_connections=streams),
        )
        self._free = threading.BoundedSemaphore(streams)
        self._lock = threading.Lock()
        self._in_flight = 0
        self._state = "unknown"
        self._last_error: str | None = None

    def describe(self) -> str:
        return f"OpenAI-compatible server at {self.base_url} ({self.slots} streams)"

    @property
    def free_slots(self) -> int:
        return self.slots - self._in_flight

    def health(self) -> dict[str, Any]:
        return {
            "upstream": self.url,
            "state": self._state,
            "last_error": self._last_error,
            "streams": self.slots,
            "in_flight": self._in_flight,
            "free_slots": self.free_slots,
        }

    def setup(self, options: Mapping[str, Any]) -> None:
        check_sampling(options)

    def generate(self, request: Generation) -> Iterator[str]:
        if not self._free.acquire(timeout=self.queue_timeout):
            raise BackendError(
                f"the OpenAI upstream {self.base_url} is busy: all {self.slots} streams "
                f"stayed taken for {self.queue_timeout:.3g}s",
                ErrorCode.NOT_AVAILABLE,
            )
        with self._lock:
            self._in_flight += 1
        try:
            yield from self._stream(request)
            self._state = "up"
        finally:
            with self._lock:
                self._in_flight -= 1
            self._free.release()

    def close(self) -> None:
        self._http.close()

    def _stream(self, request: Generation) -> Iterator[str]:
        import httpx
        from httpx_sse import SSEError, connect_sse

        try:
            with connect_sse(
                self._http, "POST", "/chat/completions", json=self._body(request)
            ) as events:
                self._check(events.response)
                finished = False
                for event in events.iter_sse():
                    if event.data.strip() == "[DONE]":
                        finished = True
                        break
                    delta, ended = self._delta(event.data)
                    if delta:
                        yield delta
                    finished = finished or ended
                if not finished:
                    raise self._failed(
                        "closed its stream before the reply ended", ErrorCode.NOT_AVAILABLE
                    )
        except httpx.TimeoutException as exc:
            raise self._failed(f"was silent too long ({type(exc).__name__})") from exc
        except (httpx.TransportError, SSEError) as exc:
            raise self._failed(f"could not be reached or broke off: {exc}") from exc

    def _body(self, request: Generation) -> dict[str, Any]:
        messages = [{"role": "user", "content": request.text}]
        if request.system_prompt:
            messages.insert(0, {"role": "system", "content": request.system_prompt})
        body: dict[str, Any] = {
            "model": self.model or request.model,
            "messages": messages,
            "stream": True,
        }
        options = request.options
        if options.get("max_token_len") is not None:
            body["max_tokens"] = options["max_token_len"]
        if options.get("temperature") is not None:
            body["temperature"] = options["temperature"]
        return body

    def _check(self, response: Any) -> None:
        """Raise the node's error for a refused request (the body says why)."""
        if response.status_code == 200:
            return
        response.read()
        why = f"answered HTTP {response.status_code}: {response.text[:300]}"
        if response.status_code in (401, 403):
            raise self._failed(f"{why} (check {' or '.join(API_KEY_VARIABLES)})", ErrorCode.GENERAL)
        if response.status_code in REFUSED_STATUSES:
            raise self._failed(why, ErrorCode.MODEL_LOAD_FAILED)
        if response.status_code in BUSY_STATUSES:
            raise self._failed(why)
        raise self._failed(why, ErrorCode.GENERAL)

    def _delta(self, data: str) -> tuple[str, bool]:
        """(text, finished) of one chunk of the stream."""
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise self._failed(
                f"sent an event that is not JSON: {data[:200]!r}", ErrorCode.GENERAL
            ) from exc
        if not isinstance(chunk, dict):
            raise self._failed(f"sent a chunk that is not an object: {data[:200]!r}")
        if "error" in chunk:
            raise self._failed(f"failed mid-reply: {chunk['error']}", ErrorCode.MODEL_RUN_FAILED)
        choices = chunk.get("choices") or [{}]
        choice = choices[0] if isinstance(choices[0], dict) else {}
        delta = choice.get("delta") or {}
        text = delta.get("content") if isinstance(delta, dict) else None
        return (text if isinstance(text, str) else ""), bool(choice.get("finish_reason"))

    def _failed(self, what: str, code: int = ErrorCode.NOT_AVAILABLE) -> BackendError:
        self._last_error = f"the OpenAI upstream {self.base_url} {what}"
        self._state = "down" if code == ErrorCode.NOT_AVAILABLE else "up"
        return BackendError(self._last_error, code)
