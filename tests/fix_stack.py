"""A whole Hubbub in the test's event loop: the write and read APIs served by uvicorn on
free ports (real HTTP), the relay and the projector as tasks, over real servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest_asyncio
import uvicorn
from psycopg_pool import AsyncConnectionPool

from events.envelope import ORIGIN, Position
from infra.bootstrap import create_read_api as read_app
from infra.db import make_pool
from infra.one_write import OneWriteHttpTools
from infra.relay import Relay, connect_jetstream
from infra.settings import Settings
from projections.runner import ProjectionRunner
from write_api.app import create_app as write_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Stack:
    settings: Settings
    write: httpx.AsyncClient
    read: httpx.AsyncClient
    runner: ProjectionRunner


@contextlib.asynccontextmanager
async def serve(app: object) -> AsyncIterator[str]:
    port = free_port()
    # With the protocol `hubbub write-api` and `read-api` serve with (infra.cli)
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host="127.0.0.1", port=port, log_config=None, lifespan="on", http=OneWriteHttpTools,
    )  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def running_stack(settings: Settings, *, relay: bool = True) -> AsyncIterator[Stack]:
    assert settings.database_url
    stop = asyncio.Event()
    pool = make_pool(settings.database_url, min_size=1, max_size=12, name="test-workers")
    await pool.open()
    runner = ProjectionRunner(settings, pool, quiet_s=0.2)
    tasks = [asyncio.create_task(runner.run(stop))]
    nc = await connect_jetstream(settings, stop) if relay else None
    if nc is not None:
        tasks.append(asyncio.create_task(Relay(settings, pool, nc.jetstream()).run(stop)))
    await asyncio.wait_for(runner.ready.wait(), 30)
    try:
        async with (
            serve(write_app(settings)) as write_url,
            serve(read_app(settings)) as read_url,
            httpx.AsyncClient(base_url=write_url, timeout=15) as write,
            httpx.AsyncClient(base_url=read_url, timeout=15) as read,
        ):
            yield Stack(settings, write, read, runner)
    finally:
        stop.set()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(t, 10)
        if nc is not None:
            await nc.close()
        await pool.close()


@pytest_asyncio.fixture(loop_scope="session")
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    async with running_stack(settings) as s:
        yield s


@dataclass
class Ran:
    exit_code: int
    stdout: str
    stderr: str


async def hubbub(stack: Stack, *args: str) -> Ran:
    """Run the real `hubbub` command line against the stack's servers."""
    env = {**os.environ, **stack.settings.to_env()}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "infra.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


async def relay_caught_up(pool: AsyncConnectionPool, seconds: float = 5.0) -> None:
    """Wait until the relay has published (and anchored) everything in the store now."""
    # The last event committed, commit-safe or not yet: EventStore.head() stops below the
    # oldest running transaction, so while some other one runs it can name a position the
    # relay has long passed, and this would return before the relay saw the newest event.
    async with pool.connection() as conn:
        last = await (
            await conn.execute(
                "SELECT txid, position FROM events ORDER BY txid DESC, position DESC LIMIT 1"
            )
        ).fetchone()
    head = Position(last[0], last[1]) if last else ORIGIN
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        async with pool.connection() as conn:
            row = await (
                await conn.execute("SELECT txid, position FROM relay_checkpoint")
            ).fetchone()
        if row and (row[0], row[1]) >= head:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the relay did not publish the store's events in time")
        await asyncio.sleep(0.01)
