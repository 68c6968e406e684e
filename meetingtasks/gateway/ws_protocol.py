"""uvicorn's wsproto WebSocket protocol, plus a direct send for the fan-out.

Through ASGI, every frame to every client is a ``websocket.send`` coroutine: a task to
run it, wsproto encoding the frame again, a wait on the transport's flow control. For a
meeting event going to 10,000 clients that is about 35 µs a client. ``DirectSend``
writes a frame already encoded (``text_frame``, once per broadcast) straight into the
connection's transport: no coroutine, no task, no encoding per client. A client that
does not read is not waited for: its unsent bytes grow in its transport, and the
connection cuts it off past its cap (``connection.py``).

Everything else stays uvicorn's: the handshake, the close handshake (the gateway's close
frames still go through ASGI, so wsproto knows the connection is closing), keepalive
pings, reads. Writing whole frames beside wsproto is safe because wsproto keeps no state
between whole messages, and per-message compression, which would, is refused here.

The uvicorn internals relied on (``tests/test_private_api.py`` checks them):
``WSProtocol.handle_connect`` (it builds ``self.scope``), and the instance attributes
``transport``, ``handshake_complete`` and ``close_sent``.
"""

from __future__ import annotations

from typing import Any, Protocol

from uvicorn.protocols.websockets.wsproto_impl import WSProtocol
from websockets.frames import Frame, Opcode

from meetingtasks.errors import ConfigurationError

#: The ASGI scope extension under which each WebSocket offers its ``DirectSend``.
DIRECT_SEND = "meetingtasks.direct_send"


class DirectSend(Protocol):
    """What a connection may do to its socket without going through ASGI."""

    def send_frame(self, frame: bytes) -> bool:
        """Write an encoded frame now; False (nothing written) once the socket closes."""
        ...

    def unsent_bytes(self) -> int:
        """Bytes written that the socket has not taken yet (the client is not reading)."""
        ...

    def abort(self) -> None:
        """Drop the connection now, unsent bytes and all (a client that never reads)."""
        ...


def text_frame(text: str) -> bytes:
    """One unmasked, uncompressed text frame, as a server sends it (RFC 6455 5.2)."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])


class DirectSendWSProtocol(WSProtocol):
    """uvicorn's ``ws="wsproto"`` protocol, whose scope carries a ``DirectSend``."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        if config.ws_per_message_deflate:
            raise ConfigurationError(
                "the gateway writes uncompressed frames beside wsproto: serve it with "
                "ws_per_message_deflate=False"
            )
        super().__init__(config, *args, **kwargs)

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # The application's task is created but has not run: it will find this.
        self.scope["extensions"][DIRECT_SEND] = self  # type: ignore[assignment]

    def send_frame(self, frame: bytes) -> bool:
        if not self.handshake_complete or self.close_sent or self.transport.is_closing():
            return False
        self.transport.write(frame)
        return True

    def unsent_bytes(self) -> int:
        return int(self.transport.get_write_buffer_size())

    def abort(self) -> None:
        self.transport.abort()
