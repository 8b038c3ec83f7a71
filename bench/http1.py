"""A lean HTTP/1.1 keep-alive client for load generation: requests are bytes built in
advance, responses are parsed by httptools (C, the parser uvicorn itself uses; installed
with uvicorn[standard]), one request at a time per connection.

httpx costs some 300-500 us of CPU per request; on a 2-core machine that shares its CPU
with the servers under test, the load generator would then be the bottleneck and the
figure would measure httpx. This costs a few tens of us. It is not a general client: no
redirects, no TLS, no pipelining, no retries; a status the caller did not expect is the
caller's to reject, and any transport or protocol error is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import NamedTuple, cast

import httptools


class HttpError(Exception):
    """The connection broke, or the server's bytes were not HTTP."""


class Response(NamedTuple):
    status: int
    body: bytes


def request_bytes(
    method: str, target: str, host: str, headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> bytes:  # fmt: skip
    """One complete request, ready to write: request line, Host, headers, Content-Length
    (for a body, with Content-Type: application/json), body."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


class Connection(asyncio.Protocol):
    """One keep-alive connection; `request` sends a prepared request and returns the
    whole response (the body read to its end, by Content-Length or chunks)."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self._waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.idle_since = 0.0  # monotonic: when it last went back to its pool

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        """A new connection (asyncio and uvloop set TCP_NODELAY on it)."""
        _, protocol = await asyncio.get_running_loop().create_connection(cls, host, port)
        return protocol

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(HttpError(f"unparsable response: {e}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(HttpError(f"connection lost: {exc or 'closed by the server'}"))

    # httptools callbacks

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        body = b"".join(self._body)
        self._body.clear()
        if not self._parser.should_keep_alive():
            self.close()
        if waiter is None:
            self._fail(HttpError("a response nobody asked for"))
        elif not waiter.done():
            waiter.set_result(Response(self._parser.get_status_code(), body))

    # use

    async def request(self, data: bytes) -> Response:
        """Write a prepared request and wait for its whole response."""
        if self.closed or self._transport is None:
            raise HttpError("the connection is closed")
        if self._waiter is not None:
            raise HttpError("one request at a time on a connection")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(data)
        return await self._waiter

    def close(self) -> None:
        """Close the connection; a request in flight fails."""
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def _fail(self, error: HttpError) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)


# uvicorn closes a keep-alive connection after 5 s idle. A request sent as it does so is
# reset (a full run lost gateway_latency that way): spares idle this long are not reused.
IDLE_EXPIRY_S = 4.0


class Pool:
    """Keep-alive connections to one server, opened as concurrency needs them (at most
    `limit`; beyond it callers queue). The most recently used is reused first, so the
    spares left idle long enough for the server to close them are the ones seldom needed."""

    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port, self.limit = host, port, limit
        self._idle: list[Connection] = []
        self._opened = 0
        self._freed = asyncio.Condition()
        self.peak = 0

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A connection for one request-response; a broken one is not reused."""
        conn = await self._acquire()
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        finally:
            await self._release(conn)

    async def _acquire(self) -> Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and time.monotonic() - conn.idle_since < IDLE_EXPIRY_S:
                return conn
            conn.close()  # closed, or about to be by the server: a request on it may be reset
            self._opened -= 1
        if self._opened < self.limit:
            self._opened += 1
            self.peak = max(self.peak, self._opened)
            try:
                return await Connection.open(self.host, self.port)
            except BaseException:
                self._opened -= 1
                raise
        async with self._freed:
            await self._freed.wait_for(lambda: bool(self._idle) or self._opened < self.limit)
        return await self._acquire()

    async def _release(self, conn: Connection) -> None:
        if conn.closed:
            self._opened -= 1
        else:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        async with self._freed:
            self._freed.notify()

    def close(self) -> None:
        """Close every idle connection."""
        for conn in self._idle:
            conn.close()
        self._idle.clear()


async def expect(conn: Connection, data: bytes, status: int, what: Callable[[], str]) -> bytes:
    """The body of a response that must have `status`; HttpError naming `what()` otherwise."""
    response = await conn.request(data)
    if response.status != status:
        raise HttpError(f"{what()}: {response.status} {response.body[:300]!r}")
    return response.body
