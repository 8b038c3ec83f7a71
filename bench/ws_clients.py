"""A lean WebSocket load generator for the gateway workloads, run as a process of its own
(`python -m bench.ws_clients`, configured by one JSON object on stdin).

It holds thousands of connections in one process on uvloop: each performs the RFC 6455
opening handshake, sends its (masked) auth and subscribe frames, answers pings, and then
only finds frame boundaries in what it reads, counting event frames (and, when asked,
noting when each message's frame first arrived). A full client library costs tens of
microseconds per received frame in Python: on a 2-core machine shared with the gateway
under test, it would be the load generator that was measured.

Protocol with the harness (JSON lines): it prints `{"ready": ...}` once every connection
is subscribed; it then waits for a line on stdin (`{"stop": true}`, or for `fanout`,
`{"expect": n}` to stop as soon as n event frames have arrived in all, or at a deadline)
and prints `{"done": ...}` with what it saw.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sys
import time
from typing import Any, cast

_HANDSHAKE_CONCURRENCY = 256
_EVENT_PREFIX = b'{"type":"event"'
_MESSAGE_ID = b'"message_id":"'


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 5.3)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        header = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big") if n else 0
    masked = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big") if n else b""
    return header + mask + masked


class Stats:
    """What all connections of this process saw."""

    def __init__(self, record_messages: bool) -> None:
        self.events = 0
        self.first: float | None = None
        self.last = 0.0
        self.record = record_messages
        self.seen: dict[str, float] = {}  # message id -> first arrival (time.monotonic)
        self.closed: dict[int, int] = {}  # close code -> connections
        self.target: int | None = None
        self.reached = asyncio.Event()


class Client(asyncio.Protocol):
    """One connection: handshake, auth, subscribe, then count."""

    def __init__(self, token: str, topic: str, host: str, stats: Stats) -> None:
        self.token = token
        self.topic = topic
        self.host = host
        self.stats = stats
        self.buffer = b""
        self.upgraded = False
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            f"GET /v1/ws HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"connection lost: {exc}"))

    def send(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.write(_client_frame(opcode, payload))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(ConnectionError(buffer[:end].decode("latin-1")))
                return
            self.upgraded = True
            buffer = buffer[end + 4 :]
            self.send(0x1, json.dumps({"op": "auth", "token": self.token}).encode())
        stats = self.stats
        i, n = 0, len(buffer)
        while n - i >= 2:
            opcode, length = buffer[i] & 0x0F, buffer[i + 1] & 0x7F
            start = i + 2
            if length == 126:
                if n - i < 4:
                    break
                length, start = int.from_bytes(buffer[i + 2 : i + 4], "big"), i + 4
            elif length == 127:
                if n - i < 10:
                    break
                length, start = int.from_bytes(buffer[i + 2 : i + 10], "big"), i + 10
            end = start + length
            if end > n:
                break
            if opcode == 0x1:
                if buffer.startswith(_EVENT_PREFIX, start):
                    stats.events += 1
                    now = time.monotonic()
                    if stats.first is None:
                        stats.first = now
                    stats.last = now
                    if stats.record:
                        at = buffer.find(_MESSAGE_ID, start, end)
                        if at >= 0:
                            mid = buffer[at + 14 : at + 50].decode()
                            stats.seen.setdefault(mid, now)
                    if stats.target is not None and stats.events >= stats.target:
                        stats.reached.set()
                elif not self.ready.done():
                    self._handshake_reply(buffer[start:end])
            elif opcode == 0x9:  # ping: pong with the same payload
                self.send(0xA, buffer[start:end])
            elif opcode == 0x8:
                code = int.from_bytes(buffer[start : start + 2], "big") if length >= 2 else 1005
                stats.closed[code] = stats.closed.get(code, 0) + 1
                if not self.ready.done():
                    self.ready.set_exception(ConnectionError(f"closed {code}"))
            i = end
        self.buffer = buffer[i:]

    def _handshake_reply(self, payload: bytes) -> None:
        frame: dict[str, Any] = json.loads(payload)
        if frame["type"] == "authenticated":
            op = {"op": "subscribe", "topic": self.topic}
            self.send(0x1, json.dumps(op).encode())
        elif frame["type"] == "subscribed":
            self.ready.set_result(None)
        elif frame["type"] == "error":
            self.ready.set_exception(ConnectionError(f"refused: {frame}"))


async def main() -> None:
    config = json.loads(sys.stdin.readline())
    host, port = config["host"], config["port"]
    stats = Stats(config.get("record_messages", False))
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(_HANDSHAKE_CONCURRENCY)
    clients: list[Client] = []

    async def open_one(token: str, topic: str) -> None:
        async with limit:
            _, client = await loop.create_connection(
                lambda: Client(token, topic, f"{host}:{port}", stats), host, port
            )
            clients.append(client)
            await client.ready

    started = time.monotonic()
    await asyncio.gather(*(open_one(t, topic) for t, topic in config["connections"]))
    print(json.dumps({"ready": len(clients), "seconds": round(time.monotonic() - started, 2)}),
          flush=True)  # fmt: skip

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    command = json.loads(await reader.readline())
    if "expect" in command:
        stats.target = command["expect"]
        if stats.events < stats.target:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stats.reached.wait(), command.get("seconds", 60))
    elif "after" in command:
        await asyncio.sleep(command["after"])
    print(json.dumps({"done": {"events": stats.events, "first": stats.first, "last": stats.last,
                               "closed": stats.closed, "seen": stats.seen}}), flush=True)  # fmt: skip
    for client in clients:
        if client.transport is not None:
            client.transport.close()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
