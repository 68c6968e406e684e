"""Gateway processes and WebSocket clients for the gateway tests.

``GatewayProcess`` runs ``python -m tests.support.gateways`` (the real server, plus
client names for the test tasks) on a free port, with its settings from the
environment; ``Client`` is a blocking WebSocket client (the ``websockets`` library)
that reads frames with bounded waits.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from meetingtasks.gateway.auth import mint_token
from meetingtasks.policies.routing import Route, get_route_table
from meetingtasks.run.embedded_redis import free_port

REPO = Path(__file__).resolve().parents[2]

#: The gateways' token key in tests (the test process has no MEETINGTASKS_SECRET).
SECRET = "test-secret-" + "x" * 40

#: Client names of test tasks (tests/worker_tasks.py), known to the test gateways.
CLIENT_ROUTES = (
    Route(type="test.sleep", queue="user", max_retries=0, timeout=60, client="sleep"),
    Route(type="test.flaky", queue="user", max_retries=4, timeout=3, client="flaky"),
)

Frame = dict[str, Any]


def token(user: str, meetings: tuple[str, ...] = (), ttl: float = 600, **options: Any) -> str:
    return mint_token(user, meetings, ttl, secret=options.pop("secret", SECRET), **options)


class GatewayProcess:
    """One gateway server in its own process, stopped (SIGTERM, then -9) by ``stop``."""

    def __init__(
        self,
        log_path: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        reuse_port: bool = False,
        open_files: int | None = None,
        **settings: object,
    ) -> None:
        """``port``: a given one (to restart a gateway where its clients expect it);
        ``host``: the address it listens on (``0.0.0.0``: beyond loopback);
        ``reuse_port``: share the port with other gateways started so (SO_REUSEPORT);
        ``open_files``: its open-file limit, soft and hard (``ulimit -n``)."""
        self.port = port or free_port()
        self.log_path = log_path
        env = {**os.environ, "PYTHONPATH": str(REPO), "MEETINGTASKS_SECRET": SECRET}
        env.update({f"MEETINGTASKS_{k.upper()}": str(v) for k, v in settings.items()})
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.gateways", str(self.port), host]
                + (["--reuse-port"] if reuse_port else []),
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=None if open_files is None else lambda: _limit_files(open_files),
            )
        self._wait_healthy()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, token: str | None = None, session: str | None = None) -> str:
        query = [f"{k}={quote(v)}" for k, v in (("token", token), ("session", session)) if v]
        return f"ws://127.0.0.1:{self.port}/ws" + ("?" + "&".join(query) if query else "")

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def http(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        """(status, decoded JSON or text) of one request."""
        return self.http_with_headers(method, path, body, token)[:2]

    def http_with_headers(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        """(status, decoded JSON or text, headers by lowercase name) of one request."""
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, text = response.status, response.read().decode()
                headers = {k.lower(): v for k, v in response.headers.items()}
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode()
            headers = {k.lower(): v for k, v in exc.headers.items()}
        try:
            return status, json.loads(text), headers
        except ValueError:
            return status, text, headers

    def _wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"gateway exited:\n{self.log()}")
            with contextlib.suppress(OSError, ValueError):
                if self.http("GET", "/healthz")[0] == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"gateway not healthy in {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def subscribe(client: Client, channel: str = "meeting.m1") -> Frame:
    """Follow a meeting's events; the gateway's ``subscribed`` answer."""
    answer = client.request({"op": "subscribe", "channel": channel, "request_id": "sub"})
    assert answer["op"] == "subscribed", answer
    return answer


def publish_notes(count: int, pad: str = "", channel: str = "meeting.m1") -> None:
    """``count`` ``meeting.note`` events on a meeting's channel, numbered in ``n``."""
    from meetingtasks.events import Event, EventBus

    bus = EventBus()
    for n in range(count):
        bus.publish(channel, Event("meeting.note", {"n": n, "pad": pad}, "test"))
    bus.stop()


def _limit_files(count: int) -> None:
    """In the child, before exec: soft and hard open-file limits of ``count``."""
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


class Client:
    """A WebSocket client that keeps every frame it read, in order."""

    def __init__(
        self,
        url: str,
        auth_frame: Frame | None = None,
        expect_session: bool = True,
        origin: str | None = None,
    ):
        self._stack = contextlib.ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(
            connect(url, open_timeout=30, close_timeout=5, origin=origin)  # type: ignore[arg-type]
        )
        self.frames: list[Frame] = []
        self.session: Frame | None = None
        if auth_frame is not None:
            self.send(auth_frame)
        if expect_session:
            self.session = self.until(lambda f: f["op"] == "session")

    @property
    def session_id(self) -> str:
        assert self.session is not None
        return str(self.session["session_id"])

    def send(self, frame: Frame | str | bytes) -> None:
        self.ws.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    def recv(self, timeout: float = 30.0) -> Frame:
        frame = json.loads(self.ws.recv(timeout=timeout))
        self.frames.append(frame)
        return frame

    def until(self, match: Any, timeout: float = 30.0) -> Frame:
        """Read until a frame matches ``match(frame)``; TimeoutError names what came."""
        deadline = time.monotonic() + timeout
        start = len(self.frames)
        while True:
            left = deadline - time.monotonic()
            try:
                frame = self.recv(timeout=max(left, 0.01))
            except TimeoutError:
                raise TimeoutError(f"no match in {timeout}s; got {self.frames[start:]}") from None
            if match(frame):
                return frame

    def request(self, frame: Frame, timeout: float = 30.0) -> Frame:
        """Send a frame with a request id and return the answer that names it."""
        self.send(frame)
        rid = frame.get("request_id")
        return self.until(lambda f: f.get("request_id") == rid and f["op"] != "delta", timeout)

    def result(self, request_id: str, timeout: float = 60.0) -> Frame:
        """The result frame of ``request_id``: already received (tasks end in any order,
        so it may have come while another was awaited), or the next that comes."""

        def match(frame: Frame) -> bool:
            return frame["op"] == "result" and frame.get("request_id") == request_id

        earlier = next((frame for frame in self.frames if match(frame)), None)
        return earlier if earlier is not None else self.until(match, timeout)

    def closed(self, timeout: float = 30.0) -> tuple[int | None, str | None]:
        """Read until the server closes; its close code and reason."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    self.recv(timeout=0.5)
        except ConnectionClosed as exc:
            return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, None)
        raise TimeoutError(f"the server did not close in {timeout}s")

    def close(self) -> None:
        self._stack.close()


def main(port: int, host: str = "127.0.0.1", *flags: str) -> None:
    """The test gateways' entry point: the real server, with the test tasks' client names
    (in this process: a ``gateway_workers`` gateway's own processes know only routes/)."""
    import tests.worker_tasks  # noqa: F401  (the test tasks' payload checks, here too)
    from meetingtasks.base.settings import get_settings
    from meetingtasks.gateway.server import serve

    for route in CLIENT_ROUTES:
        get_route_table().register(route)
    serve(host, port, workers=get_settings().gateway_workers, reuse_port="--reuse-port" in flags)


if __name__ == "__main__":
    main(int(sys.argv[1]), *sys.argv[2:])
