"""Client connections to an inference node: they move bytes, with a timeout on every wait.

The address says which transport:

    tcp://HOST:PORT, ipc://PATH   ZMQ: a DEALER socket to the node's ROUTER, one JSON
                                  object per frame (our reference node, the default)
    tcp+json://HOST[:PORT]        plain TCP, one JSON object per line: our node's
                                  --tcp-port, or StackFlow's unit manager (port 10001 when
                                  none is given), which only the StackFlow bridge
                                  (``node/stackflow/channel.py``) should talk to: it
                                  breaks under several clients

Failing to reach a node, losing it, or hearing nothing from it in time is NodeUnavailable
(retryable); bytes that cannot be a message are InferenceError. A dead node never hangs
the caller: over TCP its connection breaks, over ZMQ the socket loses its peer, and a
silent node runs into the timeout of each wait.
"""

from __future__ import annotations

import math
import socket
import time
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import zmq

from meetingtasks.errors import ConfigurationError, InferenceError, NodeUnavailable
from meetingtasks.llm.protocol import MAX_MESSAGE_BYTES

TCP_JSON_SCHEME = "tcp+json"
STACKFLOW_PORT = 10001
#: How often a ZMQ wait checks that its peer is still connected, in seconds.
_LIVENESS_INTERVAL = 0.2


@dataclass(frozen=True)
class Address:
    url: str
    transport: str  # "zmq" or "tcp"
    host: str = ""
    port: int = 0


