"""The projection runtime against a real database: effectively-once batches, and a runner
that nothing NATS hands it (repeats, gaps, reordering) can lead astray."""

from __future__ import annotations

import asyncio

import pytest
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool

from events.envelope import ORIGIN, Envelope, Position
from infra.settings import Settings
from infra.store import EventStore, RecordedEvent
from projections import feed, users
from projections.runner import ProjectionRunner
from projections.runtime import (
    PLANNER_SETTINGS,
    CheckpointMoved,
    apply_batch,
    create_schema,
    ensure_schema,
    live_schema,
    read_checkpoint,
)
from tests.fix_events import register_users

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def registered(store: EventStore, n: int) -> list[RecordedEvent]:
    """Register `n` more users; the whole log, once a commit-safe reader sees them all (a
    transaction elsewhere in the cluster may hold the horizon back for a moment)."""
    before = len(await store.read_all(ORIGIN, limit=10_000))
    await register_users(store, n)
    for _ in range(500):
        events = await store.read_all(ORIGIN, limit=10_000)
        if len(events) >= before + n:
            return events
        await asyncio.sleep(0.01)
    raise AssertionError("the appended events never became visible")


async def count_users(pool: AsyncConnectionPool) -> int:
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT count(*) FROM rm_users.users")).fetchone()
    assert row is not None
    return int(row[0])


async def test_a_batch_against_a_moved_checkpoint_applies_nothing(
    pool: AsyncConnectionPool,
) -> None:
    store = EventStore(pool, notify=False)
    events = await registered(store, 4)
    async with pool.connection() as conn:
        await ensure_schema(conn, users)
        schema = live_schema(users.name)
        await apply_batch(conn, users, schema, ORIGIN, events[:2], events[1].at)
        with pytest.raises(CheckpointMoved) as moved:
            await apply_batch(
                conn, users, schema, ORIGIN, events[:4], events[3].at
            )  # stale expectation
        assert moved.value.actual == events[1].at
        assert await read_checkpoint(conn, schema) == events[1].at
    assert await count_users(pool) == 2


async def test_a_batch_in_the_callers_transaction_commits_and_rolls_back_with_it(
    pool: AsyncConnectionPool,
) -> None:
    """A rebuild's last catch-up and its schema swap are one transaction: the batches it
    applies there must not commit it half way (nor leave the swap to autocommit)."""
    store = EventStore(pool, notify=False)
    events = await registered(store, 3)
    async with pool.connection() as conn:
        await ensure_schema(conn, users)
        schema = live_schema(users.name)
        before = await read_checkpoint(conn, schema)
        with pytest.raises(RuntimeError, match="the caller gives up"):
            async with conn.transaction():
                await apply_batch(conn, users, schema, before, events, events[-1].at)
                assert conn.info.transaction_status == TransactionStatus.INTRANS
                raise RuntimeError("the caller gives up")
        assert await read_checkpoint(conn, schema) == before
        assert await count_users(pool) == 0
        async with conn.transaction():
            await apply_batch(conn, users, schema, before, events, events[-1].at)
        assert await read_checkpoint(conn, schema) == events[-1].at
    assert await count_users(pool) == 3


def as_batch(events: list[RecordedEvent], prev: Position) -> list[tuple[Envelope, Position]]:
    out = []
    for e in events:
        out.append((e.envelope(), prev))
        prev = e.at
    return out


async def test_runner_skips_repeats_and_fills_gaps_from_the_store(
    settings: Settings, pool: AsyncConnectionPool
) -> None:
    store = EventStore(pool, notify=False)
    events = await registered(store, 10)
    runner = ProjectionRunner(settings, pool)
    await runner.start()
    await runner.handle(as_batch(events[:3], ORIGIN))
    assert runner.checkpoints[users.name] == events[2].at and await count_users(pool) == 3
    await runner.handle(as_batch(events[:3], ORIGIN))  # NATS redelivers: nothing changes
    assert await count_users(pool) == 3
    # NATS lost events 3..5: the next message names a predecessor we never saw; the store
    # fills the gap (and whatever else it has)
    await runner.handle(as_batch(events[6:8], events[5].at))
    assert runner.checkpoints[users.name] >= events[7].at and await count_users(pool) == 10
    more = (await registered(store, 3))[10:]
    # reordered: a later event first; the gap is filled from the store, the early one repeats
    await runner.handle([*as_batch(more[2:3], more[1].at), *as_batch(more[0:2], events[9].at)])
    assert runner.checkpoints[users.name] == more[2].at and await count_users(pool) == 13
    async with pool.connection() as conn:
        assert await read_checkpoint(conn, live_schema(users.name)) == more[2].at


@pytest.mark.parametrize("settings_on", [True, False])
async def test_batch_planner_settings_keep_a_plan_made_on_empty_tables_an_index_plan(
    pool: AsyncConnectionPool, settings_on: bool
) -> None:
    """Projection statements are prepared, so their plan may be made while a table is
    empty (a fresh schema, a rebuild) and kept while it grows. Made under the batch's
    planner settings, the feed's frame lookup is an index lookup; made without them, it
    reads the whole table (the control, which shows what the settings are for)."""
    schema = f"plan_{'on' if settings_on else 'off'}"
    statement = feed._statements(schema).insert.statement
    async with pool.connection() as conn:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )
        await create_schema(conn, feed, schema)
        text = statement.as_string(conn)
        for n in range(1, 8):
            text = text.replace("%b", f"${n}", 1)
        async with conn.transaction():
            await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            if settings_on:
                for name, value in PLANNER_SETTINGS:
                    await conn.execute("SELECT set_config(%s, %s, true)", (name, value))
            await conn.execute(f"PREPARE frames_plan AS {text}")
            cur = await conn.execute(
                "EXPLAIN EXECUTE frames_plan('{t}', '{p}', '{00000000-0000-0000-0000-000000000001}',"
                " '{n}', ARRAY['{}'::json], '{null}', '{null}')"
            )
            plan = "\n".join(row[0] for row in await cur.fetchall())
            await conn.execute("DEALLOCATE frames_plan")
    whole_table = "Seq Scan on frames" in plan
    assert whole_table is not settings_on, plan
