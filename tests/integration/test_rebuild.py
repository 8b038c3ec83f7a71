"""Blue-green rebuilds: resumable, and readers never see an error or an empty answer."""

from __future__ import annotations

import asyncio
import random

import pytest
from psycopg_pool import AsyncConnectionPool

from events.envelope import Metadata
from infra.db import make_pool
from infra.store import EventStore
from projections import users
from projections.ops import RebuildBusy, projection_status, rebuild_projection
from projections.users import name as users_name
from tests.fix_events import register_users
from tests.fix_stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")
META = Metadata(correlation_id="test")


async def add_users(store: EventStore, n: int) -> list[str]:
    return await register_users(store, n)


async def rows(pool: AsyncConnectionPool) -> set[str]:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT user_id::text FROM rm_users.users")
        return {r[0] for r in await cur.fetchall()}


async def test_rebuild_resumes_and_swaps_without_reader_errors(stack: Stack) -> None:
    assert stack.settings.database_url
    pool = make_pool(stack.settings.database_url, min_size=1, max_size=6)
    await pool.open()
    store = EventStore(pool)
    try:
        ids = await add_users(store, 120)
        head = (await store.head()).token()
        assert (
            await stack.read.get(f"/v1/users/{ids[-1]}", headers={"X-Min-Position": head})
        ).status_code == 200

        reading = True
        failures: list[str] = []
        reads = 0

        async def reader() -> None:
            nonlocal reads
            while reading:
                r = await stack.read.get(f"/v1/users/{random.choice(ids)}")
                reads += 1
                if r.status_code != 200 or not r.json().get("username"):
                    failures.append(f"{r.status_code} {r.text}")

        readers = [asyncio.create_task(reader()) for _ in range(4)]
        # A rebuild that dies part-way (stop_after) leaves its schema; live reads go on.
        partial = await rebuild_projection(pool, users, batch=25, stop_after=50)
        assert partial.events == 50 and not partial.resumed
        assert {s.name: s.status for s in await projection_status(pool, store)}[
            users_name
        ] == "rebuilding"
        more = await add_users(store, 30)  # written while rebuilding
        done = await rebuild_projection(pool, users, batch=25)
        assert done.resumed and done.events >= 100
        head = (await store.head()).token()
        r = await stack.read.get(f"/v1/users/{more[-1]}", headers={"X-Min-Position": head})
        assert r.status_code == 200
        reading = False
        await asyncio.gather(*readers)
        assert failures == [] and reads > 20
        assert await rows(pool) == set(ids) | set(more)
        # the projector carried on from the swapped-in schema
        later = await add_users(store, 3)
        head = (await store.head()).token()
        assert (
            await stack.read.get(f"/v1/users/{later[-1]}", headers={"X-Min-Position": head})
        ).status_code == 200
        statuses = {s.name: s for s in await projection_status(pool, store)}
        assert statuses[users_name].status == "live" and statuses[users_name].lag_events == 0
    finally:
        await pool.close()


async def test_two_rebuilds_of_one_projection_cannot_run_at_once(stack: Stack) -> None:
    assert stack.settings.database_url
    pool = make_pool(stack.settings.database_url, min_size=2, max_size=4)
    await pool.open()
    try:
        async with pool.connection() as conn:
            await conn.execute("SELECT pg_advisory_lock(hashtextextended('rebuild:users', 7233))")
            with pytest.raises(RebuildBusy):
                await rebuild_projection(pool, users)
            await conn.execute("SELECT pg_advisory_unlock(hashtextextended('rebuild:users', 7233))")
    finally:
        await pool.close()