def parse_address(url: str) -> Address:
    """An Address from a node URL; ConfigurationError names the accepted forms."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme == "ipc" and parts.netloc + parts.path:
        return Address(url, "zmq")
    if parts.scheme == "tcp" and parts.hostname and port:
        return Address(url, "zmq", parts.hostname, port)
    if parts.scheme == TCP_JSON_SCHEME and parts.hostname and not parts.path.strip("/"):
        return Address(url, "tcp", parts.hostname, port or STACKFLOW_PORT)
    raise ConfigurationError(
        f"inference node address {url!r} not understood: use tcp://HOST:PORT or "
        f"ipc://PATH for ZMQ, or {TCP_JSON_SCHEME}://HOST[:PORT] for newline-delimited JSON"
    )


class Connection(Protocol):
    address: str

    def send(self, message: bytes, timeout: float) -> None: ...

    def recv(self, timeout: float) -> bytes: ...

    def alive(self) -> bool:
        """Still connected, with nothing unexpected waiting: fit to reuse."""
        ...

    def close(self, flush: float = 0.0) -> None:
        """Close; messages sent but still queued go out for up to ``flush`` seconds."""
        ...


def connect(address: Address, timeout: float) -> Connection:
    """A connection to the node, or NodeUnavailable within ``timeout`` seconds."""
    if address.transport == "zmq":
        return ZmqConnection(address, timeout)
    return TcpConnection(address, timeout)


class NodeSilent(NodeUnavailable):
    """Nothing came from the node within a wait; the connection itself may be fine."""


def _silent(url: str, timeout: float) -> NodeSilent:
    return NodeSilent(
        f"inference node {url} sent nothing for {timeout:.3g}s: it is stuck, overloaded "
        "or gone; the task is retried on another node or later"
    )


class ZmqConnection:
    """A DEALER socket of the process-wide ZMQ context, used by one thread at a time.

    ``immediate`` keeps messages from queueing for a peer that is not connected, which
    also tells us when the peer is gone: the socket stops being writable.
    """

    def __init__(self, address: Address, timeout: float) -> None:
        self.address = address.url
        self._socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.IMMEDIATE, 1)
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        try:
            self._socket.connect(address.url)
        except zmq.ZMQError as exc:
            self.close()
            raise NodeUnavailable(f"cannot connect to inference node {address.url}: {exc}") from exc
        if not self._socket.poll(_ms(timeout), zmq.POLLOUT):
            self.close()
            raise NodeUnavailable(
                f"no inference node answers at {address.url} (no ZMQ connection within "
                f"{timeout:.3g}s): start one with 'meetingtasks ai-node --bind {address.url}' "
                "or remove the address"
            )

    def send(self, message: bytes, timeout: float) -> None:
        try:
            self._socket.send(message, zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            raise NodeUnavailable(f"lost the connection to inference node {self.address}") from exc

    def recv(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if self._socket.poll(_ms(min(remaining, _LIVENESS_INTERVAL)), zmq.POLLIN):
                frames = self._socket.recv_multipart(zmq.NOBLOCK)
                if len(frames) != 1:
                    raise InferenceError(
                        f"inference node {self.address} sent a message of {len(frames)} "
                        "frames; the protocol has one JSON object per frame"
                    )
                return frames[0]
            if not self._events() & zmq.POLLOUT:
                raise NodeUnavailable(
                    f"lost the connection to inference node {self.address} while waiting "
                    "for its reply: it stopped or crashed"
                )
        raise _silent(self.address, timeout)

    def alive(self) -> bool:
        events = self._events()
        return bool(events & zmq.POLLOUT) and not events & zmq.POLLIN

    def _events(self) -> int:
        return int(self._socket.getsockopt(zmq.EVENTS))

    def close(self, flush: float = 0.0) -> None:
        self._socket.close(linger=_ms(flush))


class TcpConnection:
    """A TCP socket carrying one JSON object per line."""

    def __init__(self, address: Address, timeout: float) -> None:
        self.address = address.url
        self._buffer = bytearray()
        try:
            self._socket = socket.create_connection((address.host, address.port), timeout)
        except OSError as exc:
            raise NodeUnavailable(
                f"cannot connect to inference node {address.url}: {exc}; is it running?"
            ) from exc

    def send(self, message: bytes, timeout: float) -> None:
        self._socket.settimeout(max(timeout, 0.001))
        try:
            self._socket.sendall(message + b"\n")
        except OSError as exc:
            raise NodeUnavailable(
                f"lost the connection to inference node {self.address}: {exc}"
            ) from exc

    def recv(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end]).strip()
                del self._buffer[: end + 1]
                if line:
                    return line
                continue
            if len(self._buffer) > MAX_MESSAGE_BYTES:
                raise InferenceError(
                    f"inference node {self.address} sent over {MAX_MESSAGE_BYTES} bytes "
                    "without a newline: it does not speak newline-delimited JSON"
                )
            self._buffer += self._read(deadline, timeout)

    def _read(self, deadline: float, timeout: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _silent(self.address, timeout)
        self._socket.settimeout(remaining)
        try:
            chunk = self._socket.recv(65536)
        except TimeoutError:
            raise _silent(self.address, timeout) from None
        except OSError as exc:
            raise NodeUnavailable(
                f"lost the connection to inference node {self.address}: {exc}"
            ) from exc
        if not chunk:
            raise NodeUnavailable(
                f"inference node {self.address} closed the connection before its reply "
                "was complete: it stopped or crashed"
            )
        return chunk

    def alive(self) -> bool:
        if self._buffer:
            return False
        self._socket.settimeout(0)
        try:
            self._socket.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True  # nothing to read: open and quiet
        except OSError:
            return False
        return False  # closed by the node (b"") or bytes nobody asked for

    def close(self, flush: float = 0.0) -> None:
        self._socket.close()  # what send() wrote is in the kernel's buffer: it goes out

    def close_and_wait(self, timeout: float) -> None:
        """Close our side and wait (up to ``timeout``) for the node to close its own, so
        it has seen the end before a new connection of ours sends; what it still sends
        is dropped."""
        deadline = time.monotonic() + timeout
        try:
            self._socket.shutdown(socket.SHUT_WR)
            while (remaining := deadline - time.monotonic()) > 0:
                self._socket.settimeout(remaining)
                if not self._socket.recv(65536):
                    break
        except OSError:
            pass  # reset, or the wait ran out: closed either way
        finally:
            self._socket.close()


def _ms(seconds: float) -> int:
    return max(0, math.ceil(seconds * 1000))
