"""A process of WebSocket clients for the broadcast figures: ``python -m bench.ws_clients``.

The gateway bench starts several of these, so that reading thousands of frames is
spread over processes as real clients would be, not one event loop's queue. Each holds
``n`` connections, each subscribed to one meeting channel, and records when each
event's frame arrived (``time.monotonic()``: one clock for every process of the machine).

The handshake and the subscribe go through the websockets library's sans-I/O client
(no task per connection). Once subscribed, a connection reads the server's frames with
``FrameReader``, cheaper than the library's parser, on uvloop when it is installed (the
dev extra): about 14 µs of client CPU a frame, against 35 on asyncio's own loop, where
the clients share the gateway's two CPUs and so slowed the very broadcast they time.
The reader takes what a server sends (unmasked frames, no extensions) and answers
pings, as a client must.

Commands, one per line on stdin, each answered by one JSON line on stdout:
``open`` (connect and subscribe; ``{"opened", "failures"}``), ``slow K`` (K connections
stop reading: their frames pile up in the gateway), ``report`` (``{"arrivals": {seq:
[times of the reading connections]}}``, then forgotten), ``exit``.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections import Counter, defaultdict
from typing import Any, cast
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

#: Concurrent handshakes while opening.
OPEN_CONCURRENCY = 64
_SEQ = re.compile(rb'"bench_seq":\s*(\d+)')


class FrameReader:
    """The server's frames from a byte stream: (opcode, payload) of each whole one."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buffer = self._buffer + data if self._buffer else data
        frames, at = [], 0
        while len(buffer) - at >= 2:
            opcode, length = buffer[at] & 0x0F, buffer[at + 1] & 0x7F
            start = at + 2
            if length == 126:
                length, start = int.from_bytes(buffer[at + 2 : at + 4], "big"), at + 4
            elif length == 127:
                length, start = int.from_bytes(buffer[at + 2 : at + 10], "big"), at + 10
            if start > len(buffer) or len(buffer) - start < length:
                break
            frames.append((opcode, buffer[start : start + length]))
            at = start + length
        self._buffer = buffer[at:]
        return frames


def pong(payload: bytes) -> bytes:
    """A client's pong: masked, with a key of zeros (any key is valid; XOR with it is
    the payload itself)."""
    return bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


class _Client(asyncio.Protocol):
    """One WebSocket: the handshake, a subscribe, then the arrival time of each event."""

    def __init__(self, url: str, channel: str, arrivals: defaultdict[int, list[float]]) -> None:
        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        self.channel = channel
        self.arrivals = arrivals
        self.transport: asyncio.Transport | None = None
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.reading = True
        #: Set once subscribed: from then on frames are read with it.
        self.reader: FrameReader | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.protocol.send_request(self.protocol.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if self.reader is not None:
            for opcode, payload in self.reader.feed(data):
                if opcode == Opcode.TEXT:
                    self._on_text(payload, now)
                elif opcode == Opcode.PING and self.transport is not None:
                    self.transport.write(pong(payload))
            return
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                if event.status_code != 101:
                    self._fail(f"handshake answered {event.status_code}")
                    return
                self.protocol.send_text(
                    json.dumps({"op": "subscribe", "channel": self.channel}).encode()
                )
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self._on_text(bytes(event.data), now)
        self._flush()

    def _on_text(self, data: bytes, now: float) -> None:
        if data.startswith(b'{"op":"event"'):
            found = _SEQ.search(data)
            if found and self.reading:
                self.arrivals[int(found.group(1))].append(now)
        elif b'"subscribed"' in data and not self.subscribed.done():
            self.subscribed.set_result(None)
            self.reader = FrameReader()  # the server sends nothing before this answer
        elif b'"op":"error"' in data and not self.subscribed.done():
            self._fail(data.decode(errors="replace")[:200])

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection lost: {exc}")

    def stop_reading(self) -> None:
        self.reading = False
        if self.transport is not None:
            self.transport.pause_reading()

    def _fail(self, why: str) -> None:
        if not self.subscribed.done():
            self.subscribed.set_exception(ConnectionError(why))

    def _flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            for chunk in self.protocol.data_to_send():
                if chunk:
                    self.transport.write(chunk)


async def _open(url: str, channel: str, n: int, arrivals: Any) -> tuple[list[_Client], Counter]:
    loop = asyncio.get_running_loop()
    parts = urlsplit(url)
    clients: list[_Client] = []
    failures: Counter[str] = Counter()
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def one() -> None:
        async with gate:
            try:
                _, client = await loop.create_connection(
                    lambda: _Client(url, channel, arrivals),
                    parts.hostname or "127.0.0.1",
                    parts.port or 80,
                )
                await asyncio.wait_for(client.subscribed, 60)
                clients.append(client)
            except Exception as exc:
                failures[f"{type(exc).__name__}: {exc}"[:200]] += 1

    await asyncio.gather(*(one() for _ in range(n)))
    return clients, failures


async def main(url: str, channel: str, n: int) -> None:
    arrivals: defaultdict[int, list[float]] = defaultdict(list)
    clients: list[_Client] = []
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def answer(value: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(value) + "\n")
        sys.stdout.flush()

    while line := (await reader.readline()).decode().split():
        command = line[0]
        if command == "open":
            clients, failures = await _open(url, channel, n, arrivals)
            answer({"opened": len(clients), "failures": dict(failures)})
        elif command == "slow":
            for client in clients[: int(line[1])]:
                client.stop_reading()
            answer({"slow": int(line[1])})
        elif command == "report":
            answer({"arrivals": arrivals})
            arrivals.clear()
        elif command == "exit":
            break
    for client in clients:
        if client.transport is not None:
            client.transport.abort()


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    else:
        uvloop.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
