"""WebSocket gateway helpers: a gateway served in the test's event loop on the stack's
servers, and real `websockets` clients that sign in to it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest_asyncio
from psycopg_pool import AsyncConnectionPool
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from events.envelope import Position
from projections.runtime import live_schema, read_checkpoint
from read_api.gateway.feed import SOURCES
from read_api.gateway.server import Gateway, Options, running
from tests.fix_chat import User
from tests.fix_stack import Stack

Frame = dict[str, Any]


@contextlib.asynccontextmanager
async def gateway_for(stack: Stack, **options: Any) -> AsyncIterator[Gateway]:
    """A gateway on a free port, recording acks through the stack's write API."""
    opts = Options(port=0, write_api_url=str(stack.write.base_url), **options)
    async with running(stack.settings, opts) as gw:
        yield gw


@pytest_asyncio.fixture(loop_scope="session")
async def gateway(stack: Stack) -> AsyncIterator[Gateway]:
    async with gateway_for(stack) as gw:
        yield gw


async def settled(pool: AsyncConnectionPool, seconds: float = 10.0) -> Position:
    """Wait until the read models the gateway reads have applied everything committed now
    (the store's head may briefly stop short of it while an older transaction is open)."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT txid, position FROM events ORDER BY txid DESC, position DESC LIMIT 1"
        )
        row = await cur.fetchone()
    head = Position(row[0], row[1]) if row else Position(0, 0)
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        async with pool.connection() as conn:
            reached = min([await read_checkpoint(conn, live_schema(n)) for n in SOURCES])
        if reached >= head:
            return head
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the read models did not catch up")
        await asyncio.sleep(0.02)


async def caught_up(gateway: Gateway, pool: AsyncConnectionPool) -> None:
    """Wait until the gateway has delivered everything stored now: then `subscribed`
    counts every frame written so far."""
    head = await settled(pool)
    assert await gateway.parts.hub.reach(head, 10), "the gateway did not catch up"


def token_of(user: User) -> str:
    return user.headers["Authorization"].removeprefix("Bearer ")


async def recv(ws: ClientConnection, seconds: float = 10.0, *, presence: bool = False) -> Frame:
    """The next frame, decoded; presence frames (which come whenever somebody of a
    watched channel connects) are skipped unless asked for."""
    async with asyncio.timeout(seconds):
        while True:
            frame: Frame = json.loads(await ws.recv())
            if presence or frame["type"] != "presence":
                return frame


async def signed_in(url: str, token: str, **options: Any) -> ClientConnection:
    """A connection that has sent its auth frame and had it accepted."""
    ws = await connect(url, compression=None, **options)
    await ws.send(json.dumps({"op": "auth", "token": token}))
    frame = await recv(ws)
    assert frame["type"] == "authenticated", frame
    return ws


async def subscribe(ws: ClientConnection, topic: str, after_seq: int | None = None) -> Frame:
    """Subscribe; the `subscribed` (or error) answer."""
    op: Frame = {"op": "subscribe", "topic": topic}
    if after_seq is not None:
        op["after_seq"] = after_seq
    await ws.send(json.dumps(op))
    return await recv(ws)


async def until(
    ws: ClientConnection,
    done: Callable[[Frame], bool],
    seconds: float = 10.0,
    *,
    presence: bool = False,
) -> list[Frame]:
    """Frames up to and including the first for which `done` holds (without presence
    frames unless asked)."""
    got: list[Frame] = []
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise AssertionError(f"no awaited frame within {seconds} s; got {got}")
        frame = await recv(ws, remaining, presence=presence)
        got.append(frame)
        if done(frame):
            return got


async def quiet(ws: ClientConnection, seconds: float) -> list[Frame]:
    """Whatever arrives within `seconds` but presence (nothing, hopefully)."""
    got: list[Frame] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                frame = json.loads(await ws.recv())
                if frame["type"] != "presence":
                    got.append(frame)
    return got


async def close_code(ws: ClientConnection, seconds: float = 10.0) -> int | None:
    """Read until the server closes; the close code it sent."""
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(seconds):
            while True:
                await ws.recv()
    return ws.close_code


def message_with(text: str) -> Callable[[Frame], bool]:
    return lambda f: f.get("name") == "message.sent" and f["data"]["text"] == text
