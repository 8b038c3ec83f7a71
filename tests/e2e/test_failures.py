"""Failures of real processes: a relay or projector SIGKILLed mid-work, NATS stopped while
writes go on. Nothing is lost, nothing is doubled, every read model converges."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from psycopg_pool import AsyncConnectionPool

from events.envelope import Position
from events.user import user_stream
from infra.audit import verify_all
from infra.embedded import start_nats
from infra.processes import stop_processes
from infra.settings import Settings
from infra.store import NO_STREAM, EventStore, NewEvent, StreamAppend
from projections import users
from projections.ops import rebuild_projection
from projections.runtime import live_schema, read_checkpoint
from tests.fix_events import new_event, user_registered

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]


def env_of(settings: Settings) -> dict[str, str]:
    return {**os.environ, **replace(settings, log_level="WARNING").to_env()}


class Part:
    """One `hubbub <part>` process that a test can kill and start again."""

    def __init__(self, part: str, settings: Settings) -> None:
        self.argv = [sys.executable, "-m", "infra.cli", part]
        self.env = env_of(settings)
        self.log = settings.data_dir / f"{part}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=out)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            stop_processes([self.proc])


@contextlib.contextmanager
def parts(settings: Settings, *names: str) -> Iterator[dict[str, Part]]:
    running = {name: Part(name, settings) for name in names}
    for part in running.values():
        part.start()
    try:
        yield running
    finally:
        for part in running.values():
            part.stop()


def user_event(uid: str) -> NewEvent:
    return new_event(user_registered(uid))


async def write_users(store: EventStore, n: int, *, pause: float = 0.0) -> None:
    for _ in range(n):
        uid = str(uuid.uuid4())
        await store.append([StreamAppend(user_stream(uid), NO_STREAM, [user_event(uid)])])
        if pause:
            await asyncio.sleep(pause)


async def wait_until(predicate, seconds: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + seconds
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("did not converge in time")
        await asyncio.sleep(0.05)


async def relay_position(pool: AsyncConnectionPool) -> Position:
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT txid, position FROM relay_checkpoint")).fetchone()
    assert row is not None
    return Position(row[0], row[1])


async def projector_position(pool: AsyncConnectionPool) -> Position:
    async with pool.connection() as conn:
        try:
            return await read_checkpoint(conn, live_schema(users.name))
        except Exception:
            return Position(0, 0)


async def user_rows(pool: AsyncConnectionPool) -> list[tuple[object, ...]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT user_id, username, display_name, registered_at, stream_version FROM rm_users.users ORDER BY user_id"
        )
        return list(await cur.fetchall())


async def published_ids(settings: Settings) -> list[str]:
    """Every message in the test's JetStream stream, by Nats-Msg-Id."""
    assert settings.nats_url
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(
            settings.subject_filter, stream=settings.nats_stream,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
        )  # fmt: skip
        ids: list[str] = []
        while True:
            try:
                msgs = await sub.fetch(1000, timeout=1.0)
            except TimeoutError:
                return ids
            ids += [(m.headers or {})["Nats-Msg-Id"] for m in msgs]
    finally:
        await nc.close()


async def all_event_ids(pool: AsyncConnectionPool) -> list[str]:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT event_id::text FROM events")
        return [r[0] for r in await cur.fetchall()]


async def test_relay_killed_repeatedly_publishes_everything_once(
    settings: Settings, pool: AsyncConnectionPool
) -> None:
    store = EventStore(pool)
    rng = random.Random(11)
    with parts(settings, "relay") as running:
        writer = asyncio.create_task(write_users(store, 1500))
        for _ in range(5):
            await asyncio.sleep(rng.uniform(0.2, 0.6))
            running["relay"].kill()  # wherever it is: mid-publish, between PubAck and checkpoint
            running["relay"].start()
        await writer
        head = await store.head()
        await wait_until(lambda: _at_least(relay_position(pool), head))
    ids = await published_ids(settings)
    assert len(ids) == len(set(ids)), "a duplicate reached the stream"
    assert sorted(ids) == sorted(await all_event_ids(pool))
    verdict = await verify_all(pool)
    assert verdict.ok and verdict.unanchored == 0, verdict


async def _at_least(position: object, target: Position) -> bool:
    return await position >= target  # type: ignore[misc,no-any-return]


async def test_projector_killed_mid_batch_equals_a_fresh_rebuild(
    settings: Settings, pool: AsyncConnectionPool
) -> None:
    store = EventStore(pool)
    rng = random.Random(12)
    with parts(settings, "relay", "projector") as running:
        writer = asyncio.create_task(write_users(store, 2000))
        for _ in range(5):
            await asyncio.sleep(rng.uniform(0.2, 0.6))
            running["projector"].kill()
            running["projector"].start()
        await writer
        head = await store.head()
        await wait_until(lambda: _at_least(projector_position(pool), head))
        live = await user_rows(pool)
    assert len(live) == 2000
    await rebuild_projection(pool, users)
    assert await user_rows(pool) == live


async def test_nats_stopped_while_writes_go_on_projections_still_converge(
    settings: Settings, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    store = EventStore(pool)
    server = start_nats(tmp_path / "own-nats")
    port = server.port
    mine = Settings(**{**settings.__dict__, "nats_url": server.url})
    try:
        with parts(mine, "relay", "projector"):
            await write_users(store, 200)
            head = await store.head()
            await wait_until(lambda: _at_least(projector_position(pool), head))
            server.stop()  # NATS goes away; writes go on
            await write_users(store, 300, pause=0.001)
            head = await store.head()
            await wait_until(lambda: _at_least(projector_position(pool), head))
            assert len(await user_rows(pool)) == 500
            server = start_nats(tmp_path / "own-nats", port=port)  # and comes back
            await write_users(store, 200)
            head = await store.head()
            await wait_until(lambda: _at_least(projector_position(pool), head))
            await wait_until(lambda: _at_least(relay_position(pool), head))
        assert len(await user_rows(pool)) == 700
    finally:
        server.stop()
