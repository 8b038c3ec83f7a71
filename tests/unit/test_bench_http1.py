"""The load generator's keep-alive pool against a real socket server."""

from __future__ import annotations

import asyncio

import pytest

from bench import http1
from bench.http1 import Pool, expect, request_bytes

pytestmark = pytest.mark.asyncio(loop_scope="function")


async def test_a_connection_idle_near_the_servers_timeout_is_not_reused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A spare idle for IDLE_EXPIRY_S is closed and replaced, not sent a request the server
    may be closing it under; one used just now is reused."""
    opened: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        opened.append(writer)
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setattr(http1, "IDLE_EXPIRY_S", 0.2)
    pool = Pool("127.0.0.1", port, 4)
    get = request_bytes("GET", "/", "127.0.0.1")
    try:
        for _ in range(2):
            async with pool.connection() as conn:
                assert await expect(conn, get, 200, lambda: "get") == b"ok"
        assert len(opened) == 1  # reused while fresh
        await asyncio.sleep(0.3)
        async with pool.connection() as conn:
            assert await expect(conn, get, 200, lambda: "get") == b"ok"
        assert len(opened) == 2  # the stale one was retired, a new one opened
    finally:
        pool.close()
        server.close()
        for writer in opened:
            writer.close()
