"""One client's WebSocket, from handshake to close, on raw ASGI messages.

The connection checks the page's origin and the client's limits (``guard.py``),
authenticates (``?token=`` or a first ``auth`` frame), opens or resumes its session
through the hub, then reads frames one at a time and answers each: a refused frame gets
an ``error`` frame and the connection goes on. Only a token problem, a client that never
authenticates, one over its limits, or one that stops reading ends it, with a close code
and reason (``protocol.CLOSE_*``).

A token's expiry holds while connected, not only on the next frame: a timer asks the
client for a new token (``token_expiring``) shortly before, an ``auth`` frame with one of
the same user refreshes it (meeting channels the new token no longer grants are left),
and at expiry the connection closes (4401 ``token_expired``): nothing else goes out after
it.

Everything sent goes out in order: replies, the workers' frames and meeting events.
Served by ``ws_protocol.DirectSendWSProtocol`` (as ``serve`` does), a frame is written
to the socket at once, already encoded for a broadcast, with no coroutine; a client
that leaves more than ``max_unsent_bytes`` unread is cut off (4429 ``too_slow``, then
dropped if it still does not read), so it holds no one else back. Close frames, and
every frame under another ASGI server, go through an outbox and ASGI's
``websocket.send`` instead: a short-lived flusher task exists only while frames wait
there, and a client that leaves ``outbox_frames`` of them unread is closed. An idle
connection has no outbox and no task of its own (memory: docs/gateway.md, How it scales).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from meetingtasks.base import frames, tracing
from meetingtasks.errors import AuthError, ProtocolError, RedisFull
from meetingtasks.gateway import protocol as p
from meetingtasks.gateway.auth import Principal, verify
from meetingtasks.gateway.guard import origin_allowed
from meetingtasks.gateway.tasks import UNREACHABLE, describe
from meetingtasks.gateway.ws_protocol import DIRECT_SEND, DirectSend, text_frame

if TYPE_CHECKING:
    from meetingtasks.dispatch import TaskResult
    from meetingtasks.gateway.hub import Hub
    from meetingtasks.gateway.session import Session

log = logging.getLogger(__name__)

Message = dict[str, Any]
#: Seconds a refused client gets to receive its error frame and close frame.
CLOSE_GRACE = 5.0


class Connection:
    __slots__ = (
        "_address",
        "_direct",
        "_expiry",
        "_flusher",
        "_outbox",
        "_send",
        "channels",
        "closing",
        "hub",
        "principal",
        "session",
    )

    def __init__(self, hub: Hub, send: Any) -> None:
        self.hub = hub
        self._send = send
        self.principal: Principal | None = None
        self.session: Session | None = None
        #: Redis channels of the meetings this connection follows (None: none yet).
        self.channels: set[str] | None = None
        self._outbox: deque[str | Message] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self.closing = False
        #: The client's address, once counted against its limits (``guard.py``).
        self._address: str | None = None
        #: The timer of the token's next step (asking for a new one, then its expiry).
        self._expiry: asyncio.TimerHandle | None = None
        #: Writes straight to the socket (None under another server than ``serve``'s).
        self._direct: DirectSend | None = None

    async def serve(self, scope: Message, receive: Any) -> None:
        self._direct = scope.get("extensions", {}).get(DIRECT_SEND)
        if (await receive())["type"] != "websocket.connect":
            return
        try:
            await self._send({"type": "websocket.accept"})
        except OSError:  # gone before the handshake ended (uvicorn's ClientDisconnected)
            return
        self.hub.counters.connections += 1
        try:
            await self._serve(scope, receive)
        except Exception:
            log.exception("gateway connection failed")
        finally:
            self.hub.counters.connections -= 1
            if self._expiry is not None:
                self._expiry.cancel()
            if self.principal is not None and self._address is not None:
                self.hub.limits.disconnect(self.principal.user_id, self._address)
            self.hub.leave(self)

    async def _serve(self, scope: Message, receive: Any) -> None:
        cap = self.hub.config.max_connections
        if cap and self.hub.counters.connections > cap:
            await self.refuse(
                p.GATEWAY_FULL,
                f"this gateway process holds its {cap} connections: try again shortly",
                p.CLOSE_TRY_AGAIN,
            )
            return
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", [])
        }
        origin = headers.get("origin")
        if not origin_allowed(origin, headers.get("host"), self.hub.config.allowed_origins):
            await self.refuse(
                p.ORIGIN_REFUSED,
                f"pages of {str(origin)[:100]!r} may not connect to this gateway "
                "(MEETINGTASKS_GATEWAY_ALLOWED_ORIGINS)",
                p.CLOSE_FORBIDDEN,
            )
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        token, wanted = _first(query, "token"), _first(query, "session")
        if token is None:
            auth = await self._auth_frame(receive)
            if auth is None:
                return
            token, wanted = auth.token, auth.session_id or wanted
        try:
            principal = verify(token, max_lifetime=self.hub.config.max_token_lifetime)
        except AuthError as exc:
            await self.refuse(exc.code, str(exc), p.CLOSE_UNAUTHENTICATED)
            return
        client = scope.get("client")
        address = str(client[0]) if client else ""
        refusal = self.hub.limits.connect(principal.user_id, address)
        if refusal is not None:
            await self.refuse(*refusal, p.CLOSE_TOO_MANY)
            return
        self.principal, self._address = principal, address
        self._watch_expiry()
        try:
            frame = await self.hub.open_session(self, self.principal, wanted)
        except ProtocolError as exc:  # over its sessions
            await self.refuse(exc.code, exc.message, p.CLOSE_TOO_MANY)
            return
        except UNREACHABLE as exc:
            log.warning("cannot open a client session: %s", exc)
            await self.refuse(
                p.UNAVAILABLE, "sessions are unreachable: try again shortly", p.CLOSE_TRY_AGAIN
            )
            return
        self.push(frame)
        while not self.closing:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            self.hub.counters.frames_in += 1
            text = message.get("text")
            if text is None:
                self.error(
                    p.BINARY_FRAME,
                    "binary frames are not part of the protocol: send "
                    "one JSON object per text frame",
                )
            else:
                await self._handle(text)

    async def _auth_frame(self, receive: Any) -> p.Auth | None:
        """The first frame, which must be ``auth``; None once the client was refused."""
        try:
            message = await asyncio.wait_for(receive(), self.hub.config.auth_timeout)
        except TimeoutError:
            await self.refuse(
                p.AUTH_TIMEOUT,
                f"no auth frame within {self.hub.config.auth_timeout:g}s: send "
                '{"op": "auth", "token": <token>} first, or connect with ?token=',
                p.CLOSE_AUTH_TIMEOUT,
            )
            return None
        if message["type"] != "websocket.receive":
            return None
        self.hub.counters.frames_in += 1
        try:
            command = p.parse_frame(message.get("text") or "", self.hub.config.limits)
        except ProtocolError as exc:
            command, problem = None, exc.message
        else:
            problem = "it was not an auth frame"
        if not isinstance(command, p.Auth):
            await self.refuse(
                p.TOKEN_MISSING,
                f'authenticate first: send {{"op": "auth", "token": <token>}} ({problem})',
                p.CLOSE_UNAUTHENTICATED,
            )
            return None
        return command

    async def _handle(self, text: str) -> None:
        command: p.Command | None = None
        try:
            command = p.parse_frame(text, self.hub.config.limits)
            if self.principal is None or self.principal.expired(time.time()):
                await self.refuse(
                    p.TOKEN_EXPIRED,
                    "your token expired: reconnect with a new one and ?session= to resume",
                    p.CLOSE_UNAUTHENTICATED,
                )
                return
            await _HANDLERS[type(command)](self, command)
        except ProtocolError as exc:
            rid = exc.request_id if exc.request_id is not None else _request_id(command)
            self.error(exc.code, exc.message, rid)
        except UNREACHABLE as exc:
            log.warning("gateway cannot reach Redis: %s", exc)
            self.error(
                p.UNAVAILABLE,
                "the task system is unreachable right now: try again shortly",
                _request_id(command),
            )
        except RedisFull:
            log.warning(
                "Redis is at its maxmemory: a client %s was refused", type(command).__name__
            )
            self.error(
                p.UNAVAILABLE,
                "the task system is full right now and queued nothing: try again shortly",
                _request_id(command),
            )
        except Exception:
            log.exception("gateway failed on a %s frame", type(command).__name__)
            self.error(
                p.INTERNAL, "the gateway failed on this frame; it was logged", _request_id(command)
            )

    # -- commands ----------------------------------------------------------------------

    async def _submit(self, command: p.Submit) -> None:
        session, principal = self.session, self.principal
        assert session is not None and principal is not None
        refusal = self.hub.limits.submit(principal.user_id, time.monotonic())
        if refusal is not None:
            raise ProtocolError(*refusal, command.request_id)
        refusal = session.admit(time.monotonic())
        if refusal is not None and refusal[0] == p.TOO_MANY_TASKS and session.active:
            await self._forget_finished(session)
            refusal = session.admit(time.monotonic())
        if refusal is not None:
            raise ProtocolError(*refusal, command.request_id)
        task_id = None
        attributes = {tracing.TASK_TYPE: command.type, tracing.SESSION: session.id,
                      tracing.USER: principal.user_id}  # fmt: skip
        try:
            with tracing.span("gateway.submit", tracing.SERVER, attributes=attributes) as span:
                response = await self.hub.tasks.submit(principal, command, session.id)
                task_id = response.task_id
                assert task_id is not None
                if span is not None:
                    span.set_attribute(tracing.TASK_ID, task_id)
                    session.traces[task_id] = span.get_span_context()
            self.hub.counters.submitted += 1
            log.debug("session %s submitted %s as %s", session.id, command.type, task_id)
            self.push(frames.accepted(task_id, response.status, command.request_id))
        finally:
            for frame in session.submitted(task_id):
                for member in session.members:
                    member.push(frame)
        try:
            await self.hub.store.add_task(session.id, task_id)
        except UNREACHABLE as exc:  # queued all the same; only a later resume misses it
            log.warning("could not record task %s in session %s: %s", task_id, session.id, exc)

    async def _forget_finished(self, session: Session) -> None:
        """Tasks counted as unfinished whose end this session never heard of."""
        task_ids = list(session.active)
        results = await self.hub.tasks.statuses(task_ids)
        session.forget([t for t, r in zip(task_ids, results, strict=True) if r is None or r.done])

    async def _owned(self, task_id: str, request_id: str | None) -> TaskResult:
        """The task's status if this session submitted it; the same refusal otherwise,
        so a client cannot tell someone else's task from one that does not exist."""
        result = (await self.hub.tasks.statuses([task_id]))[0]
        if result is None or self.session is None or result.session_id != self.session.id:
            raise ProtocolError(
                p.TASK_NOT_FOUND, f"no task {task_id[:40]!r} of this session", request_id
            )
        return result

    async def _status(self, command: p.Status) -> None:
        result = await self._owned(command.task_id, command.request_id)
        self.push(frames.status(describe(result), command.request_id))

    async def _cancel(self, command: p.Cancel) -> None:
        """No answer of its own: the task's ``result`` frame (``cancelled``) follows."""
        result = await self._owned(command.task_id, command.request_id)
        if result.done or not await self.hub.tasks.cancel(command.task_id):
            raise ProtocolError(
                p.TASK_FINISHED,
                f"task {command.task_id} is over ({result.status.value}): nothing to cancel",
                command.request_id,
            )

    async def _subscribe(self, command: p.Subscribe) -> None:
        assert self.principal is not None
        state = await self.hub.subscribe(self, self.principal, command.channel)
        self.push(frames.subscribed("subscribed", command.channel, command.request_id, state))

    async def _unsubscribe(self, command: p.Unsubscribe) -> None:
        self.hub.unsubscribe(self, command.channel)
        self.push(frames.subscribed("unsubscribed", command.channel, command.request_id))

    async def _ping(self, command: p.Ping) -> None:
        self.push(frames.pong(command.request_id))

    async def _auth(self, command: p.Auth) -> None:
        """A token refresh: the same user's new token replaces the connection's."""
        assert self.principal is not None
        try:
            principal = verify(command.token, max_lifetime=self.hub.config.max_token_lifetime)
        except AuthError as exc:  # the old token holds until it expires
            raise ProtocolError(exc.code, str(exc), command.request_id) from None
        if principal.user_id != self.principal.user_id:
            await self.refuse(
                p.USER_MISMATCH,
                f"a refresh must be a token of {self.principal.user_id!r}: reconnect with "
                "the other user's token instead",
                p.CLOSE_FORBIDDEN,
            )
            return
        self.principal = principal
        for channel in self.hub.revoke_channels(self, principal):
            self.push(frames.subscribed("unsubscribed", channel, None))
        self._watch_expiry()
        self.push(frames.authenticated(principal.expires_at, command.request_id))

    # -- the token's expiry ------------------------------------------------------------

    def _watch_expiry(self) -> None:
        """Ask for a new token ``token_refresh_lead`` seconds before this one expires (at
        most half its time left), and close at its expiry."""
        assert self.principal is not None
        if self._expiry is not None:
            self._expiry.cancel()
        left = self.principal.expires_at - time.time()
        lead = min(self.hub.config.token_refresh_lead, left / 2)
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(max(left - lead, 0.0), self._token_expiring)

    def _token_expiring(self) -> None:
        assert self.principal is not None
        self.push(frames.token_expiring(self.principal.expires_at))
        left = self.principal.expires_at - time.time()
        self._expiry = asyncio.get_running_loop().call_later(max(left, 0.0), self._token_expired)

    def _token_expired(self) -> None:
        """Nothing more goes out: what waits unsent is dropped, the client told why."""
        self._expiry = None
        if self.closing:
            return
        code, why = p.TOKEN_EXPIRED, "your token expired: reconnect with a new one and ?session="
        self.hub.counters.errors[code] += 1
        self.hub.counters.refusals[code] += 1
        if self._outbox is None:
            self._outbox = deque()
        self._outbox.clear()  # in place: a flusher may be sending from it
        self._outbox.append(frames.error(code, why))
        self._close(p.CLOSE_UNAUTHENTICATED, f"{code}: {why}")

    # -- sending -----------------------------------------------------------------------

    def error(self, code: str, message: str, request_id: str | None = None) -> None:
        self.hub.counters.errors[code] += 1
        self.push(frames.error(code, message, request_id))

    def push(self, frame: str, wire: bytes | None = None) -> None:
        """Send a frame, ``wire`` its encoding if a broadcast made it once for everyone;
        never blocks (the fan-out calls this for every client)."""
        if self.closing:
            return
        if self.principal is not None and self.principal.expired(time.time()):
            self._token_expired()  # its timer is late: nothing goes out after expiry
            return
        direct = self._direct
        if direct is not None and self._outbox is None:  # nothing waits ahead of it
            cap = self.hub.config.max_unsent_bytes
            if direct.unsent_bytes() > cap:
                self._too_slow(f"over {cap} bytes unread")
            elif direct.send_frame(wire if wire is not None else text_frame(frame)):
                self.hub.counters.frames_out += 1
            return
        if self._outbox is None:
            self._outbox = deque()
        elif len(self._outbox) >= self.hub.config.outbox_frames:
            self._too_slow(f"over {self.hub.config.outbox_frames} frames unread")
            return
        self._outbox.append(frame)
        self._start_flusher()

    def _too_slow(self, detail: str) -> None:
        """Cut off a client that does not read: what waits for it is dropped, a close
        frame follows what its socket holds, and a client that reads none of it within
        ``CLOSE_GRACE`` is dropped outright."""
        if self._outbox is not None:
            self._outbox.clear()
        self.hub.counters.refusals[p.TOO_SLOW] += 1
        self._close(p.CLOSE_TOO_SLOW, f"{p.TOO_SLOW}: {detail}")
        if self._direct is not None:
            asyncio.get_running_loop().call_later(CLOSE_GRACE, self._direct.abort)

    async def refuse(self, code: str, message: str, close_code: int) -> None:
        """Tell the client why in an error frame, close with ``close_code``, and wait
        (a little) until both went out."""
        self.error(code, message)
        self.hub.counters.refusals[code] += 1
        self._close(close_code, f"{code}: {message}")
        if self._flusher is not None:
            await asyncio.wait([self._flusher], timeout=CLOSE_GRACE)

    def _close(self, close_code: int, reason: str) -> None:
        if self.closing:
            return
        if self._outbox is None:
            self._outbox = deque()
        # A close reason is at most 123 bytes of UTF-8.
        reason = reason.encode()[:123].decode(errors="ignore")
        self._outbox.append({"type": "websocket.close", "code": close_code, "reason": reason})
        self.closing = True
        self._start_flusher()

    def _start_flusher(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        outbox = self._outbox
        try:
            while outbox:
                item = outbox.popleft()
                if isinstance(item, str):
                    await self._send({"type": "websocket.send", "text": item})
                    self.hub.counters.frames_out += 1
                else:
                    outbox.clear()
                    await self._send(item)
        except Exception:  # the client is gone (uvicorn raises ClientDisconnected)
            self.closing = True
        finally:
            self._flusher = None
            if not outbox:
                self._outbox = None


_HANDLERS: dict[type, Any] = {
    p.Submit: Connection._submit,
    p.Cancel: Connection._cancel,
    p.Status: Connection._status,
    p.Subscribe: Connection._subscribe,
    p.Unsubscribe: Connection._unsubscribe,
    p.Ping: Connection._ping,
    p.Auth: Connection._auth,
}


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _request_id(command: p.Command | None) -> str | None:
    return getattr(command, "request_id", None)
